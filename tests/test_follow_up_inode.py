"""A person's move, a restore and an undo name the inode they move; a recovery that
finishes one under its mover's feet never leaves the file without a name (issue 16).

The interleaving is made exactly: `os.link` is hooked so that right after a
mover's link into place (the file has two names), a scan's recovery runs on the
same inbox, with the mover's row aged past the guard (a mover stopped that long).
The recovery finishes the move and unlinks the source; the mover, resumed, must
then keep its link, the file's only name, instead of taking it back.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from facesieve.acting import moves
from facesieve.config import Config, ResolvedFolders
from facesieve.engines.local import Engine
from facesieve.ledger.store import Ledger, LedgerRow
from facesieve.people.desk import Label, give_verdict, undo

from .safe_attacks import OTHER_FS, other_fs_available, patched
from .test_restore import NoModels, cli, judged, setup


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@contextlib.contextmanager
def right_after_the_link(strike: Callable[[], None]) -> Iterator[list[int]]:
    """Run `strike()` once, right after a mover's link() into place succeeded."""
    real = os.link
    struck: list[int] = []

    def hooked(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        if not struck:
            struck.append(1)
            strike()

    with patched(moves.os, "link", hooked):
        yield struck


class ScanStarting:
    """What a scan (or watch) starting on the same inbox does: recover pending rows.

    It first ages every pending row past the guard, as if the mover had been
    stopped for minutes, and records each one's inode and the inode at its source.
    """

    def __init__(self, folders: ResolvedFolders, config: Config | None = None) -> None:
        self.folders = folders
        self.config = config or Config()
        self.seen: list[tuple[int | None, int | None, int]] = []

    def __call__(self) -> None:
        stamp = (datetime.now(UTC) - timedelta(minutes=5)).isoformat(timespec="milliseconds")
        with sqlite3.connect(self.folders.ledger) as db:
            db.execute("UPDATE decisions SET decided_at = ? WHERE state = 'pending'", (stamp,))
        with Ledger(self.folders.ledger, exclusive=True) as ledger:
            for row in ledger.pending():
                source = os.stat(row.path, follow_symlinks=False)
                self.seen.append((row.dev, row.ino, source.st_ino))
            engine = Engine(self.config, NoModels(), folders=self.folders, ledger=ledger)  # type: ignore[arg-type]
            assert engine.recover() == 1
            engine.close()


def names_of(folders: ResolvedFolders, data: bytes) -> list[Path]:
    """Every name under the inbox (review and quarantine included) holding `data`."""
    digest = hashlib.sha256(data).hexdigest()
    return [
        path
        for path in folders.root.rglob("*")
        if path.is_file()
        and "ledger" not in path.name
        and hashlib.sha256(path.read_bytes()).hexdigest() == digest
    ]


def act(
    kind: str, ledger: Ledger, folders: ResolvedFolders, capsys: pytest.CaptureFixture[str]
) -> Callable[[], Any]:
    """The person's move of one kind, on a fresh file; returns it to be run."""
    if kind == "restore":
        decision = judged(ledger, folders, "x.jpg")  # quarantined
        return lambda: cli(capsys, "restore", str(folders.root), "--id", str(decision.id))
    decision = judged(ledger, folders, "x.jpg", "review")
    if kind == "keep":
        return lambda: give_verdict(ledger, Config(), decision.id, Label.KEEP, "ana")
    if kind == "reject":
        return lambda: give_verdict(ledger, Config(), decision.id, Label.REJECT, "ana")
    verdict = give_verdict(ledger, Config(), decision.id, Label.REJECT, "ana")
    return lambda: undo(ledger, verdict.verdict_id, "bo")


def follow_up(ledger: Ledger) -> LedgerRow:
    return [row for row in ledger.rows() if row.ref is not None][-1]


@pytest.mark.parametrize("kind", ["keep", "reject", "restore", "undo"])
def test_a_recovery_between_a_movers_link_and_its_check_leaves_the_file_one_name(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folders, ledger = setup(tmp_path)
    run = act(kind, ledger, folders, capsys)
    data = b"bytes of x.jpg"
    scan = ScanStarting(folders)

    with right_after_the_link(scan) as struck:
        run()

    assert struck == [1]
    # The pending row named the inode it moved, the one at its source.
    ((dev, ino, at_source),) = scan.seen
    assert dev is not None and ino == at_source
    # The file has exactly one name, with its bytes, and the ledger says where.
    (where,) = names_of(folders, data)
    assert os.stat(where).st_nlink == 1
    row = follow_up(ledger)
    assert (row.state, row.destination) == ("done", str(where))
    ledger.close()


def test_the_same_interleaving_across_filesystems_keeps_the_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Quarantine on another filesystem: the mover's last link is its copy's; a
    recovery then unlinks the source, and the copy must stay, the file's one name."""
    if not other_fs_available(tmp_path):
        pytest.skip(f"no second filesystem at {OTHER_FS} for the quarantine")
    outside = OTHER_FS / f"facesieve-follow-up-{os.getpid()}-{tmp_path.name}"
    config = Config.model_validate({"folders": {"quarantine": str(outside / "quarantine")}})
    folders, ledger = setup(tmp_path)
    folders = config.resolve_folders(folders.root)
    try:
        decision = judged(ledger, folders, "x.jpg", "review", config=config)
        scan = ScanStarting(folders, config)
        with right_after_the_link(scan) as struck:
            done = give_verdict(ledger, config, decision.id, Label.REJECT, "ana")
        assert struck == [1]
        assert done.where == outside / "quarantine" / "x.jpg"
        assert done.where.read_bytes() == b"bytes of x.jpg" and done.where.stat().st_nlink == 1
        assert names_of(folders, b"bytes of x.jpg") == []  # nothing left in the inbox
        row = follow_up(ledger)
        assert (row.state, row.destination) == ("done", str(done.where))
    finally:
        ledger.close()
        for path in sorted(outside.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        outside.rmdir()
