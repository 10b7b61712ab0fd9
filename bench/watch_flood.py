"""`facesieve watch` while an uploader churns folders into symlinks: upload latency.

Usage: python bench/watch_flood.py [--data ../shared/data] [--folders 120]
                                   [--seconds 60] [--every 1.0]

Starts the real daemon on a temporary inbox (no timer pass: `reconcile_interval`
an hour, so only events and the passes the daemon asks for itself count), runs
tests/flood_attack.py against it for `--seconds` (`--folders` tiny folders, each
holding symlinks to the inbox and to `..`, swapped for a symlink to the inbox
round after round), and meanwhile copies a real photo into the inbox every
`--every` seconds. Prints the swaps made, the close-to-decision latency of the
uploads (p50, p95, max), uploads never decided, the daemon's RSS when ready and
at its peak, and what its log counted (folders walked, passes, watch failures).
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ATTACK = ROOT / "tests" / "flood_attack.py"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def events(log: Path) -> list[dict]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return found


def wait_for(log: Path, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.get("event") == name for e in events(log)):
            return
        time.sleep(0.2)
    raise TimeoutError(f"no {name!r} in {timeout} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--folders", type=int, default=120)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=1.0)
    args = parser.parse_args(argv)
    with (args.data / "utkface" / "labels.csv").open(newline="") as handle:
        pool = [args.data / "utkface" / r["file"] for r in csv.DictReader(handle)][:50]
    with tempfile.TemporaryDirectory(prefix="facesieve-flood-bench-") as tmp:
        inbox = Path(tmp) / "inbox"
        inbox.mkdir()
        config = Path(tmp) / "facesieve.toml"
        config.write_text(
            f'[folders]\ninbox = "{inbox}"\n[logging]\nformat = "json"\n'
            "[watch]\nreconcile_interval = 3600.0\nsettle_seconds = 1.0\n"
        )
        log = Path(tmp) / "log.jsonl"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        with log.open("wb") as out:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "facesieve", "watch", "--config", str(config)],
                stdout=out,
                stderr=subprocess.DEVNULL,
                env=env,
            )
            try:
                wait_for(log, "reconciled", 300)
                ready_rss = peak_rss_mb(daemon.pid)
                attack = ["--folders", str(args.folders), "--seconds", str(args.seconds)]
                attacker = subprocess.Popen(
                    [sys.executable, str(ATTACK), str(inbox), "--rounds", "1000000", *attack],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                written: dict[str, float] = {}
                while attacker.poll() is None:
                    path = inbox / f"upload{len(written):04d}.jpg"
                    shutil.copyfile(pool[len(written) % len(pool)], path)
                    written[str(path)] = time.time()
                    time.sleep(args.every)
                swaps = attacker.communicate()[0].split()[-1]
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    decided = {
                        e["path"]: datetime.fromisoformat(e["timestamp"]).timestamp()
                        for e in events(log)
                        if e.get("event") == "decision"
                    }
                    if set(written) <= set(decided):
                        break
                    time.sleep(0.5)
                peak_rss = peak_rss_mb(daemon.pid)
            finally:
                daemon.send_signal(signal.SIGTERM)
                code = daemon.wait(120)
        latency = [decided[p] - t for p, t in written.items() if p in decided]
        counted = collections.Counter(e.get("event") for e in events(log))
    print(f"attack: {args.folders} folders, {swaps} swaps in {args.seconds:.0f} s")
    print(
        f"uploads: {len(written)}, decided {len(latency)}; close->decision "
        f"p50 {percentile(latency, 0.5):.2f} s, p95 {percentile(latency, 0.95):.2f} s, "
        f"max {max(latency):.2f} s"
        if latency
        else f"uploads: {len(written)}, none decided"
    )
    print(f"daemon RSS: {ready_rss:.0f} MB when ready, peak {peak_rss:.0f} MB")
    print(
        f"log: folder_arrived {counted['folder_arrived']}, reconciled {counted['reconciled']}, "
        f"arrivals_deferred {counted['arrivals_deferred']}, watch_failed {counted['watch_failed']}"
        f", lines {sum(counted.values())}; exit code on SIGTERM {code}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
