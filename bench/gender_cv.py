"""Honest gender figures: k-fold cross-validation over ../shared/data, per group.

Usage: python bench/gender_cv.py [--folds 5] [--config F] [--data ../shared/data]
                                 [--train fairface] [--target 0.98] [--cache FILE.pkl] [--json]

The configured detector and both gender models run once per image
(facesieve.evaluation.learn.extract).
Then, for each model compared, each fold's model is fit (the head) and its
`min_gender_confidence` chosen (lowest threshold reaching --target accuracy on inner
out-of-fold predictions) on the training folds of the --train folders only, and applied
to the held-out fold. UTKFace rows are never trained on unless --train names utkface
(allowed for figures only: nothing shipped is trained on UTKFace). Figures are as
`facesieve eval` counts them (policy `require = man`, the configured face thresholds),
summed over folds, with Wilson 95% intervals; children apart.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("fairface", "utkface", "noface")


def groups_of(items: Sequence[Any]) -> dict[str, dict[str, list[Any]]]:
    """Per column: race, age_group (FairFace), age decade (UTKFace)."""
    result: dict[str, dict[str, list[Any]]] = {}
    for item in items:
        labels = item.sample.labels
        for column in ("race", "age_group"):
            if labels.get(column):
                result.setdefault(column, {}).setdefault(labels[column], []).append(item)
        if labels.get("age", "").isdigit():
            decade = int(labels["age"]) // 10 * 10
            result.setdefault("age decade", {}).setdefault(f"{decade}-{decade + 9}", []).append(
                item
            )
    return {c: dict(sorted(v.items())) for c, v in result.items()}


def summary(items: Sequence[Any], policy: Any) -> dict[str, Any]:
    from facesieve.evaluation.learn import held_out_figures, wilson

    f = held_out_figures(items, policy)
    return {
        "people": f.people,
        "found": f.found,
        "found_ci95": wilson(f.found, f.people),
        "decided": f.decided,
        "right": f.right,
        "accuracy": round(f.right / f.decided, 4) if f.decided else None,
        "accuracy_ci95": wilson(f.right, f.decided),
        "review": f.review,
        "review_rate": round(f.review / f.people, 4) if f.people else None,
        "review_ci95": wilson(f.review, f.people),
        "no_face_images": f.no_face_images,
        "false_faces": f.false_faces,
        "false_ci95": wilson(f.false_faces, f.no_face_images),
    }


def pct(part: int, whole: int, ci: Any) -> str:
    if not whole:
        return "-"
    low, high = ci
    return f"{part}/{whole} {part / whole:.1%} [{low:.1%}-{high:.1%}]"


def render(name: str, result: dict[str, Any]) -> list[str]:
    lines = [
        f"{name}: thresholds chosen per fold {result['thresholds']}",
        f"  {'':<28}{'faces found':>30}{'gender right (decided)':>32}{'review':>30}",
    ]
    for label, s in result["rows"]:
        if s["people"]:
            lines.append(
                f"  {label[:28]:<28}{pct(s['found'], s['people'], s['found_ci95']):>30}"
                f"{pct(s['right'], s['decided'], s['accuracy_ci95']):>32}"
                f"{pct(s['review'], s['people'], s['review_ci95']):>30}"
            )
        elif s["no_face_images"]:
            lines.append(
                f"  {label[:28]:<28}"
                + f"{'false ' + pct(s['false_faces'], s['no_face_images'], s['false_ci95']):>30}"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--config", type=Path)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--train", action="append", help="folders that fit (default fairface)")
    parser.add_argument("--target", type=float, default=1.0)
    parser.add_argument("--cache", type=Path, help="reuse/save the extracted features (pickle)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", help="one model: bundled, faceres or combined")
    args = parser.parse_args()

    from facesieve.config import load_config
    from facesieve.evaluation.learn import cross_validate, extract, fixed, head_fitter

    config = load_config(args.config)
    if args.cache is not None and args.cache.is_file():
        rows = pickle.loads(args.cache.read_bytes())  # your own cache file
    else:
        rows = extract([args.data / f for f in FOLDERS], config, progress=print)
        if args.cache is not None:
            args.cache.write_bytes(pickle.dumps(rows))
    train = args.train or ["fairface"]
    policy = config.policy.model_copy(update={"require": "man"})
    models = {
        "bundled (today)": fixed("bundled"),
        "faceres": fixed("faceres"),
        "combined (head + bundled + faceres)": head_fitter(),
        "average (bundled + faceres, no head)": head_fitter(combine=("bundled", "faceres")),
        "head + bundled": head_fitter(combine=("head", "bundled")),
    }
    if args.only:
        models = {n: f for n, f in models.items() if n.startswith(args.only)}
    report: dict[str, Any] = {"folds": args.folds, "train": train, "target": args.target}
    for name, fit in models.items():
        held = cross_validate(
            rows, policy, k=args.folds, train_folders=train, fit=fit, target=args.target
        )
        table: list[tuple[str, dict[str, Any]]] = []
        for folder in FOLDERS:
            mine = [h for h in held if h.folder == folder]
            adults = [h for h in mine if h.sample.is_child is not True]
            children = [h for h in mine if h.sample.is_child is True]
            table.append(
                (f"{folder} adults" if folder != "noface" else folder, summary(adults, policy))
            )
            if children:
                table.append((f"{folder} children", summary(children, policy)))
            for column, values in groups_of(adults).items():
                for value, members in values.items():
                    table.append((f"  {folder} {column} {value}", summary(members, policy)))
        thresholds = [next(h.threshold for h in held if h.fold == k) for k in range(args.folds)]
        report[name] = {"thresholds": thresholds, "rows": table}
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{args.folds}-fold CV; models and thresholds fit on the training folds of "
            f"{', '.join(train)} only (target {args.target:.0%} out of fold); "
            f"detector {config.models.detector}; counts with Wilson 95% intervals"
        )
        for name in models:
            print()
            print("\n".join(render(name, report[name])))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
