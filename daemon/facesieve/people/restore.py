"""`facesieve restore` and `facesieve purge`: undoing a decision, and letting one go.

Both read the ledger to choose their files and write it around every file they
touch: a restore is a row of its own, pending before the move and done after
(see `ledger.py`), and a purge stamps the decision's `purged_at`. The moves and
deletes themselves are `actions.py`'s.

Which ledger: the folder named on the command line, else `[folders] inbox`, else
`[ledger] path` (see `config.review_folders`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..acting.moves import Places, identity_of, restore_file
from ..acting.recovery import in_flight, recover_one
from ..acting.samples import follow
from ..config import Config, review_folders
from ..errors import ActionError, RestoreConflictError
from ..intake.safefs import Folder
from ..ledger.reading import restorable
from ..ledger.shards import LedgerUnion
from ..ledger.store import Ledger, LedgerRow
from ..logs import get_logger

__all__ = ["RESTORABLE_VERDICTS", "restore_decision"]


RESTORABLE_VERDICTS = ("reject", "review", "unreadable")


# -- restore -------------------------------------------------------------------------


class Result(StrEnum):
    RESTORED = "restored"
    WOULD_RESTORE = "would restore"  # --dry-run
    CONFLICT = "conflict"
    MISSING = "missing"
    NOT_RESTORABLE = "not restorable"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class _Done:
    result: Result
    message: str
    decision: LedgerRow | None = None
    ident: str = ""

    def as_dict(self) -> dict[str, Any]:
        decision = self.decision
        return {
            "id": None if decision is None else decision.id,
            "verdict": None if decision is None else decision.verdict,
            "from": None if decision is None else decision.destination,
            "to": None if decision is None else decision.path,
            "result": self.result.value,
            "message": self.message,
        }

    def line(self) -> str:
        label = f"#{self.decision.id}" if self.decision is not None else self.ident
        return f"{self.result.value:<14} {label:<7} {self.message}"


def restore_decision(ledger: Ledger, decision: LedgerRow) -> str | None:
    """Move one decision's file back to where it was judged; None, or why it was not."""
    why = restorable(decision, ledger.restore_of(decision.id))
    if why is not None:
        return why
    done = _restore(ledger, None, decision, ledger.restore_of(decision.id), dry_run=False)
    return None if done.result is Result.RESTORED else done.message


def _places(config: Config, folder: Path | None) -> Places:
    """The folders restore and purge act in, refused if a state folder is planted."""
    places = Places(review_folders(config, folder), mode=config.actions.mode)
    try:
        places.check_state_folders()
    except BaseException:
        places.close()
        raise
    return places


def _bases(places: Places, decision: LedgerRow) -> tuple[Folder | None, Folder]:
    """Where a decision's file is (its state folder, if a known one) and the root it goes back to.

    Raises:
        OSError: the root cannot be opened without following a symlink.
    """
    assert decision.destination is not None
    try:
        source_base: Folder | None = places.base_of(Path(decision.destination))[0]
    except ValueError:
        source_base = None  # a folder of an earlier config: walked from / without symlinks
    root = Path(decision.root)
    if root == places.root.path:
        return source_base, places.root
    return source_base, places.extra_root(root)


def _restore(
    ledger: Ledger | LedgerUnion,
    places: Places | None,
    decision: LedgerRow,
    restore: LedgerRow | None,
    *,
    dry_run: bool,
) -> _Done:
    assert decision.destination is not None
    source, original = Path(decision.destination), Path(decision.path)
    log = get_logger()
    source_base: Folder | None = None
    original_base: Folder | None = None
    if places is not None:
        try:
            source_base, original_base = _bases(places, decision)
        except OSError as error:
            return _Done(Result.ERROR, f"cannot open {decision.root}: {error}", decision)
    if restore is not None and restore.state == "pending" and not dry_run:
        resumed = _resume(ledger, places, decision, restore)
        if resumed is not None:
            return resumed
    if dry_run:
        return _would_restore(decision)
    if not os.path.lexists(source):
        return _Done(Result.MISSING, f"{source} is no longer there", decision)
    # The row names the inode that goes back: a recovery acts on that one alone.
    moving = identity_of(source, source_base)
    row_id = ledger.begin_restore(decision, moving)
    try:
        mode = places.mode if places is not None else 0o640
        identity = restore_file(
            source,
            original,
            source_base=source_base,
            original_base=original_base,
            mode=mode,
            expected=moving,
            # An earlier restore of this file (a row of its own) may have left a partial.
            resumed=restore is not None,
        )
    except RestoreConflictError as error:
        ledger.fail(row_id, str(error))
        log.warning("restore_conflict", id=decision.id, path=str(original), source=str(source))
        return _Done(Result.CONFLICT, str(error), decision)
    except ActionError as error:
        ledger.fail(row_id, str(error))
        log.warning("restore_failed", id=decision.id, path=str(original), error=str(error))
        return _Done(Result.ERROR, str(error), decision)
    # The sample's members come back with their image, each to its own name.
    members = follow(ledger, places, decision, original, exact=True)
    ledger.complete(row_id, original, identity, members=members)
    log.info("restored", id=decision.id, path=str(original), source=str(source))
    return _Done(Result.RESTORED, f"{source} -> {original}", decision)


def _resume(
    ledger: Ledger | LedgerUnion, places: Places | None, decision: LedgerRow, restore: LedgerRow
) -> _Done | None:
    """The pending `restore` of `decision` finished if its file had reached its place;
    None if it had not (the restore is to be done again)."""
    assert decision.destination is not None
    source, original = Path(decision.destination), Path(decision.path)
    if in_flight(restore):
        # Maybe another `restore` moving it right now: never taken over.
        why = f"being restored (ledger #{restore.id}, pending); try again in a minute"
        return _Done(Result.ERROR, why, decision)
    # A restore cut short: finish it if the file had reached its place.
    move = replace(restore, path=str(source), destination=str(original))
    if recover_one(ledger, places, move).completed:
        get_logger().info("restored", id=decision.id, path=str(original), resumed=True)
        return _Done(Result.RESTORED, f"{source} -> {original} (finished)", decision)
    return None


def _would_restore(decision: LedgerRow) -> _Done:
    """What restoring `decision` would do, nothing moved (`--dry-run`)."""
    assert decision.destination is not None
    source, original = Path(decision.destination), Path(decision.path)
    if not os.path.lexists(source):
        return _Done(Result.MISSING, f"{source} is no longer there", decision)
    if os.path.lexists(original):
        return _Done(Result.CONFLICT, f"{original} exists; would leave {source}", decision)
    return _Done(Result.WOULD_RESTORE, f"{source} -> {original}", decision)
