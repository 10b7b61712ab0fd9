"""`facesieve check --paths-from -` as a co-process: ms per file once the models are loaded.

Usage: python bench/coprocess.py [--data ../shared/data] [--files 20] [--rounds 3]

A hook that keeps one `check --paths-from - --json` running pays for loading the
models once (`bench/startup.py` measures that start-up), then only for each file.
For `require = face` (no gender model) and `require = man`, this starts one such
process and times it to its answer on one photo (start-up and model load; one
process at a time), then writes FairFace photos one at a time, each only after the
previous answer, and prints the start-up seconds and the median and slowest ms
from writing a path to reading its answer line. The variants take turns each
round, so machine load hits them alike.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import time
from argparse import ArgumentParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIRES = ("face", "man")


class Coprocess:
    """One `check --paths-from - --json`, asked one path at a time."""

    def __init__(self, require: str) -> None:
        command = [sys.executable, "-m", "facesieve", "check", "--paths-from", "-", "--json"]
        command += ["--require", require, "--log-level", "warning"]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )

    def ask(self, path: Path) -> tuple[float, str]:
        """Seconds from writing `path` to reading its answer, and the verdict."""
        assert self.process.stdin is not None and self.process.stdout is not None
        started = time.perf_counter()
        self.process.stdin.write(os.fsencode(path) + b"\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        seconds = time.perf_counter() - started
        if not line:
            raise SystemExit(f"check ended before answering {path}")
        return seconds, str(json.loads(line)["verdict"])

    def close(self) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        code = self.process.wait(60)
        self.process.stdout.close()
        return code


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the photos")
    args = parser.parse_args(argv)
    folder = args.data / "fairface"
    with (folder / "labels.csv").open(newline="") as handle:
        photos = [folder / row["file"] for row in csv.DictReader(handle)][: args.files + 1]
    warm_up, timed = photos[0], photos[1:]
    coprocesses: dict[str, Coprocess] = {}
    startup: dict[str, float] = {}
    for require in REQUIRES:  # one at a time: two model loads would slow each other
        started = time.perf_counter()
        coprocesses[require] = Coprocess(require)
        coprocesses[require].ask(warm_up)
        startup[require] = time.perf_counter() - started
    times: dict[str, list[float]] = {require: [] for require in REQUIRES}
    verdicts: dict[str, dict[str, int]] = {require: {} for require in REQUIRES}
    for _ in range(args.rounds):
        for photo in timed:
            for require in REQUIRES:
                seconds, verdict = coprocesses[require].ask(photo)
                times[require].append(seconds * 1000)
                verdicts[require][verdict] = verdicts[require].get(verdict, 0) + 1
    codes = {require: coprocesses[require].close() for require in REQUIRES}
    print(
        f"check --paths-from - --json: {len(timed)} FairFace photos x {args.rounds} rounds, "
        "one path at a time, after one warm-up photo"
    )
    print(f"{'require':<9}{'start-up s':>11}{'median ms':>11}{'max ms':>9}  verdicts, exit")
    for require in REQUIRES:
        values = times[require]
        counts = ", ".join(f"{k} {v}" for k, v in sorted(verdicts[require].items()))
        print(
            f"{require:<9}{startup[require]:>11.2f}{statistics.median(values):>11.1f}"
            f"{max(values):>9.1f}  {counts}, exit {codes[require]}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
