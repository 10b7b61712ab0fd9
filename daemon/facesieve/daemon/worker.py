"""The daemon's worker: the one thread that holds the models, the ledger and the queue.

It loads the models, recovers what a crash left half-done, then judges queued
files and runs reconciliation passes (start-up, full queue, inotify overflow,
a folder moved in, a periodic timer), each through `judge_many` and
`Applier.apply`. A file that would hold it for others (sparse, or slow to decode
past `images.first_decode_seconds`) is set aside to a slow lane, judged with the
whole decode budget only while the queue is empty. Other threads talk to it only through `offer`,
`request_reconcile`, `reload` and `stop`, none of which blocks.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..acting.apply import Applier, Outcome
from ..acting.moves import Places
from ..config import Config
from ..intake.inbox import Inbox
from ..judging.analyzer import MAX_BATCH, FaceModel, timed_load
from ..judging.judge import Judgement, NotJudged, Status, judge_many
from ..ledger.store import Ledger
from ..logs import get_logger
from ..people.rejudge import stale_decisions
from .metrics import Metrics

__all__ = ["Worker"]

_WAKE = object()  # put on the queue to wake the worker without a file
TICK = 0.25  # seconds; the longest uninterruptible wait of the worker and the main loop
# The slow lane holds at most this many files set aside (one path each); past it, a
# file set aside is left to the next reconciliation pass, which finds it again.
SLOW_LANE_SIZE = 1024
# A slow file's decode yields to new arrivals at most this many times; then it runs
# to its end, so that a steady trickle of uploads cannot keep it unjudged for ever.
SLOW_YIELDS = 3


class Worker:
    """Judges what it is offered, and the whole inbox when asked. `start()` runs it."""

    def __init__(
        self,
        config: Config,
        inbox: Inbox,
        make_analyzer: Callable[[Config], FaceModel],
        *,
        defer: Callable[[list[Path], float], None],
        metrics: Metrics | None = None,
        dry_run: bool = False,
    ) -> None:
        self.config = config
        # Judge and log only: no ledger, nothing moved; what was judged is kept in memory.
        self.dry_run = dry_run
        self._dry_seen: dict[Path, tuple[int, int]] = {}
        self.inbox = inbox
        self.metrics = metrics
        self.stopping = threading.Event()
        self.started = threading.Event()  # ready to judge, or failed (see `failure`)
        self.failure: BaseException | None = None
        self.counts: Counter[str] = Counter()
        self.heartbeat = time.monotonic()  # last sign of progress, for the watchdog
        self._make_analyzer = make_analyzer
        self._defer = defer
        self._queue: queue.Queue[object] = queue.Queue(maxsize=config.watch.queue_size)
        # Files set aside as slow (sparse, or over the first decode budget) -> how
        # often their decode yielded to arrivals: judged when the queue is idle.
        self._slow: dict[Path, int] = {}
        self._reconcile = threading.Event()
        self._reopen = threading.Event()  # the inbox was replaced: hold the new one
        self._pending_config: Config | None = None
        self._reload_lock = threading.Lock()
        self._log = get_logger()
        self._thread = threading.Thread(target=self._run, name="facesieve-worker", daemon=True)

    # -- from other threads; none of these blocks ----------------------------------------

    def offer(self, path: Path) -> None:
        try:
            self._queue.put_nowait(path)
        except queue.Full:
            # Dropping is safe: the file is in the inbox, and the pass will find it.
            self.request_reconcile("queue full")

    def request_reconcile(self, why: str) -> None:
        if not self._reconcile.is_set():
            self._log.info("reconcile_requested", reason=why)
            self._reconcile.set()

    def reload(self, config: Config) -> None:
        """Use `config` from the next batch on (policy and actions; see `watch`)."""
        with self._reload_lock:
            self._pending_config = config

    def reopen_folders(self) -> None:
        """The inbox at its path is another folder now (re-armed after it was lost):
        hold it, and facesieve's folders, anew before the next batch is judged."""
        self._reopen.set()

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def queue_size(self) -> int:
        return self._queue.maxsize

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(queue.Full):  # the worker polls the stop event anyway
            self._queue.put_nowait(_WAKE)

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    # -- the worker thread ----------------------------------------------------------------

    def _run(self) -> None:
        prepared = self._prepare()
        if prepared is None:
            return
        analyzer, ledger, applier = prepared
        self.started.set()
        try:
            while not self.stopping.is_set():
                self._step(analyzer, applier, ledger)
        except BaseException as error:  # noqa: BLE001 - the main thread exits non-zero
            self.failure = error
            self._log.exception("worker_failed")
            self.stopping.set()
        finally:
            applier.close()
            if ledger is not None:
                ledger.close()

    def _prepare(self) -> tuple[FaceModel, Ledger | None, Applier] | None:
        """Load the models, open the ledger and finish what a crash left (None: stopped
        while loading, or failed: `failure` says why and `started` is set)."""
        ledger = None
        try:
            analyzer, seconds = timed_load(self._make_analyzer, self.config)
            if self.metrics is not None:
                self.metrics.models_loaded(seconds)
            if self.stopping.is_set():
                return None  # stopped while loading: the ledger is not even opened
            if not self.dry_run:
                # One writer per ledger: a scan or a second watch on it is refused.
                ledger = Ledger(self.inbox.folders.ledger, exclusive=True)
            applier = Applier(
                folders=self.inbox.folders,
                ledger=ledger,
                dry_run=self.dry_run,
                unreadable_grace=self.config.images.unreadable_grace_seconds,
                mode=self.config.actions.mode,
                rules=self.inbox.rules,
            )
            recovered = applier.recover()
            self._log.info("worker_ready", recovered=recovered, dry_run=self.dry_run)
            if ledger is not None:
                self._log_stale(ledger, analyzer)
        except BaseException as error:  # noqa: BLE001 - reported to the main thread
            self.failure = error
            self.started.set()
            if ledger is not None:
                ledger.close()
            return None
        return analyzer, ledger, applier

    def _step(self, analyzer: FaceModel, applier: Applier, ledger: Ledger | None) -> None:
        """One turn of the worker: a reconcile pass, a batch from the queue, or (nothing
        queued) one file set aside to the slow lane."""
        self.heartbeat = time.monotonic()
        if ledger is not None:
            # Deleted or replaced under us: every later decision would be
            # lost. Stop (exit 5) rather than guard without a record.
            ledger.ensure_unchanged()
        self._take_reload(analyzer, applier)
        if self._reconcile.is_set():
            self._reconcile.clear()
            self._reconcile_pass(analyzer, applier)
            return
        try:
            item = self._queue.get(timeout=0.0 if self._slow else TICK)
        except queue.Empty:
            if self._slow:
                self._judge_slow(analyzer, applier)
            return
        batch = [item]
        while len(batch) < MAX_BATCH:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        paths = [p for p in batch if isinstance(p, Path)]
        self._judge(analyzer, applier, dict.fromkeys(paths))

    def _log_stale(self, ledger: Ledger, analyzer: FaceModel) -> None:
        """How many files were decided under another policy (at start, after SIGHUP)."""
        stale = stale_decisions(ledger, self.config, analyzer.describe(), self.inbox.root)
        self._log.info("decided_under_other_policy", files=stale.count, **stale.as_dict())

    def _take_reload(self, analyzer: FaceModel, applier: Applier) -> Config:
        """The config to judge with: a reloaded one from now on (checked right before
        judging, so a file that arrives after `reloaded` is logged is judged under it)."""
        self._take_reopen(applier)
        with self._reload_lock:
            pending, self._pending_config = self._pending_config, None
        if pending is not None:
            self.config = pending
            if applier.places is not None:
                # The widest bits a copy across filesystems gets: the reloaded ones.
                applier.places.mode = pending.actions.mode
            # A policy that now requires a gender loads the gender model here.
            analyzer.use_gender(pending.policy.require != "face")
            if applier.ledger is not None:
                self._log_stale(applier.ledger, analyzer)
        return self.config

    def _take_reopen(self, applier: Applier) -> None:
        """Every action works relative to the folders held at start: after a re-arm they
        are the old inbox (renamed away, or deleted). An unsafe new layout (a planted
        `.facesieve`) stops the worker as it would at start."""
        if not self._reopen.is_set() or applier.places is None:
            return
        try:
            places = Places(self.inbox.folders, mode=self.config.actions.mode)
        except OSError as error:
            # Gone again already: the guard re-arms it once more when it is back.
            self._log.warning("inbox_reopen_failed", error=str(error))
            return
        try:
            if not self.dry_run:
                places.check_state_folders()
        except BaseException:
            places.close()
            raise
        self._reopen.clear()
        old, applier.places = applier.places, places
        old.close()
        self._log.info("inbox_reopened", inbox=str(self.inbox.root))

    def _judge(self, analyzer: FaceModel, applier: Applier, paths: Iterable[Path]) -> None:
        config = self._take_reload(analyzer, applier)
        if self.dry_run:
            paths = self._not_seen_dry(paths)
        for result in judge_many(
            paths,
            analyzer,
            config.policy,
            config.images,
            should_stop=self.stopping.is_set,
            seen=applier.seen,
            # A file that would hold the judge (sparse, or slow to decode) is set
            # aside, so that no uploader can delay the others' files.
            first_budget=config.images.first_decode_seconds,
        ):
            if isinstance(result, NotJudged) and result.slow:
                self._set_aside(result)
                self.heartbeat = time.monotonic()
                continue
            self._settle(applier, config, result)

    def _set_aside(self, result: NotJudged) -> None:
        if result.path in self._slow:
            return
        if len(self._slow) >= SLOW_LANE_SIZE:
            self._log.warning("slow_lane_full", path=str(result.path), reason=result.reason)
            return  # still in the inbox: the next reconciliation pass finds it
        self._slow[result.path] = 0
        self._log.info("set_aside", path=str(result.path), reason=result.reason)
        if self.metrics is not None:
            self.metrics.slow_lane.set(len(self._slow))

    def _judge_slow(self, analyzer: FaceModel, applier: Applier) -> None:
        """Judge the oldest file set aside, with the whole decode budget, while nothing
        else waits: its decode yields to an arrival (`SLOW_YIELDS` times at most)."""
        path, yielded = next(iter(self._slow.items()))
        config = self._take_reload(analyzer, applier)
        may_yield = yielded < SLOW_YIELDS
        arrived = False

        def should_stop() -> bool:
            nonlocal arrived
            if self.stopping.is_set():
                return True
            arrived = arrived or (may_yield and not self._queue.empty())
            return arrived

        results = list(
            judge_many(
                [path],
                analyzer,
                config.policy,
                config.images,
                should_stop=should_stop,
                seen=applier.seen,
            )
        )
        if self.stopping.is_set():
            return  # still in the inbox: judged after the restart
        del self._slow[path]
        if arrived and not results:
            self._slow[path] = yielded + 1  # last in line again; arrivals first
            self._log.info("slow_yielded", path=str(path), times=yielded + 1)
            return
        if self.metrics is not None:
            self.metrics.slow_lane.set(len(self._slow))
        for result in results:
            self._settle(applier, config, result)
        self.heartbeat = time.monotonic()

    def _settle(self, applier: Applier, config: Config, result: Judgement | NotJudged) -> None:
        """Act on one result, count it, and look again later at a deferred file."""
        outcome = applier.apply(result, config.actions)
        self._count(outcome)
        self.heartbeat = time.monotonic()
        if outcome.status is Status.DEFERRED:
            # Changed while judged, or unreadable while young: looked at again
            # once it has been quiet for settle_seconds, and not before its
            # retry_in (a young unreadable file is not decoded again every tick).
            self._defer([outcome.path], outcome.retry_in or 0.0)

    def _not_seen_dry(self, paths: Iterable[Path]) -> Iterator[Path]:
        """Dry run: the ledger's memory of what was judged, kept in memory instead."""
        for path in paths:
            try:
                info = path.lstat()
            except OSError:
                continue
            state = (info.st_size, info.st_mtime_ns)
            if self._dry_seen.get(path) != state:
                self._dry_seen[path] = state
                yield path

    def _reconcile_pass(self, analyzer: FaceModel, applier: Applier) -> None:
        """Judge every candidate in the inbox that has no recorded decision."""
        settle_ns = int(self.config.watch.settle_seconds * 1e9)
        started = time.monotonic()
        young: list[Path] = []
        found: Counter[str] = Counter()

        def settled() -> Iterable[Path]:
            for path in self.inbox.walk(counts=found):
                if self.stopping.is_set():
                    return
                info = self.inbox.lstat(path)
                if info is None:
                    continue
                # ctime, not mtime: a writer can set mtime back, nobody can set ctime.
                if time.time_ns() - info.st_ctime_ns < settle_ns:
                    young.append(path)  # maybe still being written: look again later
                    continue
                yield path

        before = sum(self.counts.values())
        self._judge(analyzer, applier, settled())
        self._log.info(
            "reconciled",
            judged=sum(self.counts.values()) - before,
            deferred=len(young),
            ignored=found["ignored"],
            seconds=round(time.monotonic() - started, 2),
        )
        if self.metrics is not None:
            self.metrics.ignored.set(found["ignored"])
        if young:
            self._defer(young, 0.0)

    def _count(self, outcome: Outcome) -> None:
        if outcome.status is Status.DECIDED and outcome.verdict is not None:
            self.counts[outcome.verdict.value] += 1
        elif outcome.status is Status.ERROR:
            self.counts["error"] += 1
        if self.metrics is not None:
            self.metrics.observe(outcome)
