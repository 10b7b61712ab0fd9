"""`facesieve report --html FILE`: a page of what was removed and why (`people.report`)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

from ..config import Config, split_address
from ..errors import ExitCode
from ..ledger.reading import Fate, fate, open_ledger, restorable
from ..outputs import write_output
from ..people.report import REPORTED, Item, per_day, render, thumbnail
from .arguments import add_folder_argument, argument_type, parse_since

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    add_folder_argument(parser)
    parser.add_argument(
        "--html", type=Path, required=True, metavar="FILE", help="the page to write"
    )
    parser.add_argument(
        "--since",
        type=argument_type(parse_since),
        metavar="WHEN",
        help="only decisions at or after WHEN: a duration back (12h, 7d) or an ISO date/time",
    )
    parser.add_argument(
        "--review-url",
        metavar="URL",
        help="the review page that files in review link to "
        "(default: http://<review.address>/, as `facesieve review` serves it)",
    )
    parser.add_argument(
        "--thumb-size",
        type=argument_type(_thumb_size),
        default=240,
        metavar="PX",
        help="longest side of a thumbnail (16 to 2048; default 240)",
    )


def _thumb_size(text: str) -> int:
    size = int(text)
    if not 16 <= size <= 2048:
        raise ValueError(f"{size} is not between 16 and 2048")
    return size


def run(args: argparse.Namespace, config: Config) -> int:
    command = _command_prefix(args, "restore")
    review_url = args.review_url or _review_url(config)
    with open_ledger(config, args.folder) as ledger:
        everything = ledger.decisions()
        restores = ledger.restores()
        source = str(ledger.path)
    if args.since is not None:
        everything = [d for d in everything if datetime.fromisoformat(d.decided_at) >= args.since]
    decisions = [d for d in everything if not d.is_human]
    items = []
    for decision in reversed(decisions):
        if decision.verdict not in REPORTED:
            continue
        restore = restores.get(decision.id)
        current, where = fate(decision, restore)
        waiting = current is Fate.IN_REVIEW
        items.append(
            Item(
                decision=decision,
                fate=current,
                where=where,
                thumb=None if where is None else thumbnail(where, args.thumb_size, config),
                restore_command=(
                    f"{command} --id {decision.id}"
                    if restorable(decision, restore) is None and not waiting
                    else None
                ),
                review_link=f"{review_url}#id={decision.id}" if waiting else None,
                settle_commands=tuple(
                    f"{_command_prefix(args, verb)} --id {decision.id}"
                    for verb in ("approve", "reject")
                )
                if waiting
                else (),
            )
        )
    people = []
    for human in reversed([d for d in everything if d.is_human]):
        current, where = fate(human, restores.get(human.id))
        people.append(
            Item(
                decision=human,
                fate=current,
                where=where,
                thumb=None if where is None else thumbnail(where, args.thumb_size, config),
                restore_command=None,
            )
        )
    page = render(
        items, per_day(decisions), ledger=source, generated=datetime.now(UTC), people=people
    )
    # Never through a symlink planted at FILE; readers see the old page or the new one.
    write_output(args.html, page)
    print(f"facesieve: {len(items)} files in {args.html}", file=sys.stderr)
    return ExitCode.OK


def _review_url(config: Config) -> str:
    host, port = split_address(config.review.address, any_port=True)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def _command_prefix(args: argparse.Namespace, verb: str) -> str:
    """`facesieve VERB` with what finds this same ledger again."""
    words = ["facesieve", verb]
    if args.config is not None:
        words += ["--config", os.path.abspath(args.config)]
    if args.folder is not None:
        words.append(os.path.abspath(args.folder))
    return shlex.join(words)
