"""People settle what the model could not: `facesieve approve` / `reject`, and the review page.

A file in review is settled by a *human verdict*: keep (to `[folders] accepted`
when set, else back to exactly the path it was judged at), reject or "no human
face" (both as `[actions] reject` says: quarantine or delete). The move is the
crash-safe move of `actions.py`, written around as every action is: a pending
ledger row before it, done after (see `ledger.py`). The check that nobody else
settled the file and the pending row are one ledger transaction, so two pages
or two processes deciding one file act on it once.

An undo takes a human verdict back: the file returns to exactly where it was in
review. A deleted file cannot come back, so a deletion is never undone.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..acting.moves import (
    Action,
    delete_file,
    free_destination,
    move_file,
    restore_file,
    resume_move,
)
from ..config import Config
from ..errors import ActionError, AlreadySettledError, ExitCode, RestoreConflictError, SettleError
from ..judging.policy import Verdict
from ..ledger.reading import Fate, fate, open_ledger
from ..ledger.shards import LedgerUnion
from ..ledger.store import Ledger, LedgerRow, policy_fingerprint
from ..logs import get_logger
from .restore import add_file_choice, add_folder_argument

__all__ = [
    "Label",
    "Settled",
    "add_who_argument",
    "configure_approve",
    "configure_reject",
    "default_who",
    "in_review",
    "recover_settlements",
    "run_approve",
    "run_reject",
    "settle",
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
class Settled:
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


def _unchanged(path: Path, row: LedgerRow) -> str | None:
    """None if the file at `path` is still the one `row` recorded; else why not."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return f"{path} is no longer there"
    except OSError as error:
        return f"cannot read {path}: {error.strerror}"
    if (info.st_size, info.st_mtime_ns) != (row.size, row.mtime_ns):
        return f"{path} changed since it was judged"
    return None


def settle(
    ledger: Ledger | LedgerUnion, config: Config, decision_id: int, label: Label, who: str
) -> Settled:
    """Apply a person's verdict to a file in review, and record it.

    Raises:
        AlreadySettledError: someone settled it first, or it is not in review (now).
        SettleError: the move failed or the original path is taken; the file is
            still in review and the ledger row says why.
    """
    log = get_logger()

    def in_review_now(decision: LedgerRow) -> str | None:
        if decision.is_human or decision.action != Action.REVIEW or decision.state != "done":
            return f"ledger #{decision.id} is not a file in review"
        current, _ = fate(decision, ledger.restore_of(decision.id))
        if current is not Fate.IN_REVIEW:
            return f"ledger #{decision.id} is {current.value}"
        assert decision.destination is not None
        return _unchanged(Path(decision.destination), decision)

    decision = ledger.get(decision_id)
    if decision is None:
        raise AlreadySettledError(f"no ledger id {decision_id}")
    folders = config.resolve_folders(Path(decision.root))
    original = Path(decision.path)
    action: Action
    destination: Path | None
    if label is Label.KEEP:
        if folders.accepted is not None:
            action = Action.ACCEPT
            destination = free_destination(original, folders.root, folders.accepted)
        else:
            action, destination = Action.KEEP, original
    elif config.actions.reject == "delete":
        action, destination = Action.DELETE, None
    else:
        action = Action.QUARANTINE
        destination = free_destination(original, folders.root, folders.quarantine)
    decision, row_id = ledger.begin_human(
        decision_id,
        who=who,
        label=label.value,
        verdict=label.verdict.value,
        action=action.value,
        destination=destination,
        policy=policy_fingerprint(config.policy.model_dump()),
        check=in_review_now,
    )
    assert decision.destination is not None
    source = Path(decision.destination)
    try:
        landed: Path | None = None
        if action is Action.KEEP:
            restore_file(source, original)
            landed = original
        elif action is Action.DELETE:
            delete_file(source)
        else:
            assert destination is not None
            landed = move_file(source, destination)
    except (ActionError, OSError) as error:
        ledger.fail(row_id, str(error))
        log.warning("settle_failed", id=decision.id, label=label.value, error=str(error))
        hint = " (set [folders] accepted, or move the other file)"
        conflict = isinstance(error, RestoreConflictError)
        raise SettleError(f"{error}{hint if conflict else ''}") from error
    ledger.complete(row_id, landed)
    log.info(
        "settled",
        id=decision.id,
        verdict_id=row_id,
        label=label.value,
        who=who,
        action=action.value,
        source=str(source),
        destination=None if landed is None else str(landed),
    )
    return Settled(decision, row_id, label, action.value, source, landed)


def undo(ledger: Ledger | LedgerUnion, verdict_id: int, who: str) -> Settled:
    """Take a human verdict back: its file returns to exactly where it waited in review.

    Raises:
        AlreadySettledError: it is not the verdict settling a file now (undone,
            superseded), or its file was deleted.
        SettleError: the move failed; the file is where the verdict put it.
    """

    def movable(verdict: LedgerRow) -> str | None:
        if verdict.action == Action.DELETE:
            return f"ledger #{verdict.id} deleted its file: a deletion cannot be undone"
        if verdict.destination is None:
            return f"ledger #{verdict.id} left no file to move"
        return _unchanged(Path(verdict.destination), verdict)

    verdict, row_id = ledger.begin_undo(verdict_id, who=who, check=movable)
    assert verdict.destination is not None and verdict.ref is not None
    decision = ledger.get(verdict.ref)
    assert decision is not None and decision.destination is not None
    source, review = Path(verdict.destination), Path(decision.destination)
    try:
        restore_file(source, review)
    except ActionError as error:
        ledger.fail(row_id, str(error))
        raise SettleError(str(error)) from error
    ledger.complete(row_id, review)
    get_logger().info("undone", id=decision.id, verdict_id=verdict.id, who=who)
    label = Label(verdict.label or Label.REJECT)
    return Settled(decision, verdict.id, label, Action.REVIEW.value, source, review)


def recover_settlements(
    ledger: Ledger | LedgerUnion, older_than: timedelta = timedelta(minutes=1)
) -> int:
    """Settle human verdicts and undos a crash left pending; returns how many.

    As `Engine.recover` does for the model's decisions: a move that happened is
    completed, one that did not is marked failed (the file waits where it was).
    Rows younger than `older_than` may still be in flight in another process.
    """
    cutoff = datetime.now(UTC) - older_than
    count = 0
    for row in ledger.pending():
        if row.who is None or datetime.fromisoformat(row.decided_at) > cutoff:
            continue
        source = Path(row.path)
        if row.action == Action.DELETE:
            done, landed = not os.path.lexists(source), None
        elif row.destination is not None:
            landed = resume_move(source, Path(row.destination), row.sha256)
            done = landed is not None
        else:
            done, landed = False, None
        if done:
            ledger.complete(row.id, landed)
        else:
            ledger.fail(row.id, "interrupted before the move")
        get_logger().warning("recovered", id=row.id, action=row.action, completed=done)
        count += 1
    return count


# -- approve / reject from the command line -------------------------------------------


def add_who_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--who", metavar="NAME", help="who decides, for the ledger (default: the OS user)"
    )


def _configure(parser: argparse.ArgumentParser, *, reject: bool) -> None:
    add_folder_argument(parser)
    add_file_choice(
        parser,
        id_help="the ledger id of a decision in review (as `report` and `stats` show it)",
        path_help="a file in review, or the path it was judged at; repeatable",
    )
    if reject:
        parser.add_argument(
            "--no-face", action="store_true", help="record that it shows no human face at all"
        )
    add_who_argument(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per file on stdout")


def configure_approve(parser: argparse.ArgumentParser) -> None:
    _configure(parser, reject=False)


def configure_reject(parser: argparse.ArgumentParser) -> None:
    _configure(parser, reject=True)


def run_approve(args: argparse.Namespace, config: Config) -> int:
    return _run(args, config, Label.KEEP)


def run_reject(args: argparse.Namespace, config: Config) -> int:
    return _run(args, config, Label.NO_FACE if args.no_face else Label.REJECT)


def _chosen(ledger: Ledger | LedgerUnion, args: argparse.Namespace) -> list[int | str]:
    """Ledger ids to settle, in the order named; a string says why a name matched nothing."""
    chosen: list[int | str] = list(args.ids)
    waiting = in_review(ledger)
    for given in args.paths:
        path = os.path.abspath(given)
        matches = [d.id for d in waiting if path in (d.path, d.destination)]
        chosen.append(matches[-1] if matches else f"{path}: no file in review by that path")
    return list(dict.fromkeys(chosen))


def _run(args: argparse.Namespace, config: Config, label: Label) -> int:
    if not (args.ids or args.paths):
        print(f"facesieve {args.command}: name files with --id or --path", file=sys.stderr)
        return ExitCode.USAGE
    who = args.who or config.review.who or default_who()
    counts: Counter[str] = Counter()
    with open_ledger(config, args.folder) as ledger:
        recover_settlements(ledger)
        for item in _chosen(ledger, args):
            record: dict[str, Any]
            if isinstance(item, str):
                result, record = "not in review", {"id": None, "message": item}
            else:
                try:
                    done = settle(ledger, config, item, label, who)
                except SettleError as error:
                    result, record = "refused", {"id": item, "message": str(error)}
                else:
                    result = "settled"
                    where = "deleted" if done.where is None else str(done.where)
                    record = {**done.as_dict(), "message": f"{done.source} -> {where}"}
            counts[result] += 1
            if args.json:
                print(json.dumps({"result": result, **record}, ensure_ascii=False), flush=True)
            else:
                ident = "-" if record["id"] is None else f"#{record['id']}"
                print(f"{result:<14} {ident:<7} {record['message']}", flush=True)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"facesieve: {label.value}: {summary}", file=sys.stderr)
    return ExitCode.OK if set(counts) == {"settled"} else ExitCode.FAILURE
