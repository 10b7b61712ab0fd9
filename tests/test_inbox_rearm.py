"""A lost inbox is re-armed in place. Renamed away, deleted, or replaced by another
folder, the inbox's watches follow the old folder (or nothing); the guard says so
(`inbox_lost`), keeps running, and as soon as a folder is at the inbox's path again
watches it and walks it (`inbox_rearmed`): a file in it is judged within seconds,
whether it was there before the re-arm or arrived after.

In-process with a stand-in model (plumbing); the same with the real daemon and the
real models is in test_watch_robust.py.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from structlog.testing import capture_logs

from facesieve.config import Config
from facesieve.daemon.guard import Guard
from facesieve.daemon.notify import Notifier
from facesieve.testing import NoFaces

BOUND = 15.0  # far below the reconcile_interval (3600 s here)


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.parametrize("how", ["renamed", "deleted"])
def test_a_lost_inbox_is_rearmed_when_a_folder_is_back_at_its_path(
    tmp_path: Path, how: str
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    quarantine = tmp_path / "quarantine"
    config = Config.model_validate(
        {
            "folders": {"inbox": str(inbox), "quarantine": str(quarantine)},
            "ledger": {"path": str(tmp_path / "state" / "ledger.sqlite3")},
            "watch": {"settle_seconds": 0, "stop_timeout": 10, "reconcile_interval": 3600},
        }
    )
    guard = Guard(config, notifier=Notifier.from_environment({}), make_analyzer=lambda c: NoFaces())
    seen: dict[str, Any] = {}

    def judged(name: str) -> Callable[[], bool]:
        return lambda: (quarantine / name).exists()

    def drive(events: list[dict[str, Any]]) -> None:
        def said(name: str) -> Callable[[], bool]:
            return lambda: any(e["event"] == name for e in events)

        try:
            assert wait_until(guard.worker.started.is_set, 60)
            Image.new("RGB", (32, 32), (1, 0, 0)).save(inbox / "first.png")
            assert wait_until(judged("first.png"), BOUND)
            if how == "renamed":
                os.rename(inbox, tmp_path / "elsewhere")
                inbox.mkdir()  # and a new, empty one in its place at once
            else:
                shutil.rmtree(inbox)
                assert wait_until(said("inbox_lost"), BOUND)
                seen["status"] = guard.status_line()
                inbox.mkdir()
                # there before the new observer runs: the walk of the re-armed inbox finds it
                Image.new("RGB", (32, 32), (2, 0, 0)).save(inbox / "early.png")
            assert wait_until(said("inbox_rearmed"), BOUND), "the inbox was never re-armed"
            Image.new("RGB", (32, 32), (3, 0, 0)).save(inbox / "later.png")
            seen["later"] = wait_until(judged("later.png"), BOUND)
            seen["early"] = how == "renamed" or wait_until(judged("early.png"), BOUND)
        except AssertionError as error:
            seen["failed"] = str(error)  # said by the test's own thread, below
        finally:
            guard.worker.stopping.set()  # as SIGTERM does; never a signal to a finished guard

    with capture_logs() as events:
        driver = threading.Thread(target=drive, args=(events,), name="test-driver")
        driver.start()
        code = guard.run()
    driver.join(30)

    assert "failed" not in seen, seen["failed"]
    assert code == 0
    assert seen["later"], f"later.png in the re-armed inbox was not judged within {BOUND} s"
    assert seen["early"], "early.png, there before the re-arm, was not judged"
    lost = [e for e in events if e["event"] == "inbox_lost"]
    assert len(lost) == 1
    names = [e["event"] for e in events]
    assert names.count("inbox_rearmed") == 1
    assert names.count("inbox_reopened") == 1  # the worker acts on the new folder, not the old
    reasons = [e["reason"] for e in events if e["event"] == "reconcile_requested"]
    assert "inbox re-armed" in reasons
    if how == "deleted":
        assert lost[0]["now"] == "missing"
        assert seen["status"].endswith(f"; inbox lost, waiting for {inbox}")
    assert not [e for e in events if e["event"] == "observer_died"]
