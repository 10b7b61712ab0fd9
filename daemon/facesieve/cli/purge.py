"""`facesieve purge --older-than D`: delete quarantined files past their retention."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from ..acting.moves import purge_file
from ..acting.samples import purge_members
from ..config import Config
from ..errors import ActionError, ExitCode
from ..ledger.reading import open_ledger, purgeable
from ..logs import get_logger
from ..paths import json_safe
from ..people.restore import _places
from .arguments import add_folder_argument, argument_type, parse_duration

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace, config: Config) -> int:
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
