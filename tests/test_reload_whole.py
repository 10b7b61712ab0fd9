"""SIGHUP applies everything it says it applies, to the real daemon (`facesieve watch DIR`).

- `[logging]` is re-applied (level and format);
- `[actions] mode` reaches the moves (the widest bits a copy across filesystems gets);
- `watch DIR` compares like with like: DIR overrides `[folders] inbox` in the
  reloaded file too, so an unchanged file reloads without `reload_partial`.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import DATA
from .daemon_util import Daemon

pytestmark = [pytest.mark.models, pytest.mark.data]

NO_FACE = DATA / "noface" / "cat.4001.jpg"


def _config(path: Path, *sections: str) -> Path:
    # No [folders]: the inbox is the DIR on the command line.
    path.write_text("[watch]\nsettle_seconds = 0\nstop_timeout = 30\n" + "".join(sections))
    return path


def _arrive(tmp_path: Path, inbox: Path, name: str, mode: int = 0o644) -> None:
    staged = tmp_path / name
    shutil.copyfile(NO_FACE, staged)
    os.chmod(staged, mode)
    staged.rename(inbox / name)  # complete before it lands


def _wait_for_file(path: Path, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return path
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear in {timeout} s")


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    if not NO_FACE.is_file():
        pytest.skip(f"{NO_FACE} not found (../shared/data is not here)")
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


def test_an_unchanged_file_reloads_without_a_partial_reload_under_watch_dir(
    tmp_path: Path, inbox: Path
) -> None:
    config = _config(tmp_path / "facesieve.toml")
    daemon = Daemon(config, tmp_path / "daemon.log", args=(str(inbox),)).start()
    try:
        daemon.wait_for("ready")
        daemon.signal(signal.SIGHUP)
        daemon.wait_for("reloaded")
        assert daemon.events("reload_partial") == []
        # A section that does need a restart is still said so, alone.
        _config(config, "[images]\nmax_pixels = 1000000\n")
        daemon.signal(signal.SIGHUP)
        daemon.wait_for("reloaded", 2)
        partial = daemon.events("reload_partial")
        assert [e["restart_needed_for"] for e in partial] == [["images"]]
    finally:
        assert daemon.stop() == 0


def test_a_reload_re_applies_logging(tmp_path: Path, inbox: Path) -> None:
    config = _config(tmp_path / "facesieve.toml", '[logging]\nlevel = "warning"\nformat = "json"\n')
    daemon = Daemon(config, tmp_path / "daemon.log", args=(str(inbox),)).start()
    try:
        # At warning, not even `ready` is logged: the ledger tells the daemon is up.
        _wait_for_file(inbox / ".facesieve" / "ledger.sqlite3")
        _arrive(tmp_path, inbox, "quiet.jpg")
        _wait_for_file(inbox / ".facesieve" / "quarantine" / "quiet.jpg")
        assert daemon.events("decision") == []
        _config(config, '[logging]\nlevel = "info"\nformat = "json"\n')
        daemon.signal(signal.SIGHUP)
        (reloaded,) = daemon.wait_for("reloaded", timeout=30)
        assert reloaded["logging"] == {"level": "info", "format": "json"}
        _arrive(tmp_path, inbox, "heard.jpg")
        (decision,) = daemon.wait_for("decision")
        assert Path(decision["path"]).name == "heard.jpg"
    finally:
        assert daemon.stop() == 0


@pytest.fixture
def other_filesystem() -> Iterator[Path]:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(Path.cwd()).st_dev:
        pytest.skip("no second filesystem (/dev/shm) to move across")
    folder = shm / f"facesieve-test-{uuid.uuid4().hex}"
    folder.mkdir(mode=0o750)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_reloaded_actions_mode_reaches_the_moves(
    tmp_path: Path, inbox: Path, other_filesystem: Path
) -> None:
    if os.stat(tmp_path).st_dev == os.stat(other_filesystem).st_dev:
        pytest.skip("the test folder is on /dev/shm already")
    quarantine = other_filesystem / "quarantine"
    folders = f'[folders]\nquarantine = "{quarantine}"\n'
    config = _config(tmp_path / "facesieve.toml", folders, "[actions]\nmode = 0o600\n")
    daemon = Daemon(config, tmp_path / "daemon.log", args=(str(inbox),)).start()
    try:
        daemon.wait_for("ready")
        _arrive(tmp_path, inbox, "before.jpg")
        before = _wait_for_file(quarantine / "before.jpg")
        _config(config, folders, "[actions]\nmode = 0o640\n")
        daemon.signal(signal.SIGHUP)
        daemon.wait_for("reloaded")
        _arrive(tmp_path, inbox, "after.jpg")
        after = _wait_for_file(quarantine / "after.jpg")
        daemon.wait_for("decision", 2)
    finally:
        assert daemon.stop() == 0
    assert before.stat().st_mode & 0o777 == 0o600
    assert after.stat().st_mode & 0o777 == 0o640
