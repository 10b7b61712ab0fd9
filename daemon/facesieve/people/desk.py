"""People settle what the model could not: `facesieve approve` / `reject`, and the review page.

A file in review is settled by a *human verdict*: keep (to `[folders] accepted`
when set, else back to exactly the path it was judged at), reject or "no human
face" (both as `[actions] reject` says: quarantine or delete). The move is the
engine's crash-safe move (`acting.moves`, through the held folders of `Places`,
with `[actions] mode`, only for the file that still holds the judged bytes),
written around as every action is: a pending ledger row before it, done after
(see `ledger.store`). The check that nobody else settled the file and the
pending row are one ledger transaction, so two pages or two processes deciding
one file act on it once. A row a crash left pending is recovered, as every
caller recovers one, by `acting.recovery` (`recover_pending_moves`).

An undo takes a human verdict back: the file returns to exactly where it was in
review. A deleted file cannot come back, so a deletion is never undone.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..acting.moves import (
    Action,
    Places,
    content_identity,
    delete_file,
    free_destination,
    identity_of,
    move_file,
    restore_file,
)
from ..acting.recovery import base_for, recover_pending
from ..acting.samples import follow
from ..config import Config, ResolvedFolders
from ..errors import (
    ActionError,
    AlreadyHasVerdictError,
    HumanVerdictError,
    RestoreConflictError,
    UnsafeFolderError,
)
from ..intake.safefs import Identity
from ..judging.policy import Verdict
from ..ledger.reading import Fate, fate
from ..ledger.shards import LedgerUnion
from ..ledger.store import Ledger, LedgerRow, policy_fingerprint
from ..logs import get_logger

__all__ = [
    "HumanVerdict",
    "Label",
    "default_who",
    "give_verdict",
    "in_review",
    "recover_pending_moves",
    "undo",
]


class Label(StrEnum):
    """What a person says about an image in review."""

    KEEP = "keep"  # it shows what the policy requires
    REJECT = "reject"  # it does not
    NO_FACE = "no_face"  # it shows no human face at all

    @property
    def verdict(self) -> Verdict:
        return Verdict.KEEP if self is Label.KEEP else Verdict.REJECT


@dataclass(frozen=True, slots=True)
class HumanVerdict:
    """A human verdict applied: the file moved from `source` to `where` (None: deleted)."""

    decision: LedgerRow  # the model's decision it settles
    verdict_id: int
    label: Label
    action: str
    source: Path
    where: Path | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.decision.id,
            "verdict_id": self.verdict_id,
            "label": self.label.value,
            "action": self.action,
            "from": str(self.source),
            "to": None if self.where is None else str(self.where),
        }


def default_who() -> str:
    """The OS user running facesieve: who settled a file, unless `--who` says otherwise."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def in_review(ledger: Ledger | LedgerUnion) -> list[LedgerRow]:
    """The model's decisions whose files wait in review for a person, oldest first."""
    restores = ledger.restores()
    waiting = []
    for decision in ledger.decisions():
        if decision.is_human or decision.action != Action.REVIEW:
            continue
        current, where = fate(decision, restores.get(decision.id))
        if current is Fate.IN_REVIEW and where is not None and os.path.lexists(where):
            waiting.append(decision)
    return waiting


def _checked(places: Places, path: Path | None, row: LedgerRow) -> Identity | str:
    """The file at `path`, if it still holds the bytes `row` judged (its identity then,
    which the move will insist on); else why not."""
    if path is None:
        return f"ledger #{row.id} left no file to move"
    base = base_for(places, path)
    if identity_of(path, base) is None:
        return f"{path} is no longer there"
    judged = content_identity(path, base, row.sha256)
    if judged is None:
        return f"{path} changed since it was judged"
    return judged


def _open_places(folders: ResolvedFolders, mode: int) -> Places:
    """The folders a person's move works in, held; refused if a state folder is planted.

    Raises:
        HumanVerdictError: the inbox cannot be opened, or a state folder is unsafe.
    """
    try:
        places = Places(folders, mode=mode)
    except OSError as error:
        raise HumanVerdictError(f"cannot open {folders.root}: {error}") from error
    try:
        places.check_state_folders()
    except (OSError, UnsafeFolderError) as error:
        places.close()
        raise HumanVerdictError(str(error)) from error
    return places


def _plan(config: Config, folders: ResolvedFolders, label: Label) -> tuple[Action, Path | None]:
    """The action for a person's verdict and the folder it moves the file into
    (None: back to its own path for a keep, nowhere for a delete)."""
    if label is Label.KEEP:
        if folders.accepted is not None:
            return Action.ACCEPT, folders.accepted
        return Action.KEEP, None
    if config.actions.reject == "delete":
        return Action.DELETE, None
    return Action.QUARANTINE, folders.quarantine


def give_verdict(
    ledger: Ledger | LedgerUnion, config: Config, decision_id: int, label: Label, who: str
) -> HumanVerdict:
    """Apply a person's verdict to a file in review, and record it.

    The move is the engine's: through the held folders (`Places`), with
    `[actions] mode`, and only for the file in review that still holds the judged
    bytes (its sha256), as checked before the ledger row and insisted on by the move.

    Raises:
        AlreadyHasVerdictError: someone settled it first, or it is not in review (now),
            or its file changed since it was judged.
        HumanVerdictError: the move failed or the original path is taken; the file is
            still in review and the ledger row says why.
    """
    decision = ledger.get(decision_id)
    if decision is None:
        raise AlreadyHasVerdictError(f"no ledger id {decision_id}")
    folders = config.resolve_folders(Path(decision.root))
    original = Path(decision.path)
    action, folder = _plan(config, folders, label)
    destination: Path | None = original if action is Action.KEEP else None
    if folder is not None:
        destination = free_destination(original, folders.root, folder)
    with _open_places(folders, config.actions.mode) as places:
        waiting = None if decision.destination is None else Path(decision.destination)
        checked = _checked(places, waiting, decision)

        def in_review_now(decision: LedgerRow) -> str | None:
            if decision.is_human or decision.action != Action.REVIEW or decision.state != "done":
                return f"ledger #{decision.id} is not a file in review"
            current, _ = fate(decision, ledger.restore_of(decision.id))
            if current is not Fate.IN_REVIEW:
                return f"ledger #{decision.id} is {current.value}"
            return checked if isinstance(checked, str) else None

        # The row names the inode the verdict moves: a recovery acts on that one alone.
        decision, row_id = ledger.begin_human(
            decision_id,
            who=who,
            label=label.value,
            verdict=label.verdict.value,
            action=action.value,
            destination=destination,
            policy=policy_fingerprint(config.policy.model_dump()),
            check=in_review_now,
            identity=checked if isinstance(checked, Identity) else None,
        )
        assert decision.destination is not None and isinstance(checked, Identity)
        source = Path(decision.destination)
        try:
            landed, put_back = _act(places, action, source, destination, decision.sha256, checked)
        except ActionError as error:
            ledger.fail(row_id, str(error))
            get_logger().warning(
                "settle_failed", id=decision.id, label=label.value, error=str(error)
            )
            hint = " (set [folders] accepted, or move the other file)"
            conflict = isinstance(error, RestoreConflictError)
            raise HumanVerdictError(f"{error}{hint if conflict else ''}") from error
        # The sample's members go wherever the person sent its image.
        members = follow(ledger, places, decision, landed, exact=action is Action.KEEP)
    ledger.complete(row_id, landed, put_back, members=members)
    get_logger().info(
        "settled",
        id=decision.id,
        verdict_id=row_id,
        label=label.value,
        who=who,
        action=action.value,
        source=str(source),
        destination=None if landed is None else str(landed),
    )
    return HumanVerdict(decision, row_id, label, action.value, source, landed)


def _act(
    places: Places,
    action: Action,
    source: Path,
    destination: Path | None,
    sha256: str,
    expected: Identity,
) -> tuple[Path | None, Identity | None]:
    """Carry out a person's verdict on the checked file: where it landed, and the
    identity of a file put back at its exact name.

    Raises:
        ActionError: nothing was moved (RestoreConflictError: the name is taken).
    """
    if action is Action.DELETE:
        delete_file(source, base=base_for(places, source), sha256=sha256, expected=expected)
        return None, None
    assert destination is not None
    if action is Action.KEEP:
        put_back = restore_file(
            source,
            destination,
            source_base=base_for(places, source),
            original_base=base_for(places, destination),
            mode=places.mode,
            sha256=sha256,
            expected=expected,
        )
        return destination, put_back
    landed = move_file(
        source,
        destination,
        mode=places.mode,
        base=base_for(places, destination),
        source_base=base_for(places, source),
        sha256=sha256,
        expected=expected,
    )
    return landed, None


def undo(
    ledger: Ledger | LedgerUnion, verdict_id: int, who: str, config: Config | None = None
) -> HumanVerdict:
    """Take a human verdict back: its file returns to exactly where it waited in review.

    Moved as `settle` moves (held folders, `[actions] mode` of `config`, the judged
    bytes only).

    Raises:
        AlreadyHasVerdictError: it is not the verdict settling a file now (undone,
            superseded), or its file was deleted or changed.
        HumanVerdictError: the move failed; the file is where the verdict put it.
    """
    config = config or Config()
    known = ledger.get(verdict_id)
    if known is None:
        raise AlreadyHasVerdictError(f"ledger #{verdict_id} is not a human verdict")
    folders = config.resolve_folders(Path(known.root))
    with _open_places(folders, config.actions.mode) as places:
        where = None if known.destination is None else Path(known.destination)
        checked = _checked(places, where, known) if known.action != Action.DELETE else ""

        def movable(verdict: LedgerRow) -> str | None:
            if verdict.action == Action.DELETE:
                return f"ledger #{verdict.id} deleted its file: a deletion cannot be undone"
            if verdict.destination is None:
                return f"ledger #{verdict.id} left no file to move"
            return checked if isinstance(checked, str) else None

        verdict, row_id = ledger.begin_undo(
            verdict_id,
            who=who,
            check=movable,
            identity=checked if isinstance(checked, Identity) else None,
        )
        assert verdict.destination is not None and verdict.ref is not None
        assert isinstance(checked, Identity)
        decision = ledger.get(verdict.ref)
        assert decision is not None and decision.destination is not None
        source, review = Path(verdict.destination), Path(decision.destination)
        try:
            _, put_back = _act(places, Action.KEEP, source, review, verdict.sha256, checked)
        except ActionError as error:
            ledger.fail(row_id, str(error))
            raise HumanVerdictError(str(error)) from error
        members = follow(ledger, places, decision, review, exact=True)
    ledger.complete(row_id, review, put_back, members=members)
    get_logger().info("undone", id=decision.id, verdict_id=verdict.id, who=who)
    label = Label(verdict.label or Label.REJECT)
    return HumanVerdict(decision, verdict.id, label, Action.REVIEW.value, source, review)


def recover_pending_moves(ledger: Ledger | LedgerUnion, folders: ResolvedFolders, mode: int) -> int:
    """Finish or fail the restores, human verdicts and undos a crash left pending;
    returns how many. The one recovery (`acting.recovery`), with its age guard: a
    row younger than a minute may still be in flight in another process. The
    model's own pending decisions are left to the scan or watch that owns the ledger.
    """
    try:
        places = Places(folders, mode=mode)
    except OSError:  # the inbox is gone: rows carry absolute paths, walked from `/`
        return len(recover_pending(ledger, None, decisions=False))
    with places:
        return len(recover_pending(ledger, places, decisions=False))
