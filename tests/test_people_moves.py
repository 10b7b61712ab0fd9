"""A person's verdict moves the file as the engine does (issue 16): through the held
folders (`Places`), with `[actions] mode`, only the file in review that still holds
the judged bytes, and a delete a crash cut short is recovered by inode, not by name.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from facesieve.acting import moves
from facesieve.config import Config
from facesieve.errors import AlreadyHasVerdictError
from facesieve.people.desk import Label, give_verdict

from .safe_attacks import OTHER_FS, other_fs_available, patched
from .test_restore import MTIME_NS, cli, judged, setup


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_a_quarantine_copy_across_filesystems_gets_actions_mode(tmp_path: Path) -> None:
    if not other_fs_available(tmp_path):
        pytest.skip(f"no second filesystem at {OTHER_FS} for the quarantine")
    quarantine = OTHER_FS / f"facesieve-people-{os.getpid()}-{tmp_path.name}" / "quarantine"
    config = Config.model_validate(
        {"folders": {"quarantine": str(quarantine)}, "actions": {"mode": 0o600}}
    )
    folders, ledger = setup(tmp_path)
    folders = config.resolve_folders(folders.root)
    try:
        unsure = judged(ledger, folders, "unsure.jpg", "review", mode=0o644, config=config)
        done = give_verdict(ledger, config, unsure.id, Label.REJECT, "ana")
        assert done.where == quarantine / "unsure.jpg"
        assert done.where.read_bytes() == b"bytes of unsure.jpg"
        assert stat.S_IMODE(done.where.stat().st_mode) == 0o600  # [actions] mode, not 0640
    finally:
        ledger.close()
        for path in sorted(quarantine.parent.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        quarantine.parent.rmdir()


@pytest.mark.parametrize("label", [Label.KEEP, Label.REJECT, "delete"])
def test_a_file_swapped_in_review_is_neither_moved_nor_deleted(
    tmp_path: Path, label: Label | str
) -> None:
    config = (
        Config.model_validate({"actions": {"reject": "delete"}}) if label == "delete" else Config()
    )
    folders, ledger = setup(tmp_path)
    unsure = judged(ledger, folders, "x.jpg", "review")
    assert unsure.destination is not None
    waiting = Path(unsure.destination)
    # Other bytes of the same size, the mtime set back: size + mtime cannot tell.
    swapped = waiting.with_name("swap")
    swapped.write_bytes(b"BYTES OF X.JPG")
    assert swapped.stat().st_size == waiting.stat().st_size
    os.utime(swapped, ns=(MTIME_NS, MTIME_NS))
    swapped.rename(waiting)

    with pytest.raises(AlreadyHasVerdictError, match="changed since it was judged"):
        give_verdict(
            ledger, config, unsure.id, Label.REJECT if label == "delete" else Label(label), "ana"
        )

    assert waiting.read_bytes() == b"BYTES OF X.JPG"  # left where it was
    assert not Path(unsure.path).exists()
    assert not folders.quarantine.exists() or not any(folders.quarantine.iterdir())
    assert [r.id for r in ledger.rows()] == [unsure.id]  # no verdict recorded
    ledger.close()


class Killed(BaseException):
    """The process dies here: nothing after it runs, no handler sees it."""


def test_a_delete_cut_short_is_recovered_by_inode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = Config.model_validate({"actions": {"reject": "delete"}})
    folders, ledger = setup(tmp_path)
    unsure = judged(ledger, folders, "x.jpg", "review")
    assert unsure.destination is not None
    real = os.unlink

    def killed_after(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        raise Killed

    with patched(moves.os, "unlink", killed_after), pytest.raises(Killed):
        give_verdict(ledger, config, unsure.id, Label.REJECT, "ana")
    ledger.close()
    # The deleted file's name holds another file now (a later decision's, say).
    Path(unsure.destination).write_bytes(b"another file")
    stamp = (datetime.now(UTC) - timedelta(minutes=5)).isoformat(timespec="milliseconds")
    with sqlite3.connect(folders.ledger) as db:
        db.execute("UPDATE decisions SET decided_at = ? WHERE state = 'pending'", (stamp,))

    cli(capsys, "reject", str(folders.root), "--id", "999")  # recovers first

    with sqlite3.connect(folders.ledger) as db:
        states = dict(db.execute("SELECT id, state FROM decisions WHERE who IS NOT NULL"))
    assert list(states.values()) == ["done"]  # the delete happened: that inode is gone
    assert Path(unsure.destination).read_bytes() == b"another file"
