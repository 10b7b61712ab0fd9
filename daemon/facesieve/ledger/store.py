"""The ledger: a SQLite file recording every decision, written around each action.

A decision is written as `pending` before its action and marked `done` after it,
so that after a crash every pending row says exactly which file was being moved
where. WAL mode lets `stats` and `report` read while a scan or the daemon writes.

A restore is a row of its own (action `restore`, `ref` naming the decision it
undoes, the original path as both `path` and `destination`), so that the file
back in place reads as decided and is not judged again unless it changes. A
purge keeps the decision's row and stamps its `purged_at`.

A person settling a file in review is a row of its own too (a *human verdict*:
`who` and `label` set, `ref` naming the model's decision, `path` where the file
was judged, `destination` where the person's decision put it). When it is done,
the model's decision is stamped `settled_by` it, in the same transaction. An
undo is a row with action `undo` and `ref` naming the human verdict; done, it
stamps that verdict `undone_by` and clears the decision's `settled_by`.

Every decision records the fingerprints of the policy and the models it was
made under (`policy_fingerprint`, `models_fingerprint`), so that a later policy
can tell which files were decided under another one.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import AlreadyHasVerdictError, LedgerBusyError, LedgerError, UnsafeFolderError
from ..intake.safefs import Identity
from ..paths import from_sql as path_from_sql
from ..paths import readable, to_sql

__all__ = [
    "MAX_ROW_ID",
    "RESTORE",
    "UNDO",
    "Ledger",
    "LedgerRow",
    "MemberIntent",
    "MemberRow",
    "models_fingerprint",
    "open_lock",
    "policy_fingerprint",
    "writer_lock",
]

_SCHEMA_VERSION = 5
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
    # Version 5: a sample's members (issue 17), the files that go wherever the
    # decision's image goes: written in the same transaction as its pending row,
    # so that recovery knows every file one intent moves.
    """CREATE TABLE IF NOT EXISTS members (
    id INTEGER PRIMARY KEY,
    decision INTEGER NOT NULL,
    path TEXT NOT NULL,
    destination TEXT,
    landed TEXT,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    dev INTEGER,
    ino INTEGER
)""",
    "CREATE INDEX IF NOT EXISTS members_decision ON members (decision)",
]
# Version 2: restores and purges. ALTER TABLE, so version-1 ledgers keep their rows.
_ADDED_COLUMNS = {
    "ref": "INTEGER",  # a restore row: the decision it undoes
    "purged_at": "TEXT",  # a quarantine decision: when purge deleted its file
    # Version 3: human verdicts, and what each decision was made under.
    "who": "TEXT",  # a human verdict or an undo: the person
    "label": "TEXT",  # a human verdict: keep, reject or no_face
    "settled_by": "INTEGER",  # a model's decision: the human verdict that settled it
    "undone_by": "INTEGER",  # a human verdict: the undo row that took it back
    "policy_fingerprint": "TEXT",
    "models_fingerprint": "TEXT",
    # Version 4: the inode judged (or, for a restore, the inode put back) and its
    # ctime, so that "already decided" means the same inode, not just the same size
    # and mtime, which anyone who can write the file can forge. A pending restore,
    # human verdict or undo holds the inode it moves: recovery acts on that alone.
    "dev": "INTEGER",
    "ino": "INTEGER",
    "ctime_ns": "INTEGER",
}
_ADDED_INDEXES = [
    "CREATE INDEX IF NOT EXISTS decisions_ref ON decisions (ref) WHERE ref IS NOT NULL",
]
MAX_ROW_ID = 2**63 - 1  # SQLite's largest INTEGER: no row id is above it
RESTORE = "restore"  # the action of a restore row
UNDO = "undo"  # the action of a row that takes a human verdict back
_NOT_DECISIONS = (RESTORE, UNDO)


def _fingerprint(data: object) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def policy_fingerprint(policy: Mapping[str, Any]) -> str:
    """A short stable name of a policy's settings (`PolicyConfig.model_dump()`)."""
    return _fingerprint(dict(policy))


def models_fingerprint(models: Mapping[str, str]) -> str:
    """A short stable name of the models (`Analyzer.describe()`, as the ledger records it)."""
    return _fingerprint(dict(models))


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
    who: str | None = None
    label: str | None = None
    settled_by: int | None = None
    undone_by: int | None = None
    policy_fingerprint: str | None = None
    models_fingerprint: str | None = None
    dev: int | None = None
    ino: int | None = None
    ctime_ns: int | None = None

    @classmethod
    def from_sql(cls, row: sqlite3.Row) -> LedgerRow:
        data = dict(row)
        # A name that is not UTF-8 is stored as its bytes (see `paths`).
        for key in ("path", "root", "destination"):
            if data[key] is not None:
                data[key] = path_from_sql(data[key])
        data["faces"] = json.loads(data["faces"])
        data["models"] = json.loads(data["models"])
        return cls(**data)

    @property
    def left_in_place(self) -> bool:
        """Whether the decided file stayed at `path` (kept, or not acted on)."""
        return self.destination is None or self.destination == self.path

    @property
    def inode(self) -> tuple[int, int] | None:
        """(device, inode) of the file judged or restored; None in rows from before v4."""
        if self.dev is None or self.ino is None:
            return None
        return self.dev, self.ino

    @property
    def identity(self) -> Identity | None:
        """The file judged or restored, as one value; None in rows from before v4."""
        if self.dev is None or self.ino is None or self.ctime_ns is None:
            return None
        return Identity(self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns)

    def same_identity(self, identity: Identity) -> bool:
        """Whether a file's stat proves it untouched since this row: inode, size and times."""
        return self.identity == identity

    @property
    def is_restore(self) -> bool:
        return self.action == RESTORE

    @property
    def is_human(self) -> bool:
        """A human verdict: a person settled the decision `ref`."""
        return self.who is not None and self.action != UNDO

    @property
    def is_undo(self) -> bool:
        return self.action == UNDO

    @property
    def models_key(self) -> str:
        """The models' fingerprint; for rows older than the column, from `models`."""
        return self.models_fingerprint or models_fingerprint(self.models)

    @property
    def moved_at(self) -> str:
        """When the action ran (or, for a row never completed, was decided)."""
        return self.completed_at or self.decided_at


@dataclass(frozen=True, slots=True)
class MemberRow:
    """One member of a sample: where it was judged beside its image (`path`), where
    the decision moves it (`destination`), and where it is (`landed`: None while in
    place, deleted, or not moved yet)."""

    id: int
    decision: int
    path: str
    destination: str | None
    landed: str | None
    sha256: str
    size: int
    dev: int | None
    ino: int | None

    @classmethod
    def from_sql(cls, row: sqlite3.Row) -> MemberRow:
        data = dict(row)
        for key in ("path", "destination", "landed"):
            if data[key] is not None:
                data[key] = path_from_sql(data[key])
        return cls(**data)

    @property
    def inode(self) -> tuple[int, int] | None:
        if self.dev is None or self.ino is None:
            return None
        return self.dev, self.ino


@dataclass(frozen=True, slots=True)
class MemberIntent:
    """A member as an intent records it, before anything moves."""

    path: Path
    destination: Path | None
    sha256: str
    identity: Identity


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def open_lock(folder: int, name: str, where: Path) -> int:
    """A lock file `name` in the held folder `folder` (`where`), created 0600 if missing,
    for `flock`ing and writing the holder's pid into.

    Opened relative to the folder's descriptor, never through a symlink, and refused
    unless it is a regular file of this user with one name: a planted symlink or hard
    link would otherwise have its target created, locked and truncated.

    Raises:
        UnsafeFolderError: the lock is a symlink, or not such a file.
        LedgerError: it cannot be opened.
    """
    shown = where / name
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, 0o600, dir_fd=folder)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafeFolderError(f"{shown} is a symlink: refusing to lock through it") from None
        raise LedgerError(f"cannot open the lock {shown}: {error}") from error
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_uid not in (os.geteuid(), 0):
        os.close(fd)
        raise UnsafeFolderError(
            f"{shown} is not a regular file of this user with one name: refusing to lock it"
        )
    return fd


def writer_lock(ledger: Path, *, shared: bool = False) -> int:
    """Take the writers' lock beside `ledger` (`<ledger>.lock`); the caller closes the fd.

    Exclusive for a writer of the plain ledger (`scan`, `watch`); `shared` for a Ray
    scan, which records in shards it locks one by one: shard owners may share the
    tree, but none of them runs beside a plain writer, nor a plain writer beside one.
    Opened below the state folder's descriptor, without following a symlink (`open_lock`).

    Raises:
        LedgerBusyError: another writer holds it (the message names its pid).
        UnsafeFolderError: the folder is a symlink or someone else's, the ledger is not
            a regular file of this user, or the lock is not one (`open_lock`).
        LedgerError: the lock cannot be opened.
    """
    from ..acting.moves import open_state_folder  # the one module that creates folders

    try:
        folder = open_state_folder(ledger.parent)
    except OSError as error:
        raise LedgerError(f"cannot open {ledger.parent}: {error}") from error
    try:
        info = os.stat(ledger.name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(info.st_mode) or info.st_uid not in (os.geteuid(), 0):
            os.close(folder)
            raise UnsafeFolderError(
                f"{ledger} is not a regular file of this user: refusing to write to it"
            )
    try:
        fd = open_lock(folder, ledger.name + ".lock", ledger.parent)
    finally:
        os.close(folder)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise LedgerBusyError(
            f"{ledger} is in use by another scan or watch (pid {holder}); "
            "one writer at a time: wait for it, or stop it"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class Ledger:
    """One SQLite connection; like the analyzer, owned by one thread.

    `id_base`: the ids of new rows start above it. The shards of a sharded ledger
    (see `shards.py`) take disjoint ranges, so that an id names one row in all of them.
    """

    def __init__(self, path: Path, *, id_base: int = 0, exclusive: bool = False) -> None:
        """Open (creating) the ledger; `exclusive`: as its one writer of decisions.

        Raises:
            LedgerBusyError: `exclusive`, and another scan or watch holds it.
            UnsafeFolderError: `exclusive`, and its folder is a symlink or someone else's.
            LedgerError: it cannot be opened.
        """
        self.path = path
        self.id_base = id_base
        self._lock_fd = -1
        if exclusive:
            self._lock()
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
        self._identity = self._file_identity()

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return (info.st_dev, info.st_ino)

    def ensure_unchanged(self) -> None:
        """Raise unless the file at `path` is still the one opened.

        SQLite keeps writing to an open file that was deleted or replaced: every
        later decision would land where no `restore` or `report` will find it.

        Raises:
            LedgerError: the ledger file is gone, or another file is at its path.
        """
        now = self._file_identity()
        if now != self._identity:
            what = "was deleted" if now is None else "was replaced by another file"
            raise LedgerError(f"the ledger {self.path} {what} while in use")

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

    def _lock(self) -> None:
        """Hold an exclusive lock beside the ledger for as long as it is open.

        Two writers would judge the same files at once and record them twice; a
        second `scan`, or a `scan` beside a `watch`, is refused instead.
        """
        self._lock_fd = writer_lock(self.path)

    def close(self) -> None:
        self._db.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

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

        A restore or a human verdict still pending counts: between its link into
        place and its completion, a daemon's reconciliation pass must not judge the
        file again.
        """
        row = self._db.execute(
            """SELECT * FROM decisions WHERE path = ?
                   AND (state = 'done' OR (state = 'pending'
                        AND (action = 'restore' OR who IS NOT NULL)))
               ORDER BY id DESC LIMIT 1""",
            (to_sql(path),),
        ).fetchone()
        return LedgerRow.from_sql(row) if row else None

    def get(self, row_id: int) -> LedgerRow | None:
        if not -MAX_ROW_ID - 1 <= row_id <= MAX_ROW_ID:
            return None  # no row has it, and SQLite could not even compare it
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
        policy: str | None = None,
        identity: Identity | None = None,
        members: Sequence[MemberIntent] = (),
    ) -> int:
        """Record a decision and its intended action, before the action runs.

        `policy` is the fingerprint of the policy it was made under; `members`: the
        files of its sample that go with it, recorded in the same transaction.
        """
        with self._transaction():
            row_id = self._begin(
                path,
                root,
                size,
                mtime_ns,
                mode,
                sha256,
                faces,
                verdict,
                reason,
                action,
                destination,
                models,
                elapsed_ms,
                policy,
                identity,
            )
            for member in members:
                self._write(
                    """INSERT INTO members (decision, path, destination, sha256, size, dev, ino)
                       VALUES (?, ?, ?, ?, ?, ?, ?)""",
                    (
                        row_id,
                        to_sql(member.path),
                        None if member.destination is None else to_sql(member.destination),
                        member.sha256,
                        member.identity.size,
                        member.identity.dev,
                        member.identity.ino,
                    ),
                )
        return row_id

    def _begin(
        self,
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
        policy: str | None,
        identity: Identity | None,
    ) -> int:
        cursor = self._write(
            """INSERT INTO decisions (id, path, root, size, mtime_ns, mode, sha256, faces,
                   verdict, reason, action, destination, state, models, elapsed_ms, decided_at,
                   policy_fingerprint, models_fingerprint, dev, ino, ctime_ns)
               -- the next id above id_base (shards of a sharded ledger take disjoint ranges)
               VALUES ((SELECT max(coalesce(max(id), 0), ?) + 1 FROM decisions),
                   ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                self.id_base,
                to_sql(path),
                to_sql(root),
                size,
                mtime_ns,
                mode,
                sha256,
                json.dumps(faces),
                verdict,
                readable(reason),  # free text may quote a file name
                action,
                None if destination is None else to_sql(destination),
                json.dumps(dict(models)),
                elapsed_ms,
                _now(),
                policy,
                models_fingerprint(models),
                None if identity is None else identity.dev,
                None if identity is None else identity.ino,
                None if identity is None else identity.ctime_ns,
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def add_member(self, decision_id: int, member: MemberIntent) -> int:
        """A file that arrived after its image was decided joins that decision's sample."""
        cursor = self._write(
            """INSERT INTO members (decision, path, destination, sha256, size, dev, ino)
               VALUES (?, ?, ?, ?, ?, ?, ?)""",
            (
                decision_id,
                to_sql(member.path),
                None if member.destination is None else to_sql(member.destination),
                member.sha256,
                member.identity.size,
                member.identity.dev,
                member.identity.ino,
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def member_landed(self, member_id: int, landed: Path | None) -> None:
        self._write(
            "UPDATE members SET landed = ? WHERE id = ?",
            (None if landed is None else to_sql(landed), member_id),
        )

    def members(self, decision_id: int) -> list[MemberRow]:
        """The members of a decision's sample (none for a lone image, or before v5)."""
        rows = self._db.execute(
            "SELECT * FROM members WHERE decision = ? ORDER BY id", (decision_id,)
        )
        return [MemberRow.from_sql(r) for r in rows]

    def complete(
        self,
        row_id: int,
        destination: Path | None,
        identity: Identity | None = None,
        *,
        members: Mapping[int, Path | None] | None = None,
    ) -> None:
        """Mark an action done; a human verdict or an undo stamps the rows it settles.

        `identity`: the file as it now is (a restore's, put back), so that it is known.
        `members`: where each member (by its id) is now, in the same transaction.
        """
        with self._transaction():
            for member_id, landed in (members or {}).items():
                self._write(
                    "UPDATE members SET landed = ? WHERE id = ?",
                    (None if landed is None else to_sql(landed), member_id),
                )
            self._write(
                "UPDATE decisions SET state = 'done', destination = ?, completed_at = ? "
                "WHERE id = ?",
                (None if destination is None else to_sql(destination), _now(), row_id),
            )
            if identity is not None:
                self._write(
                    """UPDATE decisions SET dev = ?, ino = ?, size = ?, mtime_ns = ?,
                           ctime_ns = ? WHERE id = ?""",
                    (
                        identity.dev,
                        identity.ino,
                        identity.size,
                        identity.mtime_ns,
                        identity.ctime_ns,
                        row_id,
                    ),
                )
            row = self.get(row_id)
            if row is None or row.ref is None:
                return
            if row.is_human:
                self._write("UPDATE decisions SET settled_by = ? WHERE id = ?", (row_id, row.ref))
            elif row.is_undo:
                verdict = self.get(row.ref)
                self._write("UPDATE decisions SET undone_by = ? WHERE id = ?", (row_id, row.ref))
                if verdict is not None and verdict.ref is not None:
                    self._write(
                        "UPDATE decisions SET settled_by = NULL WHERE id = ? AND settled_by = ?",
                        (verdict.ref, verdict.id),
                    )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction (BEGIN IMMEDIATE): other writers wait, readers go on."""
        if self._db.in_transaction:
            yield
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            raise LedgerError(f"cannot write ledger {self.path}: {error}") from error
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def begin_human(
        self,
        decision_id: int,
        *,
        who: str,
        label: str,
        verdict: str,
        action: str,
        destination: Path | None,
        policy: str,
        check: Callable[[LedgerRow], str | None],
        identity: Identity | None = None,
    ) -> tuple[LedgerRow, int]:
        """Record, before the move, that a person settles `decision_id`.

        `identity`: the file the person's verdict moves, as it was checked (see
        `_insert_follow_up`).

        In one write transaction: `check(decision)` (None, or why it cannot be
        settled), then that no other person settled it or is settling it, then the
        pending row. Two pages or processes deciding one file: one wins, the other
        gets AlreadyHasVerdictError and nothing changes.

        Raises:
            AlreadyHasVerdictError: settled, being settled, or `check` refused.
        """
        with self._transaction():
            decision = self.get(decision_id)
            if decision is None:
                raise AlreadyHasVerdictError(f"no ledger id {decision_id}")
            if decision.settled_by is not None:
                raise AlreadyHasVerdictError(
                    f"ledger #{decision_id} was settled already (ledger #{decision.settled_by})"
                )
            busy = self._db.execute(
                "SELECT id FROM decisions WHERE ref = ? AND state = 'pending' "
                "AND (who IS NOT NULL OR action = 'restore')",
                (decision_id,),
            ).fetchone()
            if busy is not None:
                raise AlreadyHasVerdictError(
                    f"ledger #{decision_id} is being settled (ledger #{busy[0]})"
                )
            why = check(decision)
            if why is not None:
                raise AlreadyHasVerdictError(why)
            row_id = self._insert_follow_up(
                decision,
                ref=decision.id,
                verdict=verdict,
                reason=f"{label} by {who} (ledger #{decision.id}: {decision.reason})",
                action=action,
                destination=destination,
                who=who,
                label=label,
                policy_fingerprint=policy,
                models_fingerprint=decision.models_key,
                identity=identity,
            )
            return decision, row_id

    def begin_undo(
        self,
        verdict_id: int,
        *,
        who: str,
        check: Callable[[LedgerRow], str | None],
        identity: Identity | None = None,
    ) -> tuple[LedgerRow, int]:
        """Record, before the move, that a human verdict is taken back.

        `identity`: the file the undo moves back, as it was checked.

        In one write transaction, as `begin_human`: the verdict must be done, the
        one that settles its decision, not undone and not being undone, and pass
        `check`.

        Raises:
            AlreadyHasVerdictError: it cannot be undone (now); nothing was changed.
        """
        with self._transaction():
            verdict = self.get(verdict_id)
            if verdict is None or not verdict.is_human or verdict.ref is None:
                raise AlreadyHasVerdictError(f"ledger #{verdict_id} is not a human verdict")
            decision = self.get(verdict.ref)
            if verdict.state != "done" or decision is None or decision.settled_by != verdict.id:
                raise AlreadyHasVerdictError(f"ledger #{verdict_id} does not settle a file now")
            busy = self._db.execute(
                "SELECT id FROM decisions WHERE ref = ? AND state = 'pending'", (verdict_id,)
            ).fetchone()
            if verdict.undone_by is not None or busy is not None:
                raise AlreadyHasVerdictError(f"ledger #{verdict_id} was undone already")
            why = check(verdict)
            if why is not None:
                raise AlreadyHasVerdictError(why)
            row_id = self._insert_follow_up(
                decision,
                ref=verdict.id,
                verdict=decision.verdict,
                reason=f"undone by {who} (ledger #{verdict.id}: {verdict.reason})",
                action=UNDO,
                destination=decision.destination,
                who=who,
                policy_fingerprint=decision.policy_fingerprint,
                models_fingerprint=decision.models_key,
                identity=identity,
            )
            return verdict, row_id

    def later_rows(self, row: LedgerRow) -> list[LedgerRow]:
        """Rows written after `row` about a file at its path: it was judged or restored since."""
        rows = self._db.execute(
            "SELECT * FROM decisions WHERE id > ? AND path = ? ORDER BY id",
            (row.id, to_sql(row.path)),
        )
        return [LedgerRow.from_sql(r) for r in rows]

    def fail(self, row_id: int, error: str) -> None:
        self._write(
            "UPDATE decisions SET state = 'failed', error = ?, completed_at = ? WHERE id = ?",
            (readable(error), _now(), row_id),
        )

    def _insert_follow_up(
        self,
        decision: LedgerRow,
        *,
        ref: int,
        verdict: str,
        reason: str,
        action: str,
        destination: str | os.PathLike[str] | None,
        identity: Identity | None = None,
        **extra: str | None,
    ) -> int:
        """A pending row about `decision`'s file that points back (`ref`) at the row it
        follows: a restore, a person's verdict, or its undo.

        It carries the decision's size, mtime, mode, hash, faces and models, so the
        file it leaves in place reads as decided; `extra` names further columns.
        `identity`: the file this row moves (its inode, size and times), so that a
        recovery acts only on that inode; None for a caller that does not know it.
        """
        inode: tuple[int | None, ...] = (None, None, None)
        if identity is not None:
            inode = (identity.dev, identity.ino, identity.ctime_ns)
        columns: tuple[str, ...] = (
            *("path", "root", "size", "mtime_ns", "mode", "sha256", "faces", "verdict"),
            *("reason", "action", "destination", "state", "models", "decided_at", "ref"),
            *("dev", "ino", "ctime_ns"),
            *extra,
        )
        values = (
            to_sql(decision.path),
            to_sql(decision.root),
            decision.size if identity is None else identity.size,
            decision.mtime_ns if identity is None else identity.mtime_ns,
            decision.mode,
            decision.sha256,
            json.dumps(decision.faces),
            verdict,
            readable(reason),  # free text may quote a file name
            action,
            None if destination is None else to_sql(destination),
            "pending",
            json.dumps(decision.models),
            _now(),
            ref,
            *inode,
            *extra.values(),
        )
        # Column names are this module's own literals, never input.
        cursor = self._write(
            f"INSERT INTO decisions (id, {', '.join(columns)}) "  # noqa: S608
            # the next id above id_base (shards of a sharded ledger take disjoint ranges)
            "VALUES ((SELECT max(coalesce(max(id), 0), ?) + 1 FROM decisions), "
            f"{', '.join('?' * len(values))})",
            (self.id_base, *values),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def begin_restore(self, decision: LedgerRow, identity: Identity | None = None) -> int:
        """Record, before the move, that `decision`'s file goes back to its path.

        The row carries the decision's size, mtime and hash: the file restored
        unchanged is then known to every later scan, and a changed one is judged.
        `identity`: the file in quarantine or review that goes back.
        """
        return self._insert_follow_up(
            decision,
            ref=decision.id,
            verdict=decision.verdict,
            reason=f"restored (ledger #{decision.id}: {decision.reason})",
            action=RESTORE,
            destination=decision.path,
            identity=identity,
        )

    def restore_of(self, decision_id: int) -> LedgerRow | None:
        """The restore row of one decision, chosen as `restores` chooses."""
        rows = self._db.execute(
            "SELECT * FROM decisions WHERE action = 'restore' AND ref = ? ORDER BY id",
            (decision_id,),
        )
        rank = {"done": 2, "pending": 1, "failed": 0}
        found = None
        for row in map(LedgerRow.from_sql, rows):
            if found is None or rank[row.state] >= rank[found.state]:
                found = row
        return found

    def mark_purged(self, row_id: int) -> None:
        self._write("UPDATE decisions SET purged_at = ? WHERE id = ?", (_now(), row_id))

    def pending(self) -> list[LedgerRow]:
        """Every action a crash may have cut short, each as a move from `path` to `destination`.

        A restore is shown as the move it is, from where its decision put the file
        back to the original path, so that recovery (`acting.recovery`) finishes or fails
        it like any other move.
        """
        rows = self._db.execute("SELECT * FROM decisions WHERE state = 'pending' ORDER BY id")
        return [self._as_move(LedgerRow.from_sql(r)) for r in rows]

    def _as_move(self, row: LedgerRow) -> LedgerRow:
        if row.ref is None or not (row.is_restore or row.is_human or row.is_undo):
            return row
        earlier = self.get(row.ref)
        if earlier is None or earlier.destination is None:
            return row
        # A restore and a human verdict move the file from where the decision put
        # it; an undo from where the human verdict put it.
        target = row.path if row.is_restore else row.destination
        return replace(row, path=earlier.destination, destination=target)

    def decisions(self) -> list[LedgerRow]:
        """Completed decisions, oldest first: the model's and people's (human verdicts);
        no restores, undos, pending or failed rows."""
        rows = self._db.execute(
            "SELECT * FROM decisions WHERE state = 'done' AND action NOT IN (?, ?) ORDER BY id",
            _NOT_DECISIONS,
        )
        return [LedgerRow.from_sql(r) for r in rows]

    def human_verdicts(self) -> list[LedgerRow]:
        """Completed human verdicts not taken back, oldest first."""
        rows = self._db.execute(
            "SELECT * FROM decisions WHERE state = 'done' AND who IS NOT NULL "
            "AND action != ? AND undone_by IS NULL ORDER BY id",
            (UNDO,),
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
