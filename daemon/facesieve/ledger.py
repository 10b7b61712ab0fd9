"""The ledger: a SQLite file recording every decision, written around each action.

A decision is written as `pending` before its action and marked `done` after it,
so that after a crash every pending row says exactly which file was being moved
where. WAL mode lets `stats` and `report` read while a scan or the daemon writes.

A restore is a row of its own (action `restore`, `ref` naming the decision it
undoes, the original path as both `path` and `destination`), so that the file
back in place reads as decided and is not judged again unless it changes. A
purge keeps the decision's row and stamps its `purged_at`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import LedgerError

__all__ = ["RESTORE", "Ledger", "LedgerRow"]

_SCHEMA_VERSION = 2
_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS decisions (
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
)""",
    "CREATE INDEX IF NOT EXISTS decisions_path ON decisions (path, id)",
    "CREATE INDEX IF NOT EXISTS decisions_sha256 ON decisions (sha256)",
    "CREATE INDEX IF NOT EXISTS decisions_pending ON decisions (state) WHERE state = 'pending'",
]
# Version 2: restores and purges. ALTER TABLE, so version-1 ledgers keep their rows.
_ADDED_COLUMNS = {
    "ref": "INTEGER",  # a restore row: the decision it undoes
    "purged_at": "TEXT",  # a quarantine decision: when purge deleted its file
}
_ADDED_INDEXES = [
    "CREATE INDEX IF NOT EXISTS decisions_ref ON decisions (ref) WHERE ref IS NOT NULL",
]
RESTORE = "restore"  # the action of a restore row


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
    ref: int | None = None
    purged_at: str | None = None

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

    @property
    def is_restore(self) -> bool:
        return self.action == RESTORE

    @property
    def moved_at(self) -> str:
        """When the action ran (or, for a row never completed, was decided)."""
        return self.completed_at or self.decided_at


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Ledger:
    """One SQLite connection; like the analyzer, owned by one thread.

    `id_base`: the ids of new rows start above it. The shards of a sharded ledger
    (see `shards.py`) take disjoint ranges, so that an id names one row in all of them.
    """

    def __init__(self, path: Path, *, id_base: int = 0) -> None:
        self.path = path
        self.id_base = id_base
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a pending row must be on disk before the move it announces.
            self._db.execute("PRAGMA synchronous=FULL")
            if self._version() < _SCHEMA_VERSION:
                self._migrate()
        except sqlite3.Error as error:
            raise LedgerError(f"cannot open ledger {path}: {error}") from error

    @classmethod
    def open_existing(cls, path: Path, *, id_base: int = 0) -> Ledger:
        """Open a ledger that must already exist: reading commands never create one."""
        if not path.is_file():
            raise LedgerError(f"no ledger at {path}: nothing was scanned or watched there yet")
        return cls(path, id_base=id_base)

    def _version(self) -> int:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > _SCHEMA_VERSION:
            raise LedgerError(
                f"{self.path} has schema {version}; this facesieve knows {_SCHEMA_VERSION}"
            )
        return version

    def _migrate(self) -> None:
        # One write transaction: two processes opening an old ledger at once must
        # not both add the same column.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if self._version() < _SCHEMA_VERSION:
                for statement in _SCHEMA:
                    self._db.execute(statement)
                present = {row[1] for row in self._db.execute("PRAGMA table_info(decisions)")}
                for name, kind in _ADDED_COLUMNS.items():
                    if name not in present:
                        self._db.execute(f"ALTER TABLE decisions ADD COLUMN {name} {kind}")
                for statement in _ADDED_INDEXES:
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

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
        """The latest completed decision about a file at `path`.

        A restore still pending counts: between its link into place and its
        completion, a daemon's reconciliation pass must not judge the file again.
        """
        row = self._db.execute(
            """SELECT * FROM decisions WHERE path = ?
                   AND (state = 'done' OR (state = 'pending' AND action = 'restore'))
               ORDER BY id DESC LIMIT 1""",
            (str(path),),
        ).fetchone()
        return LedgerRow.from_sql(row) if row else None

    def get(self, row_id: int) -> LedgerRow | None:
        row = self._db.execute("SELECT * FROM decisions WHERE id = ?", (row_id,)).fetchone()
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
            """INSERT INTO decisions (id, path, root, size, mtime_ns, mode, sha256, faces,
                   verdict, reason, action, destination, state, models, elapsed_ms, decided_at)
               -- the next id above id_base (shards of a sharded ledger take disjoint ranges)
               VALUES ((SELECT max(coalesce(max(id), 0), ?) + 1 FROM decisions),
                   ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)""",
            (
                self.id_base,
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

    def begin_restore(self, decision: LedgerRow) -> int:
        """Record, before the move, that `decision`'s file goes back to its path.

        The row carries the decision's size, mtime and hash: the file restored
        unchanged is then known to every later scan, and a changed one is judged.
        """
        cursor = self._write(
            """INSERT INTO decisions (id, path, root, size, mtime_ns, mode, sha256, faces,
                   verdict, reason, action, destination, state, models, elapsed_ms, decided_at, ref)
               -- the next id above id_base (shards of a sharded ledger take disjoint ranges)
               VALUES ((SELECT max(coalesce(max(id), 0), ?) + 1 FROM decisions),
                   ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, NULL, ?, ?)""",
            (
                self.id_base,
                decision.path,
                decision.root,
                decision.size,
                decision.mtime_ns,
                decision.mode,
                decision.sha256,
                json.dumps(decision.faces),
                decision.verdict,
                f"restored (ledger #{decision.id}: {decision.reason})",
                RESTORE,
                decision.path,
                json.dumps(decision.models),
                _now(),
                decision.id,
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def mark_purged(self, row_id: int) -> None:
        self._write("UPDATE decisions SET purged_at = ? WHERE id = ?", (_now(), row_id))

    def pending(self) -> list[LedgerRow]:
        """Every action a crash may have cut short, each as a move from `path` to `destination`.

        A restore is shown as the move it is, from where its decision put the file
        back to the original path, so that recovery settles it like any other move.
        """
        rows = self._db.execute("SELECT * FROM decisions WHERE state = 'pending' ORDER BY id")
        return [self._as_move(LedgerRow.from_sql(r)) for r in rows]

    def _as_move(self, row: LedgerRow) -> LedgerRow:
        if not row.is_restore or row.ref is None:
            return row
        decision = self.get(row.ref)
        if decision is None or decision.destination is None:
            return row
        return replace(row, path=decision.destination, destination=row.path)

    def decisions(self) -> list[LedgerRow]:
        """Completed decisions, oldest first: every row but restores, pending and failed ones."""
        rows = self._db.execute(
            "SELECT * FROM decisions WHERE state = 'done' AND action != 'restore' ORDER BY id"
        )
        return [LedgerRow.from_sql(r) for r in rows]

    def restores(self) -> dict[int, LedgerRow]:
        """The restore row of each decision ever restored, by the decision's id.

        Of several attempts, a completed one wins over a pending one, and that over
        a failed one (a conflict); among equals, the latest.
        """
        rank = {"done": 2, "pending": 1, "failed": 0}
        found: dict[int, LedgerRow] = {}
        rows = self._db.execute(
            "SELECT * FROM decisions WHERE action = 'restore' AND ref IS NOT NULL ORDER BY id"
        )
        for row in map(LedgerRow.from_sql, rows):
            assert row.ref is not None
            current = found.get(row.ref)
            if current is None or rank[row.state] >= rank[current.state]:
                found[row.ref] = row
        return found

    def rows(self) -> Iterator[LedgerRow]:
        for row in self._db.execute("SELECT * FROM decisions ORDER BY id"):
            yield LedgerRow.from_sql(row)

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM decisions").fetchone()[0])
