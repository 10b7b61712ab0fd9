"""`approve` and `reject`: a person's verdict on files in review, from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from typing import Any

from ..config import Config, review_folders
from ..errors import ExitCode, HumanVerdictError
from ..ledger.reading import open_ledger
from ..ledger.shards import LedgerUnion
from ..ledger.store import Ledger
from ..people.desk import Label, default_who, give_verdict, in_review, recover_pending_moves
from .arguments import add_file_choice, add_folder_argument, add_who_argument

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser, *, reject: bool) -> None:
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


def _chosen(ledger: Ledger | LedgerUnion, args: argparse.Namespace) -> list[int | str]:
    """Ledger ids to settle, in the order named; a string says why a name matched nothing."""
    chosen: list[int | str] = list(args.ids)
    waiting = in_review(ledger)
    for given in args.paths:
        path = os.path.abspath(given)
        matches = [d.id for d in waiting if path in (d.path, d.destination)]
        chosen.append(matches[-1] if matches else f"{path}: no file in review by that path")
    return list(dict.fromkeys(chosen))


def run(args: argparse.Namespace, config: Config, label: Label) -> int:
    if not (args.ids or args.paths):
        print(f"facesieve {args.command}: name files with --id or --path", file=sys.stderr)
        return ExitCode.USAGE
    who = args.who or config.review.who or default_who()
    counts: Counter[str] = Counter()
    with open_ledger(config, args.folder) as ledger:
        recover_pending_moves(ledger, review_folders(config, args.folder), config.actions.mode)
        for item in _chosen(ledger, args):
            record: dict[str, Any]
            if isinstance(item, str):
                result, record = "not in review", {"id": None, "message": item}
            else:
                try:
                    done = give_verdict(ledger, config, item, label, who)
                except HumanVerdictError as error:
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
