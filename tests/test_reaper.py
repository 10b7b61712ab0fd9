"""The reaper: the Ray processes of a driver killed outright are stopped, and only those.

Stand-in processes named like Ray's (`/ray/...` in the command line) take the place of
a cluster here; tests/test_engines.py kills a real driver with a real cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from facesieve.engines.reaper import descendants, stop_stale

# A "driver" that starts one Ray-like child and one ordinary child, prints their pids
# and waits to be killed.
_DRIVER = """
import subprocess, sys, time
ray_like = subprocess.Popen(["bash", "-c", "exec -a /ray/fake-raylet sleep 120"])
plain = subprocess.Popen(["sleep", "120"])
print(ray_like.pid, plain.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    return not _alive(pid)


def test_a_killed_driver_s_ray_processes_are_stopped_by_its_reaper(tmp_path: Path) -> None:
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER], stdout=subprocess.PIPE, text=True)
    assert driver.stdout is not None
    ray_like, plain = (int(pid) for pid in driver.stdout.readline().split())
    state = tmp_path / "ray-cluster-1.json"
    reaper = subprocess.Popen(
        [sys.executable, "-m", "facesieve.engines.reaper", str(driver.pid), str(state)],
        stdin=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not state.exists():
            time.sleep(0.1)
        assert descendants(driver.pid).keys() == {ray_like}
        time.sleep(0.6)
        noted = json.loads(state.read_text())["processes"]
        assert list(noted) == [str(ray_like)]
        # SIGKILL: the driver runs no code; its end of the reaper's pipe closes.
        driver.kill()
        driver.wait()
        # (The test holds the pipe's other end: the reaper goes by the driver's death.)
        assert reaper.wait(timeout=30) == 0
        assert _wait_gone(ray_like)
        assert _alive(plain), "only Ray's processes are the reaper's business"
        assert not state.exists()
    finally:
        for pid in (ray_like, plain):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        driver.kill()
        driver.wait()
        driver.stdout.close()
        reaper.kill()
        reaper.wait()
        if reaper.stdin is not None:
            reaper.stdin.close()


def test_the_next_run_stops_what_a_dead_driver_and_reaper_left(tmp_path: Path) -> None:
    leftover = subprocess.Popen(["sleep", "120"])
    with open(f"/proc/{leftover.pid}/stat") as handle:
        start = int(handle.read().rsplit(")", 1)[1].split()[19])
    gone = subprocess.Popen(["true"])
    gone.wait()
    state = tmp_path / "ray-cluster-9.json"
    try:
        # A live driver's processes are not touched (it may be a concurrent scan).
        with open(f"/proc/{os.getpid()}/stat") as handle:
            me = int(handle.read().rsplit(")", 1)[1].split()[19])
        state.write_text(
            json.dumps(
                {"driver": os.getpid(), "driver_start": me, "processes": {leftover.pid: start}}
            )
        )
        assert stop_stale(state) == []
        assert _alive(leftover.pid) and state.exists()
        # A pid noted with another start time is someone else now: never signalled.
        state.write_text(
            json.dumps(
                {"driver": gone.pid, "driver_start": 1, "processes": {leftover.pid: start + 1}}
            )
        )
        assert stop_stale(state) == []
        assert _alive(leftover.pid)
        # The dead driver's own leftover is stopped, and the state file goes.
        state.write_text(
            json.dumps({"driver": gone.pid, "driver_start": 1, "processes": {leftover.pid: start}})
        )
        assert stop_stale(state) == [leftover.pid]
        leftover.wait(timeout=10)
        assert not state.exists()
    finally:
        leftover.kill()
        leftover.wait()
