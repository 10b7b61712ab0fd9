"""Synchronisation for tests: poll a condition with a deadline, never a bare sleep; and
what /proc says a process is doing (its CPU time, its decoder child)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

_TICKS = os.sysconf("SC_CLK_TCK")


def wait_for(condition: Callable[[], object], timeout: float, every: float = 0.05) -> bool:
    """True as soon as `condition()` is true; False once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used (0.0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def decoder_children(pid: int) -> list[int]:
    """The decoder child processes (`facesieve.judging.decoder` serve) below `pid`."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    found = []
    for child in parents:
        ancestor = parents.get(child)
        while ancestor not in (None, 0, 1, pid):
            ancestor = parents.get(ancestor)  # type: ignore[arg-type]
        if ancestor != pid:
            continue
        try:
            with open(f"/proc/{child}/cmdline", "rb") as handle:
                command = handle.read()
        except OSError:
            continue
        if b"facesieve.judging.decoder import serve" in command:
            found.append(child)
    return found
