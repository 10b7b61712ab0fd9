"""The offline detectors side by side, through `facesieve eval`, to choose the default.

Usage: python bench/detectors.py [--data ../shared/data]

For each detector that works offline here (mtcnn; opencv and dlib after
`facesieve models --provision`), runs `facesieve eval --json` on FairFace,
UTKFace and the no-face photos and prints recall, false faces, gender accuracy,
review rate and seconds. Haar and HOG report no calibrated confidence (DeepFace
clips their scores into 0..1), so they run with the face-confidence thresholds
at 0: every detection counts as a sure face.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DETECTORS = {
    "mtcnn": "",
    "opencv": "[policy]\nmin_face_confidence = 0.0\nsure_face_confidence = 0.0\n",
    "dlib": "[policy]\nmin_face_confidence = 0.0\nsure_face_confidence = 0.0\n",
}


def facesieve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "facesieve", *args, "--log-level", "warning"],
        capture_output=True,
        text=True,
        check=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args(argv)
    print(
        f"{'detector':<9}{'folder':<10}{'recall':>8}{'false':>8}{'gender':>8}"
        f"{'review':>8}{'seconds':>9}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for detector, extra in DETECTORS.items():
            config = Path(tmp) / f"{detector}.toml"
            config.write_text(f'[models]\ndetector = "{detector}"\n{extra}')
            facesieve("models", "--provision", "--config", str(config))
            for folder in ("fairface", "utkface", "noface"):
                started = time.perf_counter()
                run = facesieve("eval", str(args.data / folder), "--json", "--config", str(config))
                seconds = time.perf_counter() - started
                if run.returncode != 0:
                    print(f"{detector:<9}{folder:<10} failed: {run.stderr.strip()[-200:]}")
                    continue
                r = json.loads(run.stdout)

                def pct(key: str, r: dict = r) -> str:
                    return "-" if r[key] is None else f"{r[key]:.1%}"

                print(
                    f"{detector:<9}{folder:<10}{pct('face_recall'):>8}"
                    f"{pct('false_face_rate'):>8}{pct('gender_accuracy'):>8}"
                    f"{pct('review_rate'):>8}{seconds:>9.1f}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
