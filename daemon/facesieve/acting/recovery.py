"""One recovery of a pending ledger row, for every caller that finds one.

A pending row announces a move (or a delete) that a crash may have cut short:
the file is at its source, at its destination, or (between a link and an unlink)
at both, never nowhere. Recovery finds which, completes the row when the action
had happened (a source lingering beside its copy goes, if it is still the inode
the row moved, with its bytes) and fails it when it had not, so the file is
judged or decided again where it is. A sample's members follow its image
(`samples`): an image that had moved takes every member still behind with it.

Who may take over which row:
  - a model's decision is written only by the ledger's one writer (a scan or a
    watch holding its lock), so that writer (`decisions=True`) recovers every
    such row it finds: whoever wrote it is gone;
  - a follow-up row (a restore, a person's verdict, an undo) is written by
    `restore`, `approve`, `reject` and the review page, which hold no lock, so
    one younger than `PENDING_GUARD` may be another process's move in flight:
    every caller leaves it alone until it is older.

Used by a scan or a watch starting (`Applier.recover`), by the people's desk
(`approve`, `reject`, the review page) and by `restore`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from ..intake.safefs import Folder, Identity
from ..ledger.store import UNDO, LedgerRow, MemberRow
from ..logs import get_logger
from .moves import Action, Places, finish_restore, identity_of, resume_move
from .samples import follow, recover_members

__all__ = [
    "PENDING_GUARD",
    "PendingLedger",
    "Recovered",
    "base_for",
    "in_flight",
    "is_follow_up",
    "recover_one",
    "recover_pending",
    "recover_row",
]

# A follow-up row younger than this may still be moving its file in another process.
PENDING_GUARD = timedelta(minutes=1)
# The actions that put a file back at one exact name, never a `~N` one.
_EXACT = (Action.RESTORE.value, UNDO, Action.KEEP.value)
_INTERRUPTED = "interrupted before the action; judged again"


class PendingLedger(Protocol):
    """What recovery uses of a ledger (`Ledger` or `LedgerUnion`)."""

    def pending(self) -> list[LedgerRow]: ...

    def complete(
        self,
        row_id: int,
        destination: Path | None,
        identity: Identity | None = None,
        *,
        members: Mapping[int, Path | None] | None = None,
    ) -> None: ...

    def fail(self, row_id: int, error: str) -> None: ...

    def members(self, decision_id: int) -> list[MemberRow]: ...

    def get(self, row_id: int) -> LedgerRow | None: ...


@dataclass(frozen=True, slots=True)
class Recovered:
    """One pending row recovered: completed (the file at `landed`) or failed (`reason`)."""

    row: LedgerRow
    completed: bool
    landed: Path | None
    reason: str


def is_follow_up(row: LedgerRow) -> bool:
    """A restore, a person's verdict or an undo: a row written without the ledger's lock."""
    return row.ref is not None and (row.is_restore or row.is_human or row.is_undo)


def in_flight(
    row: LedgerRow, older_than: timedelta = PENDING_GUARD, now: datetime | None = None
) -> bool:
    """Whether a pending follow-up row is young enough to be another process's move."""
    cutoff = (now or datetime.now(UTC)) - older_than
    return datetime.fromisoformat(row.decided_at) > cutoff


def base_for(places: Places | None, path: Path) -> Folder | None:
    """The held folder below which `path` lies; None (walk from `/`) when outside all."""
    if places is None:
        return None
    try:
        base, _ = places.base_of(path)
    except ValueError:
        return None
    return base


def recover_row(
    row: LedgerRow, places: Places | None, later: Sequence[LedgerRow] = ()
) -> tuple[bool, Path | None, str]:
    """(completed?, where the file landed, why not) for one pending row, seen as its move
    (`Ledger.pending`): from `path` to `destination`.

    `later`: rows about the same path written since; then a lingering source is
    someone's file again and nothing is touched.
    """
    source = Path(row.path)
    if row.action == Action.DELETE:
        now = identity_of(source, base_for(places, source))
        if now is None or (row.inode is not None and (now.dev, now.ino) != row.inode):
            return True, None, ""
        return False, None, _INTERRUPTED
    if row.destination is None or row.destination == row.path:
        return True, None, ""
    destination = Path(row.destination)
    bases = {"source_base": base_for(places, source)}
    if row.action in _EXACT:
        if not finish_restore(
            source,
            destination,
            row.sha256,
            original_base=base_for(places, destination),
            inode=row.inode,
            **bases,
        ):
            return False, None, _INTERRUPTED
        return True, destination, ""
    landed = resume_move(
        source,
        destination,
        row.sha256,
        planned_base=base_for(places, destination),
        inode=row.inode,
        drop_source=not later,
        **bases,
    )
    if landed is None:
        return False, None, _INTERRUPTED
    if later:
        # Judged or restored since: its file is someone's again; touch nothing.
        return False, None, f"superseded by ledger #{later[0].id}; files left as they are"
    return True, landed, ""


def _finish(ledger: PendingLedger, places: Places | None, row: LedgerRow, found: Recovered) -> None:
    if found.completed:
        identity = None
        if row.action in _EXACT and found.landed is not None:
            # A file put back at its name: the ledger knows it as it is now.
            identity = identity_of(found.landed, base_for(places, found.landed))
        # A sample's image had moved: its members still behind follow it now.
        if is_follow_up(row):
            members = _follow_up_members(ledger, places, row, found.landed)
        else:
            members = recover_members(ledger, places, row, True)
        ledger.complete(row.id, found.landed, identity, members=members)
    else:
        ledger.fail(row.id, found.reason)
    get_logger().warning(
        "recovered",
        id=row.id,
        path=row.path,
        action=row.action,
        completed=found.completed,
        destination=None if found.landed is None else str(found.landed),
        reason=found.reason,
    )


def _follow_up_members(
    ledger: PendingLedger, places: Places | None, row: LedgerRow, landed: Path | None
) -> dict[int, Path | None]:
    """A restore's, a person's verdict's or an undo's image had moved: the members of
    the decision it follows go the same way (`samples.follow`)."""
    decision: LedgerRow | None = row
    while decision is not None and decision.ref is not None:
        decision = ledger.get(decision.ref)
    if decision is None:
        return {}
    exact = row.action in _EXACT or row.is_undo
    return follow(ledger, places, decision, landed, exact=exact)


def recover_one(
    ledger: PendingLedger,
    places: Places | None,
    row: LedgerRow,
    later: Sequence[LedgerRow] = (),
) -> Recovered:
    """Recover one pending row (as its move) and record the outcome; no age guard here."""
    completed, landed, why = recover_row(row, places, later)
    found = Recovered(row, completed, landed, why)
    _finish(ledger, places, row, found)
    return found


def recover_pending(
    ledger: PendingLedger,
    places: Places | None,
    *,
    decisions: bool,
    later_rows: Callable[[LedgerRow], list[LedgerRow]] | None = None,
    older_than: timedelta = PENDING_GUARD,
) -> list[Recovered]:
    """Recover every pending row this caller may take over; returns what it did.

    `decisions`: the caller holds the ledger's writer lock, so the model's pending
    decisions are recovered too. Follow-up rows younger than `older_than` are left
    alone, whoever calls. `later_rows`: rows about a row's path written since it.
    """
    now = datetime.now(UTC)
    done: list[Recovered] = []
    for row in ledger.pending():
        if is_follow_up(row):
            if in_flight(row, older_than, now):
                continue
        elif not decisions:
            continue
        later = later_rows(row) if later_rows is not None and not row.is_restore else []
        done.append(recover_one(ledger, places, row, later))
    return done
