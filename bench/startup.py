"""`facesieve check` of one image, wall time, for the default detector and for MTCNN.

Usage: python bench/startup.py [--data ../shared/data] [--repeat 5]

A scraper hook calls `facesieve check FILE` once per file, so start-up is what each
file pays. Runs, interleaved so that machine load hits every variant alike, a fresh
`python -m facesieve check IMAGE --json` per run for each detector (libfacedetection,
the default, and DeepFace's mtcnn) and each policy (`require = face`, which loads
no gender model, and `require = man`), and prints the median and slowest wall time
of each, the ratio against mtcnn, and whether TensorFlow was imported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The CLI in-process, then one line naming whether TensorFlow got imported.
WRAPPER = (
    "import sys; from facesieve.cli.main import main; code = main(sys.argv[1:]); "
    "print('TF' if 'tensorflow' in sys.modules else 'noTF', code)"
)


def run(image: Path, config: Path, require: str) -> tuple[float, str]:
    command = [sys.executable, "-c", WRAPPER, "check", str(image), "--json"]
    command += ["--config", str(config), "--require", require, "--log-level", "warning"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    seconds = time.perf_counter() - started
    lines = result.stdout.splitlines()
    verdict = json.loads(lines[0])["verdict"]
    return seconds, f"{verdict}, {lines[-1].split()[0]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    image = args.data / "fairface" / "fairface_0010.jpg"
    variants = [(d, r) for d in ("libfacedetection", "mtcnn") for r in ("face", "man")]
    times: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
    notes: dict[tuple[str, str], str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        configs = {}
        for detector in ("libfacedetection", "mtcnn"):
            configs[detector] = Path(tmp) / f"{detector}.toml"
            configs[detector].write_text(f'[models]\ndetector = "{detector}"\n')
        for variant in variants:  # once untimed: the OS file cache, not start-up, warms here
            run(image, configs[variant[0]], variant[1])
        for _ in range(args.repeat):
            for variant in variants:
                seconds, notes[variant] = run(image, configs[variant[0]], variant[1])
                times[variant].append(seconds)
    print(f"facesieve check {image.name}: wall time of a fresh process, {args.repeat} runs")
    print(f"{'detector':<18}{'require':<9}{'median s':>9}{'max s':>8}{'vs mtcnn':>10}  verdict, TF")
    for detector, require in variants:
        values = times[(detector, require)]
        ratio = statistics.median(times[("mtcnn", require)]) / statistics.median(values)
        print(
            f"{detector:<18}{require:<9}{statistics.median(values):>9.2f}{max(values):>8.2f}"
            f"{ratio:>9.1f}x  {notes[(detector, require)]}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
