"""`facesieve watch`: the always-on guard of one inbox.

Threads, and what each one may do:
  - watchdog's observer threads only *offer* paths to a bounded queue; when it is
    full they drop the path and ask for a reconciliation pass instead, so a burst
    never blocks them and never loses a file: the inbox itself is the backlog;
  - one worker thread holds the models, the ledger and the engine: it recovers
    what a crash left half-done, then judges queued files and runs reconciliation
    passes (start-up, full queue, inotify overflow, a periodic timer);
  - the main thread handles signals (handlers only set flags), talks to systemd
    (READY, STATUS, WATCHDOG, STOPPING) and shuts everything down in order.
Every wait is an interruptible `Event.wait(timeout)`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from watchdog.events import (
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from .analyzer import MAX_BATCH, Analyzer, load_analyzer
from .config import Config, ResolvedFolders, load_config, watch_folders
from .engine import Engine, Outcome, Status, iter_images
from .errors import ConfigError, LedgerError, ModelLoadError
from .ledger import Ledger
from .logs import get_logger
from .metrics import Metrics
from .notify import Notifier
from .rejudge import stale_decisions

__all__ = ["Guard"]

_WAKE = object()  # put on the queue to wake the worker without a file
_TICK = 0.25  # seconds; the main loop's and the worker's longest uninterruptible wait


class _InboxEvents(FileSystemEventHandler):
    """Turns filesystem events into offers of complete files. Never blocks."""

    def __init__(
        self,
        offer: Callable[[Path], None],
        settle: Callable[[Path], None] | None,
        reconcile: Callable[[], None],
    ) -> None:
        self._offer = offer
        self._settle = settle
        self._reconcile = reconcile

    def on_closed(self, event: FileClosedEvent) -> None:
        # IN_CLOSE_WRITE: the writer is done. IN_CLOSE_NOWRITE (our own reads) is
        # a different event class and never reaches here.
        self._offer(Path(os.fsdecode(event.src_path)))

    def on_moved(self, event: FileSystemEvent) -> None:
        if isinstance(event, DirMovedEvent):
            self._reconcile()  # a folder moved in brings files no event announces
        elif isinstance(event, FileMovedEvent):
            self._offer(Path(os.fsdecode(event.dest_path)))

    def on_created(self, event: FileSystemEvent) -> None:
        # inotify: a created file is still being written; its close event follows.
        if self._settle is not None and isinstance(event, FileCreatedEvent):
            self._settle(Path(os.fsdecode(event.src_path)))

    def on_modified(self, event: FileSystemEvent) -> None:
        if self._settle is not None and isinstance(event, FileModifiedEvent):
            self._settle(Path(os.fsdecode(event.src_path)))


class _OverflowAlarm(logging.Handler):
    """watchdog reports a kernel event-queue overflow only as a log line."""

    def __init__(self, alarm: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self._alarm = alarm

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._alarm()


class Guard:
    """Watches one inbox until told to stop. `run()` returns the process exit code."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        notifier: Notifier | None = None,
        make_analyzer: Callable[[Config], Analyzer] | None = None,
    ) -> None:
        self.config = config
        self.folders: ResolvedFolders = watch_folders(config)
        self._config_path = config_path
        self._notifier = notifier or Notifier.from_environment()
        self._make_analyzer = make_analyzer or load_analyzer
        self._log = get_logger()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=config.watch.queue_size)
        self._stop = threading.Event()
        self._started = threading.Event()  # the worker is ready, or failed
        self._reconcile = threading.Event()
        self._failure: BaseException | None = None
        self._counts: Counter[str] = Counter()
        self._heartbeat = time.monotonic()
        self._settling: dict[Path, tuple[float, tuple[int, int] | None]] = {}
        self._settling_lock = threading.Lock()
        self._pending_config: Config | None = None
        self._signals = 0
        self._reload = False
        # Opt-in ([metrics] address): recorded from the worker, served after READY.
        self._metrics = Metrics(self._queue.qsize) if config.metrics.address else None

    # -- offers from the observer threads ----------------------------------------------

    def accepts(self, path: Path) -> bool:
        """Whether a path is an image in the inbox that facesieve should judge."""
        try:
            relative = path.relative_to(self.folders.root)
        except ValueError:
            return False
        if any(path == m or m in path.parents for m in self.folders.managed()):
            return False
        if not path.name.lower().endswith(self.config.images.extensions):
            return False
        patterns = self.config.watch.ignore
        return not any(fnmatch.fnmatch(part, p) for part in relative.parts for p in patterns)

    def offer(self, path: Path) -> None:
        if not self.accepts(path):
            return
        try:
            self._queue.put_nowait(path)
        except queue.Full:
            # Dropping is safe: the file is in the inbox, and the pass will find it.
            self.request_reconcile("queue full")

    def request_reconcile(self, why: str) -> None:
        if not self._reconcile.is_set():
            self._log.info("reconcile_requested", reason=why)
            self._reconcile.set()

    def _settle(self, path: Path) -> None:
        if self.accepts(path):
            with self._settling_lock:
                self._settling[path] = (time.monotonic(), None)

    def _release_settled(self) -> None:
        """Polling mode: offer files whose size and mtime stayed put for settle_seconds."""
        now = time.monotonic()
        settle = self.config.watch.settle_seconds
        with self._settling_lock:
            for path, (since, seen) in list(self._settling.items()):
                try:
                    info = path.lstat()
                except OSError:
                    del self._settling[path]
                    continue
                current = (info.st_size, info.st_mtime_ns)
                if current != seen:
                    self._settling[path] = (now, current)
                elif now - since >= settle:
                    del self._settling[path]
                    self.offer(path)

    # -- the worker ----------------------------------------------------------------------

    def _work(self) -> None:
        ledger = None
        try:
            started = time.monotonic()
            analyzer = self._make_analyzer(self.config)
            seconds = round(time.monotonic() - started, 2)
            self._log.info("models_loaded", seconds=seconds)
            if self._metrics is not None:
                self._metrics.models_loaded(seconds)
            ledger = Ledger(self.folders.ledger)
            engine = Engine(self.config, analyzer, folders=self.folders, ledger=ledger)
            recovered = engine.recover()
            self._log.info("worker_ready", recovered=recovered)
            self._log_stale(ledger, analyzer)
        except BaseException as error:  # noqa: BLE001 - reported to the main thread
            self._failure = error
            self._started.set()
            if ledger is not None:
                ledger.close()
            return
        self._started.set()
        try:
            while not self._stop.is_set():
                self._heartbeat = time.monotonic()
                if self._pending_config is not None:
                    engine.config = self.config = self._pending_config
                    self._pending_config = None
                    # A policy that now requires a gender loads the gender model here.
                    engine.analyzer.use_gender(self.config.policy.require != "face")
                    engine.models_changed()
                    self._log_stale(ledger, analyzer)
                if self._reconcile.is_set():
                    self._reconcile.clear()
                    self._reconcile_pass(engine)
                    continue
                try:
                    item = self._queue.get(timeout=_TICK)
                except queue.Empty:
                    continue
                batch = [item]
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                paths = [p for p in batch if isinstance(p, Path)]
                self._judge(engine, iter(dict.fromkeys(paths)))
        except BaseException as error:  # noqa: BLE001 - the main thread exits non-zero
            self._failure = error
            self._log.exception("worker_failed")
            self._stop.set()
        finally:
            ledger.close()

    def _log_stale(self, ledger: Ledger, analyzer: Analyzer) -> None:
        """How many files were decided under another policy (at start, after SIGHUP)."""
        stale = stale_decisions(ledger, self.config, analyzer.describe(), self.folders.root)
        self._log.info("decided_under_other_policy", files=stale.count, **stale.as_dict())

    def _judge(self, engine: Engine, paths: Iterator[Path]) -> None:
        for outcome in engine.process_many(paths, should_stop=self._stop.is_set):
            self._count(outcome)
            self._heartbeat = time.monotonic()

    def _reconcile_pass(self, engine: Engine) -> None:
        """Judge every image in the inbox that has no recorded decision."""
        settle_ns = int(self.config.watch.settle_seconds * 1e9)
        started = time.monotonic()
        young: list[Path] = []

        def settled() -> Iterator[Path]:
            extensions = self.config.images.extensions
            for path in iter_images(self.folders.root, extensions, self.folders.managed()):
                if self._stop.is_set():
                    return
                if not self.accepts(path):
                    continue
                try:
                    mtime = path.lstat().st_mtime_ns
                except OSError:
                    continue
                if time.time_ns() - mtime < settle_ns:
                    young.append(path)  # maybe still being written: look again later
                    continue
                yield path

        before = sum(self._counts.values())
        self._judge(engine, settled())
        self._log.info(
            "reconciled",
            judged=sum(self._counts.values()) - before,
            deferred=len(young),
            seconds=round(time.monotonic() - started, 2),
        )
        if young:
            with self._settling_lock:
                for path in young:
                    self._settling.setdefault(path, (time.monotonic(), None))

    def _count(self, outcome: Outcome) -> None:
        if outcome.status is Status.DECIDED and outcome.verdict is not None:
            self._counts[outcome.verdict.value] += 1
        elif outcome.status is Status.ERROR:
            self._counts["error"] += 1
        if self._metrics is not None:
            self._metrics.observe(outcome)

    # -- the main thread -----------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
            return
        self._signals += 1
        if self._signals > 1:
            # A second signal: stop now. Pending ledger rows let the next start settle
            # a move cut short.
            os._exit(130)
        self._stop.set()

    def status_line(self) -> str:
        counts = self._counts
        judged = sum(counts[k] for k in ("keep", "reject", "review", "unreadable"))
        return (
            f"judged {judged} (keep {counts['keep']}, reject {counts['reject']}, "
            f"review {counts['review']}, unreadable {counts['unreadable']}, "
            f"errors {counts['error']}); queue {self._queue.qsize()}/{self._queue.maxsize}"
        )

    def _apply_reload(self) -> None:
        self._reload = False
        try:
            new = load_config(self._config_path)
        except ConfigError as error:
            self._log.error("reload_failed", error=str(error))
            return
        changed = [
            section
            for section in ("folders", "models", "ledger", "watch", "images", "metrics")
            if getattr(new, section) != getattr(self.config, section)
        ]
        if changed:
            self._log.warning("reload_partial", restart_needed_for=changed)
            new = new.model_copy(update={s: getattr(self.config, s) for s in changed})
        self._pending_config = new
        self._log.info("reloaded", policy=new.policy.model_dump(), actions=new.actions.model_dump())

    def _observer(self) -> Any:
        watch = self.config.watch
        if watch.polling:
            from watchdog.observers.polling import PollingObserver

            observer: Any = PollingObserver(timeout=watch.poll_interval)
            settle: Callable[[Path], None] | None = self._settle
        else:
            from watchdog.observers import Observer

            observer = Observer()
            settle = None
        handler = _InboxEvents(
            self.offer, settle, lambda: self.request_reconcile("folder moved in")
        )
        observer.schedule(handler, str(self.folders.root), recursive=True)
        return observer

    def run(self) -> int:
        """Load, recover, watch, and on SIGTERM/SIGINT stop cleanly. Returns the exit code."""
        from .cli import ExitCode

        self.folders.root.mkdir(parents=True, exist_ok=True)
        previous = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        alarm = _OverflowAlarm(lambda: self.request_reconcile("inotify overflow"))
        logging.getLogger("watchdog").addHandler(alarm)
        worker = threading.Thread(target=self._work, name="facesieve-worker", daemon=True)
        observer = None
        try:
            self._log.info(
                "starting", inbox=str(self.folders.root), ledger=str(self.folders.ledger)
            )
            # Watch before the start-up pass, so a file arriving during it is not missed.
            observer = self._observer()
            observer.start()
            self._reconcile.set()
            worker.start()
            while not self._started.wait(_TICK):
                if self._stop.is_set():
                    break
            if self._failure is not None:
                error = self._failure
                self._log.error("start_failed", error=str(error))
                if isinstance(error, ModelLoadError):
                    return ExitCode.MODEL
                if isinstance(error, ConfigError):
                    return ExitCode.CONFIG
                if isinstance(error, LedgerError):
                    return ExitCode.LEDGER  # as scan: restarting will not mend the file
                return ExitCode.FAILURE
            self._notifier.ready(status=self.status_line())
            self._log.info("ready", inbox=str(self.folders.root))
            self._serve_metrics()
            self._main_loop()
            self._notifier.stopping(status="stopping: finishing the current file")
            self._log.info("stopping")
            self._stop.set()
        finally:
            if observer is not None:
                observer.stop()
            with contextlib.suppress(queue.Full):  # the worker polls the stop event anyway
                self._queue.put_nowait(_WAKE)
            if worker.is_alive():
                worker.join(self.config.watch.stop_timeout)
            if observer is not None:
                observer.join(self.config.watch.stop_timeout)
            logging.getLogger("watchdog").removeHandler(alarm)
            if self._metrics is not None:
                self._metrics.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if worker.is_alive():
            self._log.error("stop_timeout", seconds=self.config.watch.stop_timeout)
            return ExitCode.FAILURE
        if self._failure is not None:
            return ExitCode.FAILURE
        self._log.info("stopped", status=self.status_line())
        return ExitCode.OK

    def _serve_metrics(self) -> None:
        if self._metrics is None:
            return
        try:
            address = self._metrics.serve(self.config.metrics)
        except OSError as error:
            # Guarding matters more than its figures: say so loudly, and keep guarding.
            self._log.error(
                "metrics_unavailable", address=self.config.metrics.address, error=str(error)
            )
            return
        self._log.info("metrics_serving", address=address)

    def _main_loop(self) -> None:
        watch = self.config.watch
        ping_every = self._notifier.watchdog_interval
        next_ping = next_status = time.monotonic()
        next_reconcile = time.monotonic() + watch.reconcile_interval
        while not self._stop.wait(_TICK):
            now = time.monotonic()
            if self._reload:
                self._apply_reload()
            if watch.polling or self._settling:
                self._release_settled()
            if now >= next_reconcile:
                self.request_reconcile("timer")
                next_reconcile = now + watch.reconcile_interval
            if now >= next_status:
                self._notifier.status(self.status_line())
                next_status = now + watch.status_interval
            if ping_every is not None and now >= next_ping:
                # Ping only while the worker makes progress: a hung model call must
                # let systemd's watchdog fire.
                if now - self._heartbeat < 2 * ping_every:
                    self._notifier.watchdog()
                else:
                    self._log.error("worker_stalled", seconds=round(now - self._heartbeat, 1))
                next_ping = now + ping_every
