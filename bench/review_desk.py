"""The review desk: keypresses and seconds a person needs per reviewed image.

Usage: python bench/review_desk.py [--data ../shared/data] [--cli 10] [--keep DIR]

On a copy of FairFace (270 photos) in a temporary folder:
  1. `facesieve scan --require man` for real;
  2. `facesieve review` serves the page; headless chromium (Debian's, driven by
     Playwright) presses one key per image in review as a person who knows the
     answer would (FairFace's own label: male -> k, female -> r), and times each
     image from the keypress until the next image is shown, decoded, boxes drawn;
  3. the last `--cli` images are settled one `facesieve approve/reject --id N`
     process each instead, side by side, as a script would (or a person at a shell);
  4. `facesieve eval --ledger --require man` prints how the model did on them.

The seconds are the machine's share of a review (the page's own latency: the
POST, the crash-safe move with its fsyncs, the ledger rows, the next image). A
person's looking time comes on top of it; with preloading it is what remains.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REVIEW_ARGS = ("--address", "127.0.0.1:0", "--who", "bench")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-m", "facesieve", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--cli", type=int, default=10, help="images settled by CLI instead")
    parser.add_argument("--keep", type=Path, help="keep the scanned folder here")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    labels_csv = args.data / "fairface" / "labels.csv"
    with labels_csv.open(newline="") as handle:
        gender = {r["file"]: r["gender"] for r in csv.DictReader(handle)}
    work = Path(tempfile.mkdtemp(prefix="facesieve-review-bench-"))
    inbox = work / "fairface"
    shutil.copytree(args.data / "fairface", inbox)

    command = ["scan", str(inbox), "--require", "man"]
    print(f"$ facesieve {' '.join(command)}")
    scan = run(*command)
    print(scan.stderr.strip().splitlines()[-1])

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    server = subprocess.Popen(
        [sys.executable, "-m", "facesieve", "review", str(inbox), *REVIEW_ARGS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    assert re.match(r"http://127\.0\.0\.1:\d+/#token=", url), url

    latencies: list[float] = []
    keys = 0
    reviewed: list[int] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            opened = time.perf_counter()
            page.goto(url)
            page.wait_for_selector("body[data-state=ready]", timeout=30_000)
            first_image = time.perf_counter() - opened
            total = int(page.inner_text("#left"))
            on_page = max(0, total - args.cli)
            started = time.perf_counter()
            for _ in range(on_page):
                current = page.get_attribute("body", "data-current")
                assert current
                name = re.sub(r"\s+\(ledger #\d+\)$", "", page.inner_text("#name"))
                key = "k" if gender[name] == "male" else "r"
                before = time.perf_counter()
                page.keyboard.press(key)
                keys += 1
                page.wait_for_function(
                    "id => document.body.dataset.current !== id && "
                    "['ready', 'empty'].includes(document.body.dataset.state)",
                    arg=current,
                    timeout=30_000,
                )
                latencies.append(time.perf_counter() - before)
                reviewed.append(int(current))
            page_seconds = time.perf_counter() - started
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)

    # The rest by command line, one process per image, as a script would.
    cli_seconds: list[float] = []
    with sqlite3.connect(inbox / ".facesieve" / "ledger.sqlite3") as db:
        left = db.execute(
            "SELECT id, path FROM decisions WHERE action = 'review' AND state = 'done' "
            "AND settled_by IS NULL ORDER BY id"
        ).fetchall()
    for row_id, path in left[: args.cli]:
        verb = "approve" if gender[Path(path).name] == "male" else "reject"
        before = time.perf_counter()
        done = run(verb, str(inbox), "--id", str(row_id), "--who", "bench-cli")
        cli_seconds.append(time.perf_counter() - before)
        assert done.returncode == 0, done.stderr

    n = len(latencies)
    print()
    # One key per image is how this bench drives the page, not a measurement; what it can
    # show is whether each key settled its image in the ledger.
    print(
        f"review page: {keys} keys pressed, one per image shown; the ledger has "
        f"{total - len(left)} of the {total} images in review settled by the page"
    )
    print(f"  first image shown {first_image:.3f} s after the page was opened")
    print(
        f"  seconds per image, keypress to next image shown: median "
        f"{statistics.median(latencies):.3f}, p95 {percentile(latencies, 0.95):.3f}, "
        f"max {max(latencies):.3f}, mean {statistics.mean(latencies):.3f}"
    )
    print(f"  {n} images in {page_seconds:.1f} s: {n / page_seconds:.1f} images/s")
    if cli_seconds:
        cli_median = statistics.median(cli_seconds)
        print(
            f"command line: {len(cli_seconds)} images, one `facesieve approve|reject --id N` "
            f"each: median {cli_median:.3f} s per image"
        )
        print(
            f"  page / command line, seconds per image: "
            f"{statistics.median(latencies) / cli_median:.3f}x "
            f"({cli_median / statistics.median(latencies):.0f} times faster on the page)"
        )
    print()
    command = ["eval", "--ledger", str(inbox), "--require", "man"]
    print(f"$ facesieve {' '.join(command)}")
    print(run(*command).stdout)
    if args.keep is not None:
        shutil.copytree(work, args.keep, dirs_exist_ok=True)
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
