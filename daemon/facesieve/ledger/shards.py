"""A sharded ledger: one SQLite file per shard, each with one owner at a time.

One SQLite writer records a few hundred files a second; a cluster judges faster.
So a Ray scan splits the acting and the recording by shard: a file's shard is a
hash of its parent folder (files of one folder share a shard, so one owner sees
every name collision in it), shard `k` is recorded in `ledger-<k>.sqlite3` beside
the configured ledger, and whoever acts on a shard's files holds that shard's lock
(an exclusive `flock` on `ledger-<k>.sqlite3.lock`) for as long as it does. A
second owner finds the lock taken and leaves that shard's files alone: every file
is acted on by exactly one owner.

The shards take disjoint id ranges (`id_base`), so that a ledger id names one row
in the whole set, and `LedgerUnion` is how every reader sees the plain ledger and all
its shards as one: `stats`, `report`, `eval --ledger`, `learn --ledger`, the review
page, and (writing each row to the file that holds its decision) `approve`, `reject`,
`restore` and `purge`; they open it with `reading.open_ledger`.
SQLite's locking does not work on network filesystems: the ledger files belong on
the local disk of the machine that owns them.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import AlreadyHasVerdictError, LedgerError
from ..intake.safefs import Identity
from .store import Ledger, LedgerRow, MemberRow, open_lock

__all__ = [
    "ID_SPAN",
    "LedgerUnion",
    "ShardLock",
    "id_base",
    "ledger_files",
    "shard_of",
    "shard_path",
]

# Row ids per shard: shard k holds ids in ((k + 1) * ID_SPAN, (k + 2) * ID_SPAN];
# the plain (unsharded) ledger keeps 1..ID_SPAN.
ID_SPAN = 10**9


def shard_of(path: Path, shards: int) -> int:
    """The shard of a file: a stable hash of its parent folder's bytes, modulo `shards`.

    Stable across processes and machines (not Python's salted `hash`), and defined
    on bytes so that a folder name that is not UTF-8 has a shard too.
    """
    parent = os.fsencode(os.path.dirname(os.path.abspath(path)))
    digest = hashlib.blake2b(parent, digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def shard_path(ledger: Path, index: int) -> Path:
    """`ledger-<index>.sqlite3` beside the configured `ledger.sqlite3`."""
    return ledger.with_name(f"{ledger.stem}-{index}{ledger.suffix}")


def id_base(ledger: Path, file: Path) -> int:
    """The id range of `file`: 0 for the plain ledger, (k + 1) * ID_SPAN for shard k."""
    index = _shard_index(ledger, file)
    return 0 if index is None else (index + 1) * ID_SPAN


def _shard_index(ledger: Path, file: Path) -> int | None:
    match = re.fullmatch(re.escape(ledger.stem) + r"-(\d+)" + re.escape(ledger.suffix), file.name)
    return None if match is None else int(match.group(1))


def ledger_files(ledger: Path) -> list[Path]:
    """The plain ledger (if it exists) and every shard beside it, shards in index order."""
    shards = []
    if ledger.parent.is_dir():
        for entry in ledger.parent.iterdir():
            index = _shard_index(ledger, entry)
            if index is not None and entry.is_file():
                shards.append((index, entry))
    found = [ledger] if ledger.is_file() else []
    return found + [path for _, path in sorted(shards)]


class ShardLock:
    """An exclusive, non-blocking `flock` on `<ledger file>.lock`, held until `release`.

    The kernel drops it when its holder dies, however it dies: a killed owner never
    leaves a shard locked. The lock file is opened as the plain ledger's is
    (`store.open_lock`): in the held state folder, never through a planted link.
    """

    def __init__(self, ledger_file: Path) -> None:
        self.path = ledger_file.with_name(ledger_file.name + ".lock")
        self._fd: int | None = None
        self._holder = "?"

    def acquire(self) -> bool:
        """Take the lock; False when another owner holds it.

        Raises:
            UnsafeFolderError: the state folder or the lock is a symlink, or the lock
                is not a regular file of this user with one name.
            LedgerError: the lock cannot be opened.
        """
        from ..acting.moves import open_state_folder  # the one module that creates folders

        try:
            folder = open_state_folder(self.path.parent)
        except OSError as error:
            raise LedgerError(f"cannot open {self.path.parent}: {error}") from error
        try:
            fd = open_lock(folder, self.path.name, self.path.parent)
        finally:
            os.close(folder)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return True

    def holder(self) -> str:
        """The pid written by whoever held the lock when `acquire` found it taken, for
        messages (read through the descriptor, never by name)."""
        return self._holder

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


class LedgerUnion:
    """The plain ledger and its shards, read (and restored or purged) as one ledger.

    Offers what the reviewing commands use of `Ledger`: decisions and restores of
    every file, rows by id, and the writes of restore and purge, each routed to the
    file that holds the decision.
    """

    def __init__(self, ledger: Path, files: list[Path]) -> None:
        self.path = ledger
        self._ledgers = [Ledger(f, id_base=id_base(ledger, f)) for f in files]
        self._by_base = {member.id_base: member for member in self._ledgers}

    @classmethod
    def open_existing(cls, ledger: Path) -> LedgerUnion:
        files = ledger_files(ledger)
        if not files:
            raise LedgerError(f"no ledger at {ledger}: nothing was scanned or watched there yet")
        return cls(ledger, files)

    @property
    def files(self) -> list[Path]:
        return [member.path for member in self._ledgers]

    def close(self) -> None:
        for member in self._ledgers:
            member.close()

    def __enter__(self) -> LedgerUnion:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _holding(self, row_id: int) -> Ledger:
        base = ((row_id - 1) // ID_SPAN) * ID_SPAN
        member = self._by_base.get(base)
        if member is None:
            raise LedgerError(f"ledger #{row_id} is in no ledger file of {self.path}")
        return member

    def decisions(self) -> list[LedgerRow]:
        rows = [row for member in self._ledgers for row in member.decisions()]
        return sorted(rows, key=lambda row: (row.decided_at, row.id))

    def restores(self) -> dict[int, LedgerRow]:
        found: dict[int, LedgerRow] = {}
        for member in self._ledgers:
            found.update(member.restores())
        return found

    def rows(self) -> Iterator[LedgerRow]:
        rows = [row for member in self._ledgers for row in member.rows()]
        yield from sorted(rows, key=lambda row: (row.decided_at, row.id))

    def count(self) -> int:
        return sum(member.count() for member in self._ledgers)

    def get(self, row_id: int) -> LedgerRow | None:
        try:
            return self._holding(row_id).get(row_id)
        except LedgerError:
            return None

    def last_done(self, path: Path) -> LedgerRow | None:
        found = [row for m in self._ledgers if (row := m.last_done(path)) is not None]
        return max(found, key=lambda row: (row.decided_at, row.id), default=None)

    def begin_human(self, decision_id: int, **details: Any) -> tuple[LedgerRow, int]:
        return self._settling(decision_id).begin_human(decision_id, **details)

    def begin_undo(self, verdict_id: int, **details: Any) -> tuple[LedgerRow, int]:
        return self._settling(verdict_id).begin_undo(verdict_id, **details)

    def _settling(self, row_id: int) -> Ledger:
        """The file holding a row a person settles or undoes; as `Ledger.begin_human`
        says of an id no row has: AlreadyHasVerdictError (nothing to settle), not a
        ledger failure."""
        try:
            return self._holding(row_id)
        except LedgerError:
            raise AlreadyHasVerdictError(f"no ledger id {row_id}") from None

    def restore_of(self, decision_id: int) -> LedgerRow | None:
        return self._holding(decision_id).restore_of(decision_id)

    def human_verdicts(self) -> list[LedgerRow]:
        rows = [row for member in self._ledgers for row in member.human_verdicts()]
        return sorted(rows, key=lambda row: (row.decided_at, row.id))

    def pending(self) -> list[LedgerRow]:
        rows = [row for member in self._ledgers for row in member.pending()]
        return sorted(rows, key=lambda row: (row.decided_at, row.id))

    def begin_restore(self, decision: LedgerRow, identity: Identity | None = None) -> int:
        return self._holding(decision.id).begin_restore(decision, identity)

    def complete(
        self,
        row_id: int,
        destination: Path | None,
        identity: Identity | None = None,
        *,
        members: Mapping[int, Path | None] | None = None,
    ) -> None:
        self._holding(row_id).complete(row_id, destination, identity, members=members)

    def members(self, decision_id: int) -> list[MemberRow]:
        return self._holding(decision_id).members(decision_id)

    def fail(self, row_id: int, error: str) -> None:
        self._holding(row_id).fail(row_id, error)

    def mark_purged(self, row_id: int) -> None:
        self._holding(row_id).mark_purged(row_id)
