"""Stopping the Ray processes a scan started, even when the scan itself was killed.

`ray.init()` without an address starts a local cluster as children of the driver
(gcs_server, raylet, dashboard and runtime-env agents, the actors). `ray.shutdown()`
stops them, but a driver killed with SIGKILL runs no code, and some of them
(`ray::DashboardAgent`, `ray::RuntimeEnvAgent`) outlive it. Two layers handle that:

- A reaper process, started by the driver in a session of its own (so that a
  signal to the driver's process group does not reach it). Every half second it
  notes the driver's Ray descendants (pid and start time) in a state file. When the
  driver's end of its stdin pipe closes (however the driver ends), or the driver is
  gone, it stops every noted process still alive (SIGTERM, then SIGKILL), removes
  the state file, and exits.
- If the reaper was killed too, the next run finds the state file of a driver that
  is no longer alive and stops the processes it lists (`stop_stale`).

A process is only ever signalled if its pid *and* its start time match what was
noted, so a reused pid is never hit.

Run as `python -m facesieve.engines.reaper DRIVER_PID STATE_FILE`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import time
from pathlib import Path

__all__ = ["Noted", "descendants", "stop_noted", "stop_stale"]

Noted = dict[int, int]  # pid -> start time (clock ticks since boot, /proc/PID/stat field 22)

_INTERVAL = 0.5
_GRACE = 3.0


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, start time, state) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read()
    except OSError:
        return None
    fields = text[text.rindex(b")") + 2 :].split()
    return int(fields[1]), int(fields[19]), fields[0].decode()


def _is_ray(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            command = handle.read()
    except OSError:
        return False
    return b"ray::" in command or b"/ray/" in command


def descendants(root: int) -> Noted:
    """Every Ray process below `root` (pid -> start time)."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        info = _stat(int(entry))
        if info is not None:
            parents.setdefault(info[0], []).append(int(entry))
            starts[int(entry)] = info[1]
    found: Noted = {}
    stack = list(parents.get(root, []))
    while stack:
        pid = stack.pop()
        stack.extend(parents.get(pid, []))
        if _is_ray(pid):
            found[pid] = starts[pid]
    return found


def _alive(pid: int, start: int) -> bool:
    info = _stat(pid)
    return info is not None and info[1] == start and info[2] != "Z"


def stop_noted(noted: Noted) -> list[int]:
    """SIGTERM every noted process still alive, SIGKILL what is left; the pids signalled."""
    alive = [pid for pid, start in noted.items() if _alive(pid, start)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _GRACE
    while time.monotonic() < deadline and any(_alive(p, noted[p]) for p in alive):
        time.sleep(0.1)
    for pid in alive:
        if _alive(pid, noted[pid]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return alive


def _write_state(state: Path, driver: int, driver_start: int, noted: Noted) -> None:
    temporary = state.with_name(state.name + ".tmp")
    temporary.write_text(
        json.dumps({"driver": driver, "driver_start": driver_start, "processes": noted})
    )
    os.replace(temporary, state)


def _read_state(state: Path) -> tuple[int, int, Noted] | None:
    try:
        data = json.loads(state.read_text())
        noted = {int(pid): int(start) for pid, start in data["processes"].items()}
        return int(data["driver"]), int(data["driver_start"]), noted
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stop_stale(state: Path) -> list[int]:
    """Stop the Ray processes of an earlier run whose driver and reaper both died.

    Does nothing while that run's driver is alive (it may be a concurrent scan).
    Returns the pids it signalled.
    """
    found = _read_state(state)
    if found is None:
        return []
    driver, driver_start, noted = found
    if _alive(driver, driver_start):
        return []
    stopped = stop_noted(noted)
    with contextlib.suppress(FileNotFoundError):
        state.unlink()
    return stopped


def run(driver: int, state: Path) -> None:
    """Note the driver's Ray processes until its pipe closes, then stop them."""
    info = _stat(driver)
    if info is None:
        return
    driver_start = info[1]
    noted: Noted = {}
    fd = sys.stdin.fileno()
    while True:
        noted.update(descendants(driver))
        _write_state(state, driver, driver_start, noted)
        ready, _, _ = select.select([fd], [], [], _INTERVAL)
        if ready and not os.read(fd, 4096):
            break  # EOF: the driver ended, cleanly or not
        if not _alive(driver, driver_start):
            break  # gone, even if a copy of its pipe's end lives on somewhere
    noted.update(descendants(driver))
    stop_noted(noted)
    with contextlib.suppress(FileNotFoundError):
        state.unlink()


if __name__ == "__main__":  # pragma: no cover - run by ray_engine as a subprocess
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    run(int(sys.argv[1]), Path(sys.argv[2]))
