"""The ledger: pending before the action, done after, in WAL mode."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from facesieve.ledger.store import Ledger


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


def test_a_corrupt_ledger_stops_scan_and_watch_with_the_ledger_exit_code(
    tmp_path: Path, deepface_home: Path
) -> None:
    from structlog.testing import capture_logs

    from facesieve.config import Config
    from facesieve.daemon.guard import Guard
    from facesieve.daemon.notify import Notifier
    from facesieve.testing import NoModels

    from .cli_util import run_cli

    inbox = tmp_path / "inbox"
    ledger = inbox / ".facesieve" / "ledger.sqlite3"
    ledger.parent.mkdir(parents=True)
    ledger.write_bytes(b"this is not a SQLite database, it is garbage " * 100)

    scan = run_cli("scan", str(inbox))
    assert scan.code == 5, scan.stderr
    assert "ledger error" in scan.stderr

    config = Config.model_validate({"folders": {"inbox": str(inbox)}})
    guard = Guard(
        config, notifier=Notifier.from_environment({}), make_analyzer=lambda c: NoModels()
    )
    with capture_logs() as events:
        code = guard.run()
    # Restarting will not mend the file: systemd must see the ledger's own code, as scan does.
    assert code == 5
    assert [e["event"] for e in events if e["event"] in ("start_failed", "ready")] == [
        "start_failed"
    ]
