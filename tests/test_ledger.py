"""The ledger: pending before the action, done after, in WAL mode."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from facesieve.ledger import Ledger


def record(ledger: Ledger, path: Path) -> int:
    return ledger.begin(
        path=path,
        root=path.parent,
        size=10,
        mtime_ns=5,
        mode=0o100644,
        sha256="ab" * 32,
        faces=[
            {"box": [1, 2, 3, 4], "confidence": 0.99, "gender": "man", "gender_confidence": 0.9}
        ],
        verdict="reject",
        reason="no face found",
        action="quarantine",
        destination=path.parent / "q" / path.name,
        models={"detector": "mtcnn", "gender": "bundled"},
        elapsed_ms=12.5,
    )


def test_pending_then_done(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        row_id = record(ledger, tmp_path / "a.jpg")
        assert [r.id for r in ledger.pending()] == [row_id]
        assert ledger.last_done(tmp_path / "a.jpg") is None
        ledger.complete(row_id, tmp_path / "q" / "a.jpg")
        assert ledger.pending() == []
        done = ledger.last_done(tmp_path / "a.jpg")
        assert done is not None
        assert done.destination == str(tmp_path / "q" / "a.jpg")
        assert done.faces[0]["gender"] == "man"
        assert not done.left_in_place


def test_failed_action_is_recorded(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        row_id = record(ledger, tmp_path / "a.jpg")
        ledger.fail(row_id, "disk full")
        assert ledger.pending() == []
        assert ledger.last_done(tmp_path / "a.jpg") is None
        assert next(ledger.rows()).error == "disk full"


def test_wal_mode_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    with Ledger(path) as ledger:
        ledger.complete(record(ledger, tmp_path / "a.jpg"), None)
    with Ledger(path) as ledger:
        assert ledger.count() == 1
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
