"""`facesieve watch` under load: close-to-decision latency and memory.

Usage: python bench/watch_latency.py [--data ../shared/data] [--idle 30] [--burst 1000]
                                     [--rss 500,5000]

Starts the real daemon on a temporary inbox and measures, from its JSON log:
  - latency from a file's close (its writer's clock) to its `decision` event,
    p50 and p95, idle (one file at a time) and during a burst;
  - the peak memory of the daemon's whole process tree after N images (the daemon and
    its decoder child, which decodes every image apart from the models), to show growth
    stays bounded. The tree is sampled every 0.2 s and counted as PSS (shared pages
    divided among the processes that map them, `bench/proctree.py`), with the daemon's
    and the child's share beside it; the daemon's own VmHWM alone would leave the child
    out, and summed RSS would count the pages they share twice.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from proctree import Memory, process_memory, tree_memory  # bench/proctree.py

ROOT = Path(__file__).resolve().parents[1]


def photos(data: Path) -> list[Path]:
    with (data / "utkface" / "labels.csv").open(newline="") as handle:
        faces = [data / "utkface" / r["file"] for r in csv.DictReader(handle)][:60]
    with (data / "fairface" / "labels.csv").open(newline="") as handle:
        wild = [data / "fairface" / r["file"] for r in csv.DictReader(handle)][:30]
    with (data / "noface" / "labels.csv").open(newline="") as handle:
        cats = [data / "noface" / r["file"] for r in csv.DictReader(handle)][:30]
    return faces + wild + cats


class Watch:
    def __init__(self, inbox: Path, workdir: Path) -> None:
        config = workdir / "facesieve.toml"
        config.write_text(f'[folders]\ninbox = "{inbox}"\n[logging]\nformat = "json"\n')
        self.log = workdir / "log.jsonl"
        self._out = self.log.open("wb")
        self._offset = 0
        self._events: list[dict] = []
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "facesieve", "watch", "--config", str(config)],
            stdout=self._out,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self.peak = Memory()
        self.peak_daemon = Memory()
        self.peak_children = Memory()
        self._sampling = threading.Event()
        self._peaks_lock = threading.Lock()  # the sampler thread and sample() both update
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        self.wait(lambda e: e.get("event") == "ready", 1, 300)

    def _sample(self) -> None:
        while not self._sampling.wait(0.2):
            self.sample()

    def sample(self) -> None:
        """Take one reading of the tree now (the sampler thread takes one every 0.2 s)."""
        tree = tree_memory(self.process.pid)
        daemon = process_memory(self.process.pid)
        children = Memory(
            tree.pss - daemon.pss,
            tree.uss - daemon.uss,
            tree.rss - daemon.rss,
            tree.processes - daemon.processes,
        )
        with self._peaks_lock:
            if tree.pss > self.peak.pss:
                self.peak = tree
            if daemon.pss > self.peak_daemon.pss:
                self.peak_daemon = daemon
            if children.pss > self.peak_children.pss:
                self.peak_children = children

    def memory_line(self) -> str:
        """Peak PSS of the tree so far, and the peaks of its two parts (MiB)."""
        return (
            f"peak PSS {self.peak.pss / 2**20:.0f} MiB over {self.peak.processes} processes "
            f"(daemon alone {self.peak_daemon.pss / 2**20:.0f} MiB, its children: the decoder "
            f"{self.peak_children.pss / 2**20:.0f} MiB; the tree's USS at its peak "
            f"{self.peak.uss / 2**20:.0f} MiB)"
        )

    def events(self) -> list[dict]:
        """Parsed log events, read incrementally so that polling stays cheap."""
        with self.log.open("rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.splitlines():
            try:
                self._events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return self._events

    def decisions(self) -> dict[str, float]:
        return {
            e["path"]: datetime.fromisoformat(e["timestamp"]).timestamp()
            for e in self.events()
            if e.get("event") == "decision"
        }

    def wait(self, match, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(1 for e in self.events() if match(e)) >= count:
                return
            time.sleep(0.1)
        raise TimeoutError(f"waited {timeout} s for {count} events")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(120)
        self._sampling.set()
        self._sampler.join()
        self._out.close()
        return code


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def put(source: Path, target: Path) -> float:
    shutil.copyfile(source, target)
    return time.time()  # the close happened inside copyfile, just before this


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--idle", type=int, default=30)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--rss", default="500,5000")
    args = parser.parse_args(argv)
    pool = photos(args.data)
    checkpoints = sorted(int(n) for n in args.rss.split(","))
    with tempfile.TemporaryDirectory(prefix="facesieve-watch-bench-") as tmp:
        inbox = Path(tmp) / "inbox"
        inbox.mkdir()
        watch = Watch(inbox, Path(tmp))
        watch.sample()
        print(f"load average {os.getloadavg()[0]:.1f}; daemon ready: {watch.memory_line()}")

        closed: dict[str, float] = {}
        for index in range(args.idle):
            path = inbox / f"idle_{index:04d}.jpg"
            closed[str(path)] = put(pool[index % len(pool)], path)
            watch.wait(
                lambda e, p=str(path): e.get("path") == p and e.get("event") == "decision", 1, 60
            )
            time.sleep(0.2)
        decided = watch.decisions()
        idle = [(decided[p] - t) * 1000 for p, t in closed.items()]
        print(
            f"idle, {len(idle)} files one at a time: close->decision "
            f"p50 {percentile(idle, 0.5):.0f} ms, p95 {percentile(idle, 0.95):.0f} ms"
        )

        judged = args.idle
        rss: dict[int, float] = {}

        def fill_to(target: int) -> None:
            nonlocal judged
            for index in range(max(0, target - judged)):
                put(pool[index % len(pool)], inbox / f"rss_{target}_{index:05d}.jpg")
            judged = max(judged, target)
            watch.wait(lambda e: e.get("event") == "decision", judged, 3600)
            watch.sample()
            rss[target] = watch.peak.pss / 2**20
            print(f"after {judged} images: {watch.memory_line()}")

        fill_to(checkpoints[0])
        closed = {}
        for index in range(args.burst):
            path = inbox / f"burst_{index:05d}.jpg"
            closed[str(path)] = put(pool[index % len(pool)], path)
        judged += args.burst
        watch.wait(lambda e: e.get("event") == "decision", judged, 1800)
        decided = watch.decisions()
        burst = [(decided[p] - t) * 1000 for p, t in closed.items()]
        p50, p95 = percentile(burst, 0.5) / 1000, percentile(burst, 0.95) / 1000
        print(
            f"burst of {len(burst)} files: close->decision p50 {p50:.1f} s, p95 {p95:.1f} s "
            "(the queue drains at the model's pace; the last file waits for all before it)"
        )

        for target in checkpoints[1:]:
            fill_to(target)
        if len(checkpoints) >= 2:
            first, last = checkpoints[0], checkpoints[-1]
            print(
                f"peak PSS growth from {first} to {last} images: {rss[last] - rss[first]:+.0f} MiB"
            )
        print(f"daemon exit code on SIGTERM: {watch.stop()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
