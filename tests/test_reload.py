"""SIGHUP in-process, with the real models: a reloaded policy reaches the models too."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from facesieve.config import load_config
from facesieve.daemon.guard import Guard
from facesieve.daemon.notify import Notifier

from .conftest import DATA, labelled

pytestmark = [pytest.mark.models, pytest.mark.data]


def test_a_reloaded_policy_sets_the_models_floors(tmp_path: Path, deepface_home: Path) -> None:
    labelled("fairface")
    photo = DATA / "fairface" / "fairface_0010.jpg"  # one clear face, about 150 px wide
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config_path = tmp_path / "facesieve.toml"

    def write_config(min_face_size: int) -> None:
        config_path.write_text(
            f'[folders]\ninbox = "{inbox}"\n[policy]\nmin_face_size = {min_face_size}\n'
            "[watch]\nsettle_seconds = 0\nstop_timeout = 30\n"
        )

    # At start, faces must be 400 px: the detector sees the photo shrunk 20-fold.
    write_config(400)
    guard = Guard(
        load_config(config_path), config_path=config_path, notifier=Notifier.from_environment({})
    )
    events: list[dict[str, Any]] = []
    failures: list[str] = []

    def wait_for(name: str, count: int = 1, timeout: float = 180) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in list(events) if e["event"] == name]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        failures.append(f"no {count} {name} events in {timeout} s")
        return []

    def arrive(name: str) -> None:
        # Complete before it lands (a rename), as an uploader should; a copy whose mtime
        # is set after the close would be "changed while judged" and wait for a pass.
        staged = tmp_path / name
        shutil.copy2(photo, staged)
        staged.rename(inbox / name)

    def drive() -> None:
        try:
            if not wait_for("ready"):
                return
            arrive("before.jpg")
            if not wait_for("decision"):
                return
            write_config(20)
            os.kill(os.getpid(), signal.SIGHUP)
            if not wait_for("reloaded"):
                return
            arrive("after.jpg")
            wait_for("decision", 2)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    driver = threading.Thread(target=drive)
    with capture_logs() as captured:
        events = captured
        driver.start()
        code = guard.run()
    driver.join(30)

    assert failures == [] and code == 0
    decisions = {Path(e["path"]).name: e for e in events if e["event"] == "decision"}
    assert decisions["before.jpg"]["verdict"] == "reject"
    # The reloaded policy asks for faces of 20 px: the models must look for them too,
    # not keep the 400 px floor they were loaded with.
    assert decisions["after.jpg"]["verdict"] == "keep", decisions["after.jpg"]
    assert decisions["after.jpg"]["reason"] == "1 face found"
