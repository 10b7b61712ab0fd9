"""Engines: how `scan` carries files to judges and judgements back. One contract (`base`:
the prefilter, the applier's rules, the retry of deferred files) for every engine:
in-process (`local`), a pool of processes (`pool`), a Ray cluster (`ray`, with its
`reaper`); `scanning` picks the one a scan uses."""
