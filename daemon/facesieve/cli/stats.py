"""`facesieve stats [--json]`: what the ledger says, in numbers (`people.stats`)."""

from __future__ import annotations

import argparse
import json

from ..config import Config
from ..errors import ExitCode
from ..ledger.reading import open_ledger
from ..paths import json_safe
from ..people.stats import _text, collect
from .arguments import add_folder_argument

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    add_folder_argument(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument(
        "--latest", type=int, default=10, metavar="N", help="how many latest decisions to list"
    )
    parser.add_argument(
        "--days", type=int, default=14, metavar="N", help="how many days to list (0: all)"
    )


def run(args: argparse.Namespace, config: Config) -> int:
    with open_ledger(config, args.folder) as ledger:
        figures = collect(ledger, latest=args.latest, days=args.days)
    if args.json:
        print(json.dumps(json_safe(figures), ensure_ascii=False, indent=2))
    else:
        print(_text(figures))
    return ExitCode.OK
