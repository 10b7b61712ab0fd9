"""`restore` in a folder others write (issue 18): only its own partials, folders as they were.

A `<name>.facesieve-partial` beside the restored name is someone's file unless
an earlier restore of this very file (a ledger row of its own) was cut short and
it is facesieve's own; anyone else's is left alone and logged. A folder the
restore re-creates gets the owner, group and mode of the folder it is made in,
not root's 0750, which would shut its owner out.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from facesieve.cli.main import main
from facesieve.config import load_config
from facesieve.ledger.store import Ledger

from .safe_attacks import OTHER_FS, UPLOADER, other_fs_available
from .test_restore import judged, set_moved_at, setup

PARTIAL = ".facesieve-partial"


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """`main` points the logs at this test's captured stderr, which closes after it."""
    yield
    structlog.reset_defaults()


def _restore_all(
    capsys: pytest.CaptureFixture[str], root: Path, config: Path | None = None
) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
    args = ["restore", str(root), "--all", "--json"]
    if config is not None:
        args += ["--config", str(config)]
    code = main(args)
    captured = capsys.readouterr()
    results = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    events = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    return code, results, events


def _someones(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if os.geteuid() == 0:
        os.chown(path, UPLOADER, UPLOADER)


def test_a_partial_name_someone_else_holds_is_never_deleted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folders, ledger = setup(tmp_path)
    decision = judged(ledger, folders, "photo.jpg")
    ledger.close()
    planted = folders.root / f"photo.jpg{PARTIAL}"
    _someones(planted, b"an uploader's own file with that name")

    code, results, events = _restore_all(capsys, folders.root)

    assert (code, [(r["id"], r["result"]) for r in results]) == (0, [(decision.id, "restored")])
    assert (folders.root / "photo.jpg").read_bytes() == b"bytes of photo.jpg"
    assert planted.read_bytes() == b"an uploader's own file with that name"
    left = [e for e in events if e["event"] == "partial_left_alone"]
    assert [(e["path"], e["reason"]) for e in left] == [
        (str(planted), "no restore of this file was cut short")
    ]


@pytest.fixture
def across(tmp_path: Path) -> Iterator[Path]:
    """A quarantine on another filesystem: a restore copies into the inbox."""
    if not other_fs_available(tmp_path):
        pytest.skip("no second filesystem at /dev/shm for the quarantine")
    quarantine = OTHER_FS / f"facesieve-rq-{os.getpid()}-{time.time_ns()}"
    yield quarantine
    shutil.rmtree(quarantine, ignore_errors=True)


def test_a_copy_back_across_filesystems_leaves_someones_partial_and_fails(
    tmp_path: Path, across: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = tmp_path / "c.toml"
    config.write_text(f'[folders]\ninbox = "{inbox}"\nquarantine = "{across}"\n')
    folders = load_config(config).resolve_folders(inbox)
    with Ledger(folders.ledger) as ledger:
        decision = judged(ledger, folders, "photo.jpg")
    assert decision.destination is not None and Path(decision.destination).is_relative_to(across)
    planted = inbox / f"photo.jpg{PARTIAL}"
    _someones(planted, b"not facesieve's")

    code, results, events = _restore_all(capsys, inbox, config)

    assert code == 1 and results[0]["result"] == "error"
    assert "left alone" in results[0]["message"]
    assert planted.read_bytes() == b"not facesieve's"
    assert Path(decision.destination).read_bytes() == b"bytes of photo.jpg"  # still there
    assert not (inbox / "photo.jpg").exists()
    assert any(e["event"] == "restore_failed" for e in events)

    # Once that file is gone, the same restore copies it back.
    planted.unlink()
    code, results, _ = _restore_all(capsys, inbox, config)
    assert (code, results[0]["result"]) == (0, "restored")
    assert (inbox / "photo.jpg").read_bytes() == b"bytes of photo.jpg"
    assert not planted.exists()


def test_a_partial_its_own_cut_short_restore_left_is_removed(
    tmp_path: Path, across: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = tmp_path / "c.toml"
    config.write_text(f'[folders]\ninbox = "{inbox}"\nquarantine = "{across}"\n')
    folders = load_config(config).resolve_folders(inbox)
    with Ledger(folders.ledger) as ledger:
        decision = judged(ledger, folders, "photo.jpg")
        # Killed half-way through the copy back: a pending row, a partial of facesieve's.
        cut = ledger.begin_restore(decision)
    set_moved_at(folders.ledger, cut, datetime.now(UTC) - timedelta(minutes=2))
    partial = inbox / f"photo.jpg{PARTIAL}"
    partial.write_bytes(b"bytes of ph")
    partial.chmod(0o600)

    code, results, events = _restore_all(capsys, inbox, config)

    assert (code, results[0]["result"]) == (0, "restored")
    assert (inbox / "photo.jpg").read_bytes() == b"bytes of photo.jpg"
    assert not partial.exists()
    assert [e["path"] for e in events if e["event"] == "partial_removed"] == [str(partial)]


@pytest.mark.skipif(os.geteuid() != 0, reason="owners other than facesieve's need root")
@pytest.mark.parametrize("mode", [0o770, 0o2750])
def test_a_folder_restore_re_creates_is_its_parents_not_roots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: int
) -> None:
    """The inbox is the uploader's and their group's: the folders put back are too."""
    folders, ledger = setup(tmp_path)
    os.chown(folders.root, UPLOADER, UPLOADER + 1)
    folders.root.chmod(mode)
    decision = judged(ledger, folders, "a/b/photo.jpg")
    ledger.close()
    shutil.rmtree(folders.root / "a")  # the folders it came from are gone

    code, results, _ = _restore_all(capsys, folders.root)

    assert (code, [(r["id"], r["result"]) for r in results]) == (0, [(decision.id, "restored")])
    for folder in (folders.root / "a", folders.root / "a" / "b"):
        info = folder.stat()
        assert (info.st_uid, info.st_gid, oct(info.st_mode & 0o7777)) == (
            UPLOADER,
            UPLOADER + 1,
            oct(mode),
        ), folder
    assert (folders.root / "a/b/photo.jpg").read_bytes() == b"bytes of a/b/photo.jpg"
