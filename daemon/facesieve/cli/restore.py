"""`facesieve restore`: move quarantined or reviewed files back where they were judged."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from ..acting.recovery import recover_pending
from ..config import Config
from ..errors import ExitCode
from ..ledger.reading import open_ledger, restorable
from ..ledger.shards import LedgerUnion
from ..ledger.store import Ledger, LedgerRow
from ..paths import json_safe
from ..people.restore import RESTORABLE_VERDICTS, Result, _Done, _places, _restore
from .arguments import add_file_choice, add_folder_argument, argument_type, parse_since

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace, config: Config) -> int:
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


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text)
