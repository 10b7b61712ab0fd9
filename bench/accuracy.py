"""Accuracy of `facesieve scan --dry-run --json` on a copy of ../shared/data.

Usage: python bench/accuracy.py [--require man] [--config F] [--data ../shared/data]

Copies the labelled data to a temporary folder, runs the real CLI on it as a user
would, joins its JSON lines with labels.csv, and prints the figures the engine
issue asks for: faces found on adult FairFace/UTKFace photos, false faces on the
no-face photos, gender accuracy on decided adult faces, and the review rate.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("fairface", "utkface", "noface", "groups")


def is_adult(folder: str, row: dict[str, str]) -> bool:
    from facesieve.evaluation.evaluate import is_child

    return is_child(row) is not True


def load_labels(data: Path) -> dict[tuple[str, str], dict[str, str]]:
    labels = {}
    for folder in FOLDERS:
        with (data / folder / "labels.csv").open(newline="") as handle:
            for row in csv.DictReader(handle):
                labels[(folder, row["file"])] = row
    return labels


def run_scan(copy: Path, require: str, config: Path | None) -> tuple[list[dict], float]:
    command = [
        sys.executable,
        "-m",
        "facesieve",
        "scan",
        str(copy),
        "--dry-run",
        "--json",
        "--require",
        require,
        "--log-level",
        "warning",
    ]
    if config is not None:
        command += ["--config", str(config)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()], seconds


def summarise(records: list[dict], copy: Path, labels: dict, require: str) -> dict[str, float]:
    by_key = {}
    for record in records:
        relative = Path(record["path"]).relative_to(copy)
        by_key[(relative.parts[0], relative.name)] = record
    figures: dict[str, float] = {}
    for folder in ("fairface", "utkface"):
        rows = [(k, r) for k, r in labels.items() if k[0] == folder and is_adult(folder, r)]
        judged = [(by_key[k], r) for k, r in rows if k in by_key]
        found = sum(1 for rec, _ in judged if rec["faces"])
        decided = [(rec, r) for rec, r in judged if rec["verdict"] in ("keep", "reject")]
        wanted = {"man": "male", "woman": "female"}.get(require)

        def right(pairs: list, wanted: str | None = wanted) -> int:
            return sum(
                (rec["verdict"] == "keep") == (wanted is None or r["gender"] == wanted)
                for rec, r in pairs
            )

        # Gender on decided faces leaves out images rejected for showing no face.
        with_face = [(rec, r) for rec, r in decided if rec["faces"]]
        review = sum(1 for rec, _ in judged if rec["verdict"] == "review")
        figures[f"{folder}_adults"] = len(rows)
        figures[f"{folder}_face_found"] = found / len(judged)
        figures[f"{folder}_gender_right_on_decided_faces"] = right(with_face) / len(with_face)
        figures[f"{folder}_verdict_right_on_decided_images"] = right(decided) / len(decided)
        figures[f"{folder}_review_rate"] = review / len(judged)
    noface = [by_key[k] for k in labels if k[0] == "noface" and k in by_key]
    figures["noface_photos"] = len(noface)
    figures["noface_false_face"] = sum(1 for rec in noface if rec["faces"]) / len(noface)
    figures["noface_kept"] = sum(1 for rec in noface if rec["verdict"] == "keep") / len(noface)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--require", default="man", choices=("face", "man", "woman"))
    parser.add_argument("--config", type=Path)
    parser.add_argument("--save", type=Path, help="also write the JSON lines here")
    args = parser.parse_args(argv)
    if not (args.data / "fairface" / "labels.csv").is_file():
        print(f"no labelled data at {args.data}", file=sys.stderr)
        return 2
    labels = load_labels(args.data)
    with tempfile.TemporaryDirectory(prefix="facesieve-accuracy-") as tmp:
        copy = Path(tmp) / "data"
        for folder in FOLDERS:
            shutil.copytree(args.data / folder, copy / folder)
        records, seconds = run_scan(copy, args.require, args.config)
        if args.save is not None:
            args.save.write_text("".join(json.dumps(r) + "\n" for r in records))
        figures = summarise(records, copy, labels, args.require)
    print(
        f"facesieve scan --dry-run --json --require {args.require}: "
        f"{len(records)} images in {seconds:.1f} s"
    )
    for key, value in figures.items():
        shown = f"{value:.1%}" if isinstance(value, float) and value <= 1 else f"{value:g}"
        print(f"  {key:<42} {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
