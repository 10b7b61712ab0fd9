"""`facesieve restore` and `facesieve purge`: undoing a decision, and letting one go.

Both read the ledger to choose their files and write it around every file they
touch: a restore is a row of its own, pending before the move and done after
(see `ledger.py`), and a purge stamps the decision's `purged_at`. The moves and
deletes themselves are `actions.py`'s.

Which ledger: the folder named on the command line, else `[folders] inbox`, else
`[ledger] path` (see `config.review_folders`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from ..acting.moves import Places, identity_of, purge_file, restore_file
from ..acting.recovery import in_flight, recover_one, recover_pending
from ..acting.samples import follow, purge_members
from ..config import Config, review_folders
from ..errors import ActionError, ExitCode, RestoreConflictError
from ..intake.safefs import Folder
from ..ledger.reading import open_ledger, purgeable, restorable
from ..ledger.shards import LedgerUnion
from ..ledger.store import Ledger, LedgerRow
from ..logs import get_logger
from ..paths import json_safe

__all__ = [
    "RESTORABLE_VERDICTS",
    "add_file_choice",
    "add_folder_argument",
    "argument_type",
    "configure_purge",
    "configure_restore",
    "parse_duration",
    "parse_since",
    "restore_decision",
    "run_purge",
    "run_restore",
]

_T = TypeVar("_T")

RESTORABLE_VERDICTS = ("reject", "review", "unreadable")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `2w`, `45s`, or several at once (`1d12h`).

    Raises:
        ValueError: not a duration, or zero.
    """
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    if not parts or _DURATION.sub("", compact).strip():
        raise ValueError(f"{text!r} is not a duration such as 30d, 12h, 90m or 2w")
    seconds = sum(float(amount) * _UNITS[unit] for amount, unit in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return timedelta(seconds=seconds)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """A moment: a duration back from now (`2h`), or an ISO date or time (UTC unless given).

    Raises:
        ValueError: neither.
    """
    try:
        return (now or datetime.now(UTC)) - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (12h, 7d) nor a date (2024-05-01T12:00)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def argument_type(parse: Callable[[str], _T]) -> Callable[[str], _T]:
    """An argparse `type` that reports a bad value as a usage error (exit 2)."""

    def convert(text: str) -> _T:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from error

    convert.__name__ = parse.__name__
    return convert


def add_folder_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "folder",
        type=Path,
        nargs="?",
        metavar="DIR",
        help="the folder that was scanned (default: folders.inbox, or ledger.path, of --config)",
    )


def add_file_choice(
    parser: argparse.ArgumentParser, *, id_help: str, path_help: str
) -> argparse._ArgumentGroup:
    """`--id N` and `--path FILE` (both repeatable) in a group of their own, returned
    so that a command can add its own ways of choosing files to it."""
    which = parser.add_argument_group("which files (at least one)")
    which.add_argument(
        "--id", dest="ids", type=int, action="append", default=[], metavar="N", help=id_help
    )
    which.add_argument(
        "--path",
        dest="paths",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help=path_help,
    )
    return which


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text)


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


def configure_restore(parser: argparse.ArgumentParser) -> None:
    add_folder_argument(parser)
    which = add_file_choice(
        parser,
        id_help="the ledger id of a decision (as `report` and `stats` show it); repeatable",
        path_help="a file in quarantine or review, or the path it was judged at; repeatable",
    )
    which.add_argument(
        "--all", action="store_true", help="every file in quarantine or review (see filters)"
    )
    narrow = parser.add_argument_group("filters (narrow any selection)")
    narrow.add_argument(
        "--since",
        type=argument_type(parse_since),
        metavar="WHEN",
        help="moved there at or after WHEN: a duration back (12h, 7d) or an ISO date/time",
    )
    narrow.add_argument(
        "--verdict",
        dest="verdicts",
        choices=RESTORABLE_VERDICTS,
        action="append",
        default=[],
        help="only this verdict; repeatable",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="say what would happen; move nothing"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per file on stdout")


def run_restore(args: argparse.Namespace, config: Config) -> int:
    if not (args.ids or args.paths or args.all):
        print("facesieve restore: name files with --id or --path, or use --all", file=sys.stderr)
        return ExitCode.USAGE
    with open_ledger(config, args.folder) as ledger, _places(config, args.folder) as places:
        recover_pending(ledger, places, decisions=False)
        restores = ledger.restores()
        done = [
            item
            if isinstance(item, _Done)
            else _restore(ledger, places, item, restores.get(item.id), dry_run=args.dry_run)
            for item in _select(ledger, restores, args)
        ]
    counts: Counter[str] = Counter()
    for item in done:
        counts[item.result.value] += 1
        if args.json:
            print(json.dumps(json_safe(item.as_dict()), ensure_ascii=False), flush=True)
        else:
            print(item.line(), flush=True)
    summary = ", ".join(
        f"{result.value} {counts[result.value]}" for result in Result if counts[result]
    )
    print(f"facesieve: {summary or 'nothing to restore'}", file=sys.stderr)
    ok = {Result.RESTORED.value, Result.WOULD_RESTORE.value}
    return ExitCode.OK if set(counts) <= ok else ExitCode.FAILURE


def _select(
    ledger: Ledger | LedgerUnion, restores: dict[int, LedgerRow], args: argparse.Namespace
) -> list[LedgerRow | _Done]:
    """The files asked for: decisions to restore in ledger order, after why others cannot be."""
    decisions = ledger.decisions()
    chosen: dict[int, LedgerRow] = {}
    named: set[int] = set()  # by --id or --path: told why when a filter leaves it out
    selected: list[LedgerRow | _Done] = []
    if args.all:
        for decision in decisions:
            if restorable(decision, restores.get(decision.id)) is None:
                chosen[decision.id] = decision
    # By --id, then by --path: each the decision to restore, or why there is none.
    asked = itertools.chain(
        (_by_id(ledger, restores, ident) for ident in args.ids),
        (_by_path(decisions, restores, given) for given in args.paths),
    )
    for found in asked:
        if isinstance(found, _Done):
            selected.append(found)
        else:
            chosen[found.id] = found
            named.add(found.id)
    for decision in sorted(chosen.values(), key=lambda d: d.id):
        excluded = _excluded(decision, args.since, args.verdicts)
        if excluded is None:
            selected.append(decision)
        elif decision.id in named:
            selected.append(_Done(Result.NOT_RESTORABLE, excluded, decision))
    return selected


def _by_id(
    ledger: Ledger | LedgerUnion, restores: dict[int, LedgerRow], ident: int
) -> LedgerRow | _Done:
    """The decision of ledger id `ident` if it can be restored, else why not."""
    row = ledger.get(ident)
    why = "no such ledger id" if row is None else restorable(row, restores.get(row.id))
    if row is not None and why is None:
        return row
    return _Done(Result.NOT_RESTORABLE, str(why), None, f"#{ident}")


def _by_path(
    decisions: Sequence[LedgerRow], restores: dict[int, LedgerRow], given: str
) -> LedgerRow | _Done:
    """The latest restorable decision about `given` (its path or where it went), else why
    the latest one about it cannot be restored."""
    path = os.path.abspath(given)
    matches = [d for d in decisions if path in (d.path, d.destination)]
    candidates = [d for d in matches if restorable(d, restores.get(d.id)) is None]
    if candidates:
        return candidates[-1]
    why = (
        restorable(matches[-1], restores.get(matches[-1].id))
        if matches
        else "the ledger has no decision about this path"
    )
    return _Done(Result.NOT_RESTORABLE, f"{path}: {why}", None, "-")


def _excluded(decision: LedgerRow, since: datetime | None, verdicts: Sequence[str]) -> str | None:
    if verdicts and decision.verdict not in verdicts:
        return f"verdict {decision.verdict}: excluded by --verdict"
    if since is not None and _when(decision.moved_at) < since:
        return f"moved at {decision.moved_at}: excluded by --since"
    return None


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


# -- purge ---------------------------------------------------------------------------


def configure_purge(parser: argparse.ArgumentParser) -> None:
    add_folder_argument(parser)
    parser.add_argument(
        "--older-than",
        required=True,
        type=argument_type(parse_duration),
        metavar="DURATION",
        help="retention: delete files quarantined longer ago than this (30d, 12h, 90m, 2w)",
    )
    parser.add_argument("--dry-run", action="store_true", help="say what would go; delete nothing")
    parser.add_argument("--json", action="store_true", help="one JSON object per file on stdout")


def run_purge(args: argparse.Namespace, config: Config) -> int:
    cutoff = datetime.now(UTC) - args.older_than
    log = get_logger()
    counts: Counter[str] = Counter()
    with open_ledger(config, args.folder) as ledger, _places(config, args.folder) as places:
        for decision in purgeable(ledger.decisions(), ledger.restores(), cutoff):
            assert decision.destination is not None
            path = Path(decision.destination)
            if args.dry_run:
                result, message = "would purge", str(path)
            else:
                try:
                    base = places.base_of(path)[0] if places.is_state(path) else None
                    purge_members(ledger, places, decision)  # the sample goes whole
                    existed = purge_file(path, decision.sha256, base=base)
                except ActionError as error:
                    result, message = "error", str(error)
                else:
                    ledger.mark_purged(decision.id)
                    result = "purged" if existed else "gone"
                    message = str(path) if existed else f"{path} was already gone"
                    log.info("purged", id=decision.id, path=str(path), existed=existed)
            counts[result] += 1
            if args.json:
                record = {
                    "id": decision.id,
                    "verdict": decision.verdict,
                    "path": str(path),
                    "original": decision.path,
                    "quarantined_at": decision.moved_at,
                    "result": result,
                    "message": message,
                }
                print(json.dumps(json_safe(record), ensure_ascii=False), flush=True)
            else:
                print(f"{result:<12} #{decision.id:<6} {message}", flush=True)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(
        f"facesieve: {summary or 'nothing to purge'} (quarantined before {cutoff.isoformat()})",
        file=sys.stderr,
    )
    return ExitCode.FAILURE if counts["error"] else ExitCode.OK
