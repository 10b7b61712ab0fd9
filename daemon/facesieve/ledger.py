"""The ledger: a SQLite file recording every decision, written around each action.

A decision is written as `pending` before its action and marked `done` after it,
so that after a crash every pending row says exactly which file was being moved
where. WAL mode lets `stats` and `report` read while a scan or the daemon writes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import LedgerError

__all__ = ["Ledger", "LedgerRow"]

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    root TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    faces TEXT NOT NULL,
    verdict TEXT NOT NULL,
    reason TEXT NOT NULL,
    action TEXT NOT NULL,
    destination TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
    error TEXT,
    models TEXT NOT NULL,
    elapsed_ms REAL,
    decided_at TEXT NOT NULL,
    completed_at TEXT
);
CREATE INDEX IF NOT EXISTS decisions_path ON decisions (path, id);
CREATE INDEX IF NOT EXISTS decisions_sha256 ON decisions (sha256);
CREATE INDEX IF NOT EXISTS decisions_pending ON decisions (state) WHERE state = 'pending';
"""


@dataclass(frozen=True, slots=True)
class LedgerRow:
    id: int
    path: str
    root: str
    size: int
    mtime_ns: int
    mode: int
    sha256: str
    faces: list[dict[str, Any]]
    verdict: str
    reason: str
    action: str
    destination: str | None
    state: str
    error: str | None
    models: dict[str, str]
    elapsed_ms: float | None
    decided_at: str
    completed_at: str | None

    @classmethod
    def from_sql(cls, row: sqlite3.Row) -> LedgerRow:
        data = dict(row)
        data["faces"] = json.loads(data["faces"])
        data["models"] = json.loads(data["models"])
        return cls(**data)

    @property
    def left_in_place(self) -> bool:
        """Whether the decided file stayed at `path` (kept, or not acted on)."""
        return self.destination is None or self.destination == self.path


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Ledger:
    """One SQLite connection; like the analyzer, owned by one thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a pending row must be on disk before the move it announces.
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise LedgerError(
                    f"{path} has schema {version}; this facesieve knows {_SCHEMA_VERSION}"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except sqlite3.Error as error:
            raise LedgerError(f"cannot open ledger {path}: {error}") from error

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, params)
        except sqlite3.Error as error:
            raise LedgerError(f"cannot write ledger {self.path}: {error}") from error

    def last_done(self, path: Path) -> LedgerRow | None:
        """The latest completed decision about a file at `path`."""
        row = self._db.execute(
            "SELECT * FROM decisions WHERE path = ? AND state = 'done' ORDER BY id DESC LIMIT 1",
            (str(path),),
        ).fetchone()
        return LedgerRow.from_sql(row) if row else None

    def begin(
        self,
        *,
        path: Path,
        root: Path,
        size: int,
        mtime_ns: int,
        mode: int,
        sha256: str,
        faces: list[dict[str, Any]],
        verdict: str,
        reason: str,
        action: str,
        destination: Path | None,
        models: Mapping[str, str],
        elapsed_ms: float,
    ) -> int:
        """Record a decision and its intended action, before the action runs."""
        cursor = self._write(
            """INSERT INTO decisions (path, root, size, mtime_ns, mode, sha256, faces, verdict,
                   reason, action, destination, state, models, elapsed_ms, decided_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)""",
            (
                str(path),
                str(root),
                size,
                mtime_ns,
                mode,
                sha256,
                json.dumps(faces),
                verdict,
                reason,
                action,
                None if destination is None else str(destination),
                json.dumps(dict(models)),
                elapsed_ms,
                _now(),
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def complete(self, row_id: int, destination: Path | None) -> None:
        self._write(
            "UPDATE decisions SET state = 'done', destination = ?, completed_at = ? WHERE id = ?",
            (None if destination is None else str(destination), _now(), row_id),
        )

    def fail(self, row_id: int, error: str) -> None:
        self._write(
            "UPDATE decisions SET state = 'failed', error = ?, completed_at = ? WHERE id = ?",
            (error, _now(), row_id),
        )

    def pending(self) -> list[LedgerRow]:
        rows = self._db.execute("SELECT * FROM decisions WHERE state = 'pending' ORDER BY id")
        return [LedgerRow.from_sql(r) for r in rows]

    def rows(self) -> Iterator[LedgerRow]:
        for row in self._db.execute("SELECT * FROM decisions ORDER BY id"):
            yield LedgerRow.from_sql(row)

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM decisions").fetchone()[0])
