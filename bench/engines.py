"""The scan engines side by side on one folder of >= 2,000 images.

    PYTHONPATH=daemon python bench/engines.py [--images 2000] [--runs w1,w2,ray2]

Builds a temporary folder from ../shared/data (its images again and again under other
names, in 40 folders), then scans a fresh copy of it with each engine, as the CLI runs:
`--workers 1`, `--workers 2`, `--engine ray --actors 2` (a local cluster the scan starts
itself). For each: images/s over the whole command and after the first result,
start-up (seconds to the first result), peak memory (the highest sum of the resident
memory of the scan's whole process tree, Ray's processes included, sampled every
0.2 s), and whether every verdict is the one `--workers 1` gave.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACESIEVE_TEST_DATA", ROOT.parent / "shared" / "data"))
RUNS = {
    "w1": ["--workers", "1"],
    "w2": ["--workers", "2"],
    "ray2": ["--engine", "ray", "--actors", "2"],
}
_PAGE = os.sysconf("SC_PAGE_SIZE")


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


def _tree_rss(root: int) -> int:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/statm") as handle:
                total += int(handle.read().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            continue
    return total


@dataclass
class Result:
    name: str
    seconds: float
    startup: float
    judged: int
    steady: float
    peak_bytes: int
    verdicts: dict[str, str]
    code: int


def run(name: str, folder: Path) -> Result:
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
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.2):
            peak = max(peak, _tree_rss(process.pid))

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
    return Result(name, seconds, first, len(verdicts), steady, peak, verdicts, code)


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
        for name in names:
            folder = Path(scratch) / name
            shutil.copytree(template, folder)
            results.append(run(name, folder))
            print(f"{name}: done in {results[-1].seconds:.1f} s", file=sys.stderr, flush=True)
    base = results[0]
    print(f"{args.images} images, {os.cpu_count()} CPUs; verdicts compared with {base.name}")
    print(
        "| run | exit | judged | seconds | images/s (whole run) | images/s (after first) "
        "| start-up s | peak memory GB | verdicts same as first run |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        same = sum(r.verdicts.get(path) == verdict for path, verdict in base.verdicts.items())
        print(
            f"| {' '.join(RUNS[r.name])} | {r.code} | {r.judged} | {r.seconds:.1f} "
            f"| {r.judged / r.seconds:.1f} | {r.steady:.1f} | {r.startup:.1f} "
            f"| {r.peak_bytes / 1e9:.2f} | {same}/{len(base.verdicts)} |"
        )
    for r in results[1:]:
        print(
            f"ratio {r.name}/{base.name}: whole run {base.seconds / r.seconds:.2f}x, "
            f"after first result {r.steady / base.steady:.2f}x"
            if base.steady
            else ""
        )


if __name__ == "__main__":
    main()
