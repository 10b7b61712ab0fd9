"""The scan engines side by side on one folder of >= 2,000 images.

    PYTHONPATH=daemon python bench/engines.py [--images 2000] [--runs w1,w2,ray2]

Builds a temporary folder from ../shared/data (its images again and again under other
names, in 40 folders), then scans a fresh copy of it with each engine, as the CLI runs:
`--workers 1`, `--workers 2`, `--engine ray --actors 2` (a local cluster the scan starts
itself). For each: images/s over the whole command and after the first result,
start-up (seconds to the first result), and peak memory of the scan's whole process
tree (Ray's processes included, sampled every 0.2 s) as PSS: shared pages divided
among the processes that map them, so the sum over the tree counts each page once
(`bench/proctree.py`; peak USS, the private pages only, beside it). Then every pair of
runs is compared: verdicts that agree, out of the paths either judged, and the speed
ratios, so no run is compared with itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from proctree import tree_memory  # bench/proctree.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACESIEVE_TEST_DATA", ROOT.parent / "shared" / "data"))
RUNS = {
    "w1": ["--workers", "1"],
    "w2": ["--workers", "2"],
    "ray2": ["--engine", "ray", "--actors", "2"],
}


def build(folder: Path, count: int) -> None:
    sources = sorted(
        p for sub in ("fairface", "utkface", "noface", "groups") for p in (DATA / sub).glob("*.jpg")
    )
    if not sources:
        sys.exit(f"no images under {DATA}: ../shared/data is needed")
    for n in range(count):
        target = folder / f"batch{n % 40:02d}" / f"img{n:05d}{sources[n % len(sources)].suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources[n % len(sources)], target)


@dataclass
class Result:
    name: str
    label: str  # the run's name and its place in --runs, as a run may repeat
    seconds: float
    startup: float
    judged: int
    steady: float
    peak_pss: int
    peak_uss: int
    verdicts: dict[str, str]
    code: int


def run(name: str, folder: Path, label: str) -> Result:
    command = [sys.executable, "-m", "facesieve", "scan", str(folder), "--json", *RUNS[name]]
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        errors="surrogateescape",
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    peak_pss = peak_uss = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_pss, peak_uss
        while not done.wait(0.2):
            memory = tree_memory(process.pid)
            peak_pss, peak_uss = max(peak_pss, memory.pss), max(peak_uss, memory.uss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    verdicts: dict[str, str] = {}
    first = last = 0.0
    assert process.stdout is not None
    with process.stdout:
        for line in process.stdout:
            now = time.perf_counter() - started
            first = first or now
            last = now
            record = json.loads(line)
            verdicts[os.path.relpath(record["path"], folder)] = record["verdict"]
    code = process.wait()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    steady = (len(verdicts) - 1) / (last - first) if last > first else 0.0
    return Result(
        name, label, seconds, first, len(verdicts), steady, peak_pss, peak_uss, verdicts, code
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--runs", default="w1,w2,ray2")
    args = parser.parse_args()
    names = args.runs.split(",")
    with tempfile.TemporaryDirectory(prefix="facesieve-engines-") as scratch:
        template = Path(scratch) / "template"
        build(template, args.images)
        results = []
        for index, name in enumerate(names):
            folder = Path(scratch) / f"{index}-{name}"  # `--runs w1,w1` compares w1 with a rerun
            shutil.copytree(template, folder)
            results.append(run(name, folder, f"{name}#{index + 1}"))
            print(
                f"{results[-1].label}: done in {results[-1].seconds:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    print(f"{args.images} images, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(
        "| run | flags | exit | judged | seconds | images/s (whole run) | images/s (after first) "
        "| start-up s | peak PSS GB (tree) | peak USS GB (tree) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.label} | {' '.join(RUNS[r.name])} | {r.code} | {r.judged} | {r.seconds:.1f} "
            f"| {r.judged / r.seconds:.1f} | {r.steady:.1f} | {r.startup:.1f} "
            f"| {r.peak_pss / 1e9:.2f} | {r.peak_uss / 1e9:.2f} |"
        )
    if len(results) < 2:
        print("one run: nothing to compare it with")
    for a, b in pairs(results):
        print(compare(a, b))


def pairs(results: list[Result]) -> list[tuple[Result, Result]]:
    """Every two different runs, in the order of --runs: a run is never its own reference."""
    return list(combinations(results, 2))


def compare(a: Result, b: Result) -> str:
    """Verdict agreement and speed of run `b` against run `a`: two different runs."""
    paths = a.verdicts.keys() | b.verdicts.keys()
    same = sum(a.verdicts.get(path) == b.verdicts.get(path) for path in paths)
    only = len(a.verdicts.keys() ^ b.verdicts.keys())
    steady = f"{b.steady / a.steady:.2f}x" if a.steady and b.steady else "n/a"
    return (
        f"{b.label} against {a.label}: verdicts the same for {same}/{len(paths)} paths "
        f"({only} judged by one run only); {b.label} ran {a.seconds / b.seconds:.2f}x "
        f"{a.label}'s speed over the whole run, {steady} after the first result"
    )


if __name__ == "__main__":
    main()
