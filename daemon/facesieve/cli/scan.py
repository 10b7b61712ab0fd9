"""`facesieve scan DIR`: judge every image under a folder once, and act (see `engines.scanning`)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

from ..config import Config
from ..engines.scanning import POOL_MIN_FILES
from ..errors import ConfigError, ExitCode
from ..logs import get_logger
from .arguments import add_common
from .output import print_outcome

__all__ = ["add_arguments", "configure", "run"]


_SUMMARY = (
    "keep",
    "reject",
    "review",
    "unreadable",
    "not_image",
    "known",
    "skipped",
    "deferred",
    "error",
    "ignored",  # in progress: an ignored name, not yet quiet for ignore_stale_seconds
)


def configure(scan: argparse.ArgumentParser) -> None:
    scan.add_argument("folder", type=Path, metavar="DIR")
    scan.add_argument("--dry-run", action="store_true", help="judge and report; touch nothing")
    scan.add_argument(
        "--rejudge",
        nargs="?",
        const="kept",
        choices=("kept", "all"),
        help="judge again the files decided under another policy or other models: the kept "
        "ones (default), or all (files in review or quarantine go back first)",
    )
    add_common(scan)

    add_arguments(scan)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _shard_set(text: str) -> frozenset[int]:
    """`0-3,6` -> {0, 1, 2, 3, 6}."""
    found: set[int] = set()
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            found.update(range(int(first), int(last or first) + 1))
    except ValueError:
        found.clear()
    if not found or min(found) < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of shards like 0-3,6")
    return frozenset(found)


def add_arguments(scan: argparse.ArgumentParser) -> None:
    """`scan`'s engine options."""
    scan.add_argument(
        "--workers",
        type=_positive,
        metavar="N",
        help="judging processes, each with its own models (default: this machine's cores; "
        f"a scan of under {POOL_MIN_FILES} files judges in-process)",
    )
    scan.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this machine's processes; ray: a Ray cluster (needs facesieve[ray])",
    )
    scan.add_argument(
        "--address", metavar="ADDR", help="with --engine ray: the cluster (default: start one)"
    )
    scan.add_argument(
        "--actors", type=_positive, metavar="N", help="with --engine ray: judging actors"
    )
    scan.add_argument(
        "--shards",
        type=_positive,
        default=8,
        metavar="K",
        help="with --engine ray: ledger shards, ledger-<k>.sqlite3 (default: 8)",
    )
    scan.add_argument(
        "--own-shards",
        type=_shard_set,
        metavar="LIST",
        help="with --engine ray: the shards this run acts on, e.g. 0-3 or 4,5,6,7 "
        "(default: every shard no other run holds)",
    )
    scan.add_argument(
        "--from-list",
        type=Path,
        metavar="FILE",
        help="judge the files listed in FILE, one path a line (relative: to DIR)",
    )


class _StopOnSignal:
    """First SIGINT/SIGTERM: finish the current file and stop. Second: stop at once."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()


def run(args: argparse.Namespace, config: Config) -> ExitCode:
    from tqdm import tqdm

    from ..engines.scanning import candidates, outcomes, records_stream
    from ..intake.layouts import SampleRules
    from ..judging.judge import Status

    root: Path = args.folder
    if not root.is_dir():
        raise ConfigError("DIR", f"{root} is not a folder")
    folders = config.resolve_folders(root)
    # Which writer's layout the inbox has: what a sample is, what is its index.
    layout = SampleRules(config.inbox.layout, folders.root)
    counts: Counter[str] = Counter()
    started = time.perf_counter()
    judged = 0
    with _StopOnSignal() as signals, records_stream(args.engine) as records:
        paths = candidates(args, config, folders, signals.stop.is_set, counts)
        results = outcomes(args, config, folders, paths, signals.stop.is_set)
        bar = tqdm(unit="img", disable=not sys.stderr.isatty(), file=sys.stderr, desc="scan")
        try:
            for outcome in results:
                bar.update()
                if outcome.status is Status.DECIDED:
                    assert outcome.verdict is not None
                    counts[outcome.verdict.value] += 1
                    judged += 1
                    print_outcome(
                        outcome,
                        as_json=args.json,
                        with_action=True,
                        dry_run=args.dry_run,
                        stream=records,
                    )
                else:
                    counts[outcome.status.value] += 1
        finally:
            results.close()  # stops workers, actors, a Ray cluster; closes the ledgers
            bar.close()
        interrupted = signals.stop.is_set()
    seconds = time.perf_counter() - started
    summary = {
        "judged": judged,
        **{k: counts.get(k, 0) for k in _SUMMARY},
        "seconds": round(seconds, 2),
        "images_per_second": round(judged / seconds, 2) if seconds > 0 else 0.0,
        "dry_run": args.dry_run,
        "interrupted": interrupted,
        "engine": args.engine,
        "layout": layout.name,
        "layout_why": layout.why,
    }
    get_logger().info("scan_summary", root=str(folders.root), **summary)
    print(
        f"facesieve: {judged} judged in {seconds:.1f} s ({summary['images_per_second']} images/s): "
        + ", ".join(f"{k} {summary[k]}" for k in _SUMMARY)
        + f"; layout {layout.name} ({layout.why})",
        file=sys.stderr,
    )
    return ExitCode.INTERRUPTED if interrupted else ExitCode.OK
