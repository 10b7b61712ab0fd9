"""`facesieve eval`: measure the engine on a labelled folder, or on what people settled."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import Config
from ..errors import ConfigError, ExitCode
from ..evaluation.evaluate import analyze, load_samples, plot, render, report
from ..evaluation.human_eval import figures, reviewed
from ..evaluation.human_eval import render as human_eval_render
from ..ledger.reading import open_ledger

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "folder",
        type=Path,
        nargs="?",
        metavar="PATH",
        help="a folder with labels.csv; with --ledger, the folder that was scanned",
    )
    parser.add_argument(
        "--ledger",
        action="store_true",
        help="measure the model on the images people settled (human verdicts in the ledger)",
    )
    parser.add_argument(
        "--require",
        choices=("face", "man", "woman"),
        help="with --ledger: the policy people settled under (policy.require)",
    )
    parser.add_argument("--json", action="store_true", help="the figures as one JSON object")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the coverage curve")


def run(args: argparse.Namespace, config: Config) -> int:
    if args.ledger:
        return _run_ledger_eval(args, config)
    if args.folder is None:
        raise ConfigError("PATH", "name a folder with labels.csv, or use --ledger")
    samples = analyze(args.folder, load_samples(args.folder), config)
    result = report(samples, config.policy)
    if args.plot is not None:
        plot(result["curve"], config.policy.min_gender_confidence, args.plot)
    if args.json:
        print(json.dumps(result))
    else:
        print(render(result))
    sys.stdout.flush()
    return 0


def _run_ledger_eval(args: argparse.Namespace, config: Config) -> int:
    with open_ledger(config, args.folder) as ledger:
        result = figures(reviewed(ledger), config.policy)
    if args.json:
        print(json.dumps(result))
    else:
        print(human_eval_render(result))
    sys.stdout.flush()
    return ExitCode.OK
