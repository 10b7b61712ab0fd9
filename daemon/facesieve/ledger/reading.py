"""What every reviewing command reads: the ledger with its shards, and what became of a decision.

`open_ledger` is the one way a command or the review page opens the ledger to read
(and settle, restore or purge): the plain ledger and every shard a Ray scan wrote
beside it, as one (`shards.LedgerUnion`). `fate` says where a decided file is now,
from its rows alone; `restorable` and `purgeable` are the rules `restore`, `purge`,
`report` and `rejudge` apply to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from ..acting.moves import Action
from ..config import Config, review_folders
from .shards import LedgerUnion
from .store import LedgerRow

__all__ = ["Fate", "fate", "open_ledger", "purgeable", "restorable"]

_MOVED_AWAY = (Action.QUARANTINE.value, Action.REVIEW.value)


def open_ledger(config: Config, folder: Path | None) -> LedgerUnion:
    """The ledger a reviewing command reads, with its shards if a Ray scan wrote any
    (`shards.LedgerUnion`); it must exist."""
    return LedgerUnion.open_existing(review_folders(config, folder).ledger)


class Fate(StrEnum):
    """Where a decided file is now, as far as facesieve knows."""

    LEFT = "left in place"
    ACCEPTED = "accepted"
    QUARANTINED = "quarantined"
    IN_REVIEW = "in review"
    DELETED = "deleted"
    RESTORED = "restored"
    PURGED = "purged"
    SETTLED = "settled by a person"  # the model's decision; see the human verdict
    UNDONE = "undone"  # a human verdict taken back: the file went back to review


def fate(decision: LedgerRow, restore: LedgerRow | None) -> tuple[Fate, Path | None]:
    """What became of a completed decision's file, and where the file is now (None: nowhere)."""
    if restore is not None and restore.state == "done":
        return Fate.RESTORED, Path(decision.path)
    if decision.settled_by is not None:
        return Fate.SETTLED, None
    if decision.undone_by is not None:
        return Fate.UNDONE, None
    if decision.purged_at is not None:
        return Fate.PURGED, None
    if decision.action == Action.DELETE:
        return Fate.DELETED, None
    if decision.left_in_place:
        return Fate.LEFT, Path(decision.path)
    assert decision.destination is not None
    by_action = {
        Action.QUARANTINE.value: Fate.QUARANTINED,
        Action.REVIEW.value: Fate.IN_REVIEW,
        Action.ACCEPT.value: Fate.ACCEPTED,
    }
    return by_action.get(decision.action, Fate.QUARANTINED), Path(decision.destination)


def restorable(decision: LedgerRow, restore: LedgerRow | None) -> str | None:
    """None if `restore` can move this decision's file back; else why not."""
    if decision.is_restore:
        return f"ledger #{decision.id} records a restore, not a decision"
    if decision.state != "done":
        return f"ledger #{decision.id} is {decision.state}: its file stayed where it was"
    current, _ = fate(decision, restore)
    if current in (Fate.QUARANTINED, Fate.IN_REVIEW) and decision.action in _MOVED_AWAY:
        return None
    return f"ledger #{decision.id} is {current.value}"


def purgeable(
    decisions: Iterable[LedgerRow], restores: dict[int, LedgerRow], cutoff: datetime
) -> list[LedgerRow]:
    """Quarantined files moved there before `cutoff`, neither restored (or being) nor purged."""
    found = []
    for decision in decisions:
        restore = restores.get(decision.id)
        if restore is not None and restore.state != "failed":
            continue
        current, _ = fate(decision, restore)
        quarantined = current is Fate.QUARANTINED and decision.action == Action.QUARANTINE
        if quarantined and datetime.fromisoformat(decision.moved_at) < cutoff:
            found.append(decision)
    return found
