"""Engines: how `scan` carries files to judges and judgements back. In-process (`local`),
a pool of processes (`pool`), a Ray cluster (`ray`, with its `reaper`); `scanning` drives
whichever one a scan uses."""
