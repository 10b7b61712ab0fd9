"""One recovery of a pending row, the same for every caller (issue 16).

A scan or a watch starting, `approve` / `reject` (the people's desk) and `restore`
all find rows a crash (or a move still in flight) left pending. They recover them
through `acting.recovery` alone, with one age guard: a restore, a person's verdict
or an undo younger than a minute may be another process's move half-way, and
nobody takes it over.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog

from facesieve.config import Config, ResolvedFolders
from facesieve.engines.local import Engine
from facesieve.ledger.store import Ledger, LedgerRow

from .test_restore import NoModels, cli, judged, setup


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def age(ledger_path: Path, row_id: int, minutes: float) -> None:
    """Pretend a row was written `minutes` ago."""
    stamp = (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat(timespec="milliseconds")
    with sqlite3.connect(ledger_path) as db:
        db.execute("UPDATE decisions SET decided_at = ? WHERE id = ?", (stamp, row_id))


def begin_keep(ledger: Ledger, decision: LedgerRow) -> int:
    """A person's "keep" of a file in review, recorded as `desk.settle` records it."""
    _, row_id = ledger.begin_human(
        decision.id,
        who="ana",
        label="keep",
        verdict="keep",
        action="keep",
        destination=Path(decision.path),
        policy="test",
        check=lambda _: None,
    )
    return row_id


def two_moves_half_way(tmp_path: Path) -> tuple[ResolvedFolders, dict[str, int], list[Path]]:
    """A restore and a person's "keep", each stopped right after its link into place:
    the file has two names, the rows are pending. Returns the row ids and the sources."""
    folders, ledger = setup(tmp_path)
    quarantined = judged(ledger, folders, "q.jpg")
    in_review = judged(ledger, folders, "r.jpg", "review")
    assert quarantined.destination is not None and in_review.destination is not None
    rows = {"restore": ledger.begin_restore(quarantined), "keep": begin_keep(ledger, in_review)}
    os.link(quarantined.destination, quarantined.path)
    os.link(in_review.destination, in_review.path)
    ledger.close()
    return folders, rows, [Path(quarantined.destination), Path(in_review.destination)]


def by_scan(folders: ResolvedFolders, capsys: pytest.CaptureFixture[str]) -> None:
    with Ledger(folders.ledger, exclusive=True) as ledger:
        engine = Engine(Config(), NoModels(), folders=folders, ledger=ledger)  # type: ignore[arg-type]
        engine.recover()
        engine.close()


def by_desk(folders: ResolvedFolders, capsys: pytest.CaptureFixture[str]) -> None:
    cli(capsys, "approve", str(folders.root), "--id", "999")  # recovers first, then refuses


def by_restore(folders: ResolvedFolders, capsys: pytest.CaptureFixture[str]) -> None:
    cli(capsys, "restore", str(folders.root), "--id", "1")  # the quarantined file's decision


CALLERS: dict[str, Callable[[ResolvedFolders, pytest.CaptureFixture[str]], None]] = {
    "scan": by_scan,
    "desk": by_desk,
    "restore": by_restore,
}


def states(folders: ResolvedFolders, rows: dict[str, int]) -> dict[str, str]:
    with Ledger(folders.ledger) as ledger:
        found = {name: ledger.get(row_id) for name, row_id in rows.items()}
    return {name: row.state for name, row in found.items() if row is not None}


@pytest.mark.parametrize("caller", list(CALLERS))
def test_a_young_pending_row_is_never_taken_over(
    tmp_path: Path, caller: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folders, rows, sources = two_moves_half_way(tmp_path)

    CALLERS[caller](folders, capsys)

    # Both movers may still be running: their rows and both names stay as they were.
    assert states(folders, rows) == {"restore": "pending", "keep": "pending"}
    for source in sources:
        assert source.exists() and os.stat(source).st_nlink == 2


@pytest.mark.parametrize("caller", list(CALLERS))
def test_an_old_pending_row_is_recovered_by_every_caller(
    tmp_path: Path, caller: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folders, rows, sources = two_moves_half_way(tmp_path)
    for row_id in rows.values():
        age(folders.ledger, row_id, 2)

    CALLERS[caller](folders, capsys)

    assert states(folders, rows) == {"restore": "done", "keep": "done"}
    for name in ("q.jpg", "r.jpg"):
        back = folders.root / name
        assert back.read_bytes() == f"bytes of {name}".encode()
        assert os.stat(back).st_nlink == 1
    assert not any(source.exists() for source in sources)
