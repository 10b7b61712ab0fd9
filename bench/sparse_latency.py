"""Upload latency in `watch` while an uploader drops sparse bombs (issue 18).

Each round writes `--bombs` sparse files (a JPEG marker, then 199 MB of holes: a few KB
on disk) into the inbox, then one real photo, and waits for the photo's decision. It
prints the photo's latency (written -> decision) p50/p95 over the rounds, and when the
bombs got their own verdicts. `--pythonpath DIR` runs the daemon from another copy of
the package, e.g. the code before the slow lane:

    git archive 7df6527 daemon | tar -x -C /tmp/before
    python bench/sparse_latency.py --pythonpath /tmp/before/daemon

Usage: python bench/sparse_latency.py [--rounds 4] [--bombs 5] [--decode-timeout 4]
                                      [--pythonpath DIR]
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
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
_JFIF = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"


def _decisions(log: Path) -> dict[str, float]:
    found = {}
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") == "decision":
            found[event["path"]] = datetime.fromisoformat(event["timestamp"]).timestamp()
    return found


def _wait(log: Path, paths: list[Path], timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _decisions(log)
        if all(str(p) in found for p in paths):
            return found
        time.sleep(0.1)
    return _decisions(log)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--bombs", type=int, default=5)
    parser.add_argument("--decode-timeout", type=float, default=4.0)
    parser.add_argument("--pythonpath", type=Path, default=ROOT / "daemon")
    args = parser.parse_args()
    photos = sorted((DATA / "fairface").glob("*.jpg"))
    with tempfile.TemporaryDirectory(prefix="facesieve-sparse-") as scratch:
        inbox = Path(scratch) / "inbox"
        inbox.mkdir()
        config = Path(scratch) / "c.toml"
        config.write_text(
            f'[folders]\ninbox = "{inbox}"\n[watch]\nsettle_seconds = 0.3\n'
            f"[images]\ndecode_timeout = {args.decode_timeout}\n"
            "unreadable_grace_seconds = 1.0\n"
        )
        log = Path(scratch) / "log.jsonl"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(args.pythonpath))
        with log.open("ab") as out:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "facesieve", "watch", "--config", str(config)],
                stdout=out,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        try:
            while '"reconciled"' not in log.read_text(errors="replace"):
                if daemon.poll() is not None:
                    raise SystemExit(f"watch exited with {daemon.returncode}")
                time.sleep(0.2)
            latencies = []
            bombs: list[Path] = []
            started = time.time()
            for round_ in range(args.rounds):
                for index in range(args.bombs):
                    bomb = inbox / f"bomb-{round_}-{index}.jpg"
                    with bomb.open("wb") as handle:
                        handle.write(_JFIF)
                        handle.truncate(199 * 1024 * 1024)
                    bombs.append(bomb)
                time.sleep(0.05)
                photo = inbox / f"photo-{round_}.jpg"
                photo.write_bytes(photos[round_ % len(photos)].read_bytes())
                written = time.time()
                found = _wait(log, [photo], 600)
                latency = found.get(str(photo), time.time()) - written
                latencies.append(latency)
                print(f"round {round_ + 1}: photo decided after {latency:.1f} s", flush=True)
            found = _wait(log, bombs, 900)
        finally:
            daemon.terminate()
            daemon.wait(120)
    decided = sorted(found[str(b)] - started for b in bombs if str(b) in found)
    p95 = (
        statistics.quantiles(latencies, n=20, method="inclusive")[-1]
        if len(latencies) > 1
        else latencies[0]
    )
    print(
        f"{args.rounds} rounds of {args.bombs} sparse bombs then a photo: photo latency "
        f"p50 {statistics.median(latencies):.1f} s, p95 {p95:.1f} s, max {max(latencies):.1f} s"
    )
    print(
        f"bombs with a verdict: {len(decided)}/{len(bombs)}"
        + (f", the last {decided[-1]:.0f} s after the first round began" if decided else "")
    )


if __name__ == "__main__":
    main()
