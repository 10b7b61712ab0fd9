"""`facesieve watch`: the always-on guard of one inbox, and its main loop.

Threads, and what each one may do:
  - the observer's threads (`observer.py`) only *offer* candidate files to the
    worker, which never blocks them; the main loop checks every tick that they are
    alive, and replaces a dead observer with a new one (the inbox walked again);
  - the worker thread (`worker.py`) holds the models, the ledger and the queue;
  - the main thread, here, handles signals (handlers only set flags), talks to
    systemd (READY, STATUS, WATCHDOG, STOPPING), walks the folders that arrived
    (each once a tick, a bounded number), applies a SIGHUP reload and shuts
    everything down in order.
All of facesieve's own threads are named `facesieve-...`.
Every wait is an interruptible `Event.wait(timeout)`.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from ..config import Config, LoggingConfig, ResolvedFolders, load_config, watch_folders
from ..errors import ConfigError, ExitCode, exit_code
from ..intake.inbox import Inbox
from ..intake.observer import InboxObserver, Settler
from ..judging.analyzer import FaceModel, build_analyzer
from ..logs import configure_logging, get_logger
from .liveness import ThreadFailures
from .metrics import Metrics
from .notify import Notifier
from .worker import TICK, Worker

__all__ = ["Guard", "daemon_logging"]

# Seconds between attempts to start an observer that could not start (the kernel's
# inotify limits, an inbox gone for a moment); systemd's watchdog goes unfed meanwhile.
OBSERVER_RETRY = 5.0


def daemon_logging(logging: LoggingConfig) -> None:
    """The daemon's events are its output: on stdout, or to the journal under systemd."""
    configure_logging(level=logging.level, format=logging.format, stream=sys.stdout, journal=True)


# An event flood: more events than this a tick. The kernel's queue then fills faster
# than watchdog's threads drain it, and an upload's own event waits behind the
# flood; a reconciliation pass (a walk by descriptor, not events) every
# FLOOD_PASS_INTERVAL seconds finds it within that time however long the flood lasts.
FLOOD_EVENTS_PER_TICK = 500
FLOOD_PASS_INTERVAL = 3.0


# What signal.signal returns: the handler it replaced, put back on the way out.
_SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


@dataclass
class _Tending:
    """The main loop's timers for the observer's chores, and the count of its
    events at the last tick (a flood is many more a tick)."""

    next_audit: float
    next_poll: float
    next_flood_pass: float
    events_seen: int = 0

    @classmethod
    def starting(cls, now: float) -> _Tending:
        return cls(next_audit=now, next_poll=now, next_flood_pass=now)


def _identity(folder: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(folder)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


class Guard:
    """Watches one inbox until told to stop. `run()` returns the process exit code."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        notifier: Notifier | None = None,
        make_analyzer: Callable[[Config], FaceModel] | None = None,
        dry_run: bool = False,
        overrides: Callable[[Config], Config] | None = None,
    ) -> None:
        self.config = config
        self.dry_run = dry_run
        # What the command line set over the config file (`watch DIR`, --log-level),
        # already in `config`: applied to a reloaded file too, so that it compares
        # like with like and a reload does not undo them.
        self._overrides = overrides or (lambda loaded: loaded)
        self.folders: ResolvedFolders = watch_folders(config)
        self.inbox = Inbox.of(config, self.folders)
        self._config_path = config_path
        self._notifier = notifier or Notifier.from_environment()
        self._log = get_logger()
        self._signals = 0
        self._reload = False
        self._inbox_identity: tuple[int, int] | None = None
        self._inbox_lost = False
        self._observer: InboxObserver | None = None
        self._threads = ThreadFailures()
        # While the observer is down (died, or could not start): when to try again,
        # and how long the next wait is if the new one dies soon as well.
        self._next_observer_start = 0.0
        self._restart_delay = 0.0
        self._last_restart = float("-inf")  # the first death is restarted from at once
        # Opt-in ([metrics] address): recorded from the worker, served after READY.
        self._metrics = (
            Metrics(lambda: self.worker.queue_depth()) if config.metrics.address else None
        )
        self.settler = Settler(
            config.watch.settle_seconds, self._offer_settled, stat=self.inbox.lstat
        )
        self.worker = Worker(
            config,
            self.inbox,
            make_analyzer or build_analyzer,
            defer=self.settler.defer,
            metrics=self._metrics,
            dry_run=dry_run,
        )

    def _offer_settled(self, path: Path) -> None:
        if self.inbox.accepts(path):
            self.worker.offer(path)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
            return
        self._signals += 1
        if self._signals > 1:
            # A second signal: stop now. Pending ledger rows let the next start settle
            # a move cut short.
            os._exit(130)
        self.worker.stopping.set()

    def status_line(self) -> str:
        counts = self.worker.counts
        judged = sum(counts[k] for k in ("keep", "reject", "review", "unreadable", "not_image"))
        lost = f"; inbox lost, waiting for {self.folders.root}" if self._inbox_lost else ""
        return (
            f"judged {judged} (keep {counts['keep']}, reject {counts['reject']}, "
            f"review {counts['review']}, unreadable {counts['unreadable']}, "
            f"not an image {counts['not_image']}, errors {counts['error']}); "
            f"queue {self.worker.queue_depth()}/{self.worker.queue_size()}{lost}"
        )

    def _apply_reload(self) -> None:
        self._reload = False
        try:
            new = self._overrides(load_config(self._config_path))
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
        if new.logging != self.config.logging:
            daemon_logging(new.logging)
        self.config = new
        self.worker.reload(new)  # policy and actions, [actions] mode included
        self._log.info(
            "reloaded",
            policy=new.policy.model_dump(),
            actions=new.actions.model_dump(),
            logging=new.logging.model_dump(),
        )

    def run(self) -> int:
        """Load, recover, watch, and on SIGTERM/SIGINT stop cleanly. Returns the exit code."""
        with self._threads:  # a thread that dies says why, as an event
            return self._run()

    def _run(self) -> int:
        if not self._have_inbox():
            return ExitCode.CONFIG
        previous = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        worker = self.worker
        try:
            self._log.info(
                "starting", inbox=str(self.folders.root), ledger=str(self.folders.ledger)
            )
            # Watch before the start-up pass, so a file arriving during it is not missed;
            # an inbox replaced while the models load is found lost on the first tick.
            self._inbox_identity = _identity(self.folders.root)
            self._observer = self._new_observer()
            self._observer.start()
            not_started = self._start_worker()
            if not_started is not None:
                return not_started
            self._notifier.ready(status=self.status_line())
            self._log.info("ready", inbox=str(self.folders.root), dry_run=self.dry_run)
            self._audit_watches()
            self._serve_metrics()
            self._main_loop()
            self._notifier.stopping(status="stopping: finishing the current file")
            self._log.info("stopping")
        finally:
            self._shut_down(previous)
        if worker.is_alive():
            self._log.error("stop_timeout", seconds=self.config.watch.stop_timeout)
            return ExitCode.FAILURE
        if worker.failure is not None:
            return exit_code(worker.failure)  # a ledger deleted or replaced: 5
        self._log.info("stopped", status=self.status_line())
        return ExitCode.OK

    def _have_inbox(self) -> bool:
        """The inbox is a folder, created if [watch] create_inbox says so; False (and
        said why) if it is missing and must not be created."""
        if self.folders.root.is_dir():
            return True
        if not self.config.watch.create_inbox:
            # A misspelt inbox must not become a new, guarded, empty folder.
            self._log.error(
                "no_inbox",
                inbox=str(self.folders.root),
                hint="create it, or set [watch] create_inbox = true",
            )
            return False
        self.folders.root.mkdir(parents=True, exist_ok=True)
        return True

    def _start_worker(self) -> int | None:
        """Start the worker and wait until its models are loaded: None once it is
        ready, else the exit code (it failed to start, or was stopped meanwhile)."""
        worker = self.worker
        worker.request_reconcile("start")
        worker.start()
        while not worker.started.wait(TICK):
            if worker.stopping.is_set():
                break
        if worker.failure is not None:
            error = worker.failure
            self._log.error("start_failed", error=str(error))
            return exit_code(error)
        if not worker.started.is_set():
            # Stopped while the models loaded: never ready, and nothing was touched.
            self._notifier.stopping(status="stopped while loading the models")
            self._log.info("stopped_while_loading")
            return ExitCode.OK
        return None

    def _shut_down(self, previous: dict[signal.Signals, _SignalHandler]) -> None:
        """Stop the worker and the observer, wait for both, close the metrics
        server and put the signal handlers back, in that order."""
        worker = self.worker
        worker.stop()
        observer = self._observer
        if observer is not None:
            observer.stop()
        worker.join(self.config.watch.stop_timeout)
        if observer is not None:
            observer.join(self.config.watch.stop_timeout)
        if self._metrics is not None:
            self._metrics.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _new_observer(self) -> InboxObserver:
        return InboxObserver(
            self.inbox,
            self.config.watch,
            self.settler,
            offer=self.worker.offer,
            reconcile=self.worker.request_reconcile,
        )

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            # Its threads are dead or end at once; never wait long on a wedged one.
            observer.join(1.0)
        if self._metrics is not None:
            self._metrics.watching.set(0)

    def _start_observer(self, now: float, why: str) -> bool:
        """A new observer on the inbox, and a pass over it for what arrived unwatched."""
        try:
            observer = self._new_observer()
            observer.start()
        except OSError as error:
            self._log.error("observer_start_failed", error=str(error), retry_in=OBSERVER_RETRY)
            self._next_observer_start = now + OBSERVER_RETRY
            return False
        self._observer = observer
        self._last_restart = now
        if self._metrics is not None:
            self._metrics.watching.set(1)
        self._log.info("observer_started", reason=why)
        self.worker.request_reconcile(why)
        self._audit_watches()
        return True

    def _follow_inbox(self, now: float) -> bool:
        """Whether the inbox is watched. One renamed, deleted or replaced is lost (the
        watches follow the old folder, or nothing): its observer stops, and when a
        folder is at the inbox's path again a new observer watches it and the whole
        inbox is walked (re-armed in place; polled every tick)."""
        current = _identity(self.folders.root)
        if current is not None and current == self._inbox_identity:
            return True
        if self._inbox_identity is not None:
            self._stop_observer()
            self._inbox_identity = None
            self._inbox_lost = True
            self._next_observer_start = now
            self._log.error(
                "inbox_lost",
                inbox=str(self.folders.root),
                now="replaced" if current is not None else "missing",
            )
        ready = current is not None and now >= self._next_observer_start
        if ready:
            self.worker.reopen_folders()  # before the pass the new observer asks for
        if ready and self._start_observer(now, "inbox re-armed"):
            self._inbox_identity = current
            self._inbox_lost = False
            self._log.info("inbox_rearmed", inbox=str(self.folders.root))
        return self._inbox_identity is not None

    def _keep_observing(self, now: float) -> None:
        """A dead observer thread is logged and counted, and a new observer replaces
        it (at once; after a growing wait, up to 30 s, if they keep dying)."""
        observer = self._observer
        if observer is not None:
            dead = observer.dead_threads()
            if not dead or _identity(self.folders.root) != self._inbox_identity:
                return  # alive; or the inbox just went, and took the emitter with it
            for thread in dead:
                self._log.error(
                    "observer_died",
                    thread=thread.name,
                    error=self._threads.error_of(thread),
                    consequence="arrivals wait for the next pass until a new observer runs",
                )
            if self._metrics is not None:
                self._metrics.observer_deaths.inc()
            self._stop_observer()
            soon = now - self._last_restart < 60.0  # a restarted one died again soon
            self._restart_delay = min(max(1.0, 2 * self._restart_delay), 30.0) if soon else 0.0
            self._next_observer_start = now + self._restart_delay
        if now >= self._next_observer_start:
            self._start_observer(now, "observer restarted")

    def _audit_watches(self) -> None:
        """Each folder inotify could not watch is an error and a metric, and is polled."""
        if self._observer is None:
            return
        for folder in self._observer.audit():
            self._log.error(
                "watch_failed",
                path=str(folder),
                reason="inotify could not watch this folder (fs.inotify.max_user_watches?); "
                "polled every poll_interval instead",
            )
            if self._metrics is not None:
                self._metrics.watch_failures.inc()
        if self._metrics is not None:
            self._metrics.unwatched.set(len(self._observer.unwatched))
            self._metrics.watch_audit.set(1 if self._observer.audit_available else 0)

    def _walk_arrivals(self, observer: InboxObserver) -> None:
        """The folders that arrived since the last tick, each walked once, a bounded
        number a tick; a walk cut short is counted and left to a pass."""
        deferred = observer.arrivals_deferred
        observer.walk_arrivals()
        if self._metrics is not None and observer.arrivals_deferred > deferred:
            self._metrics.arrivals_deferred.inc(observer.arrivals_deferred - deferred)

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
        worker = self.worker
        ping_every = self._notifier.watchdog_interval
        next_ping = next_status = time.monotonic()
        next_reconcile = time.monotonic() + watch.reconcile_interval
        # A pass for files gone stale walks the whole inbox, and names renamed away
        # (a finished download) may ask for one too: at most one a tenth of the
        # bound (1 to 60 s), so a stale file waits at most that much longer.
        stale_gap = min(60.0, max(1.0, watch.ignore_stale_seconds / 10))
        next_stale_pass = time.monotonic()
        tending = _Tending.starting(time.monotonic())
        while not worker.stopping.wait(TICK):
            now = time.monotonic()
            if self._follow_inbox(now):
                self._keep_observing(now)
            observer = self._observer
            if self._reload:
                self._apply_reload()
            if observer is not None:
                self._tend_observer(observer, now, tending)
            if self.settler:
                self.settler.release()
            gone_stale = now >= next_stale_pass and self.inbox.stale_due()
            if now >= next_reconcile:
                worker.request_reconcile("timer")
                next_reconcile = now + watch.reconcile_interval
            elif gone_stale:
                # A file with an ignored name has gone quiet: no event will say so, and
                # the next timed pass may be minutes away. The pass judges it.
                worker.request_reconcile("ignored file gone stale")
                next_stale_pass = now + stale_gap
            if now >= next_status:
                self._notifier.status(self.status_line())
                next_status = now + watch.status_interval
            if ping_every is not None and now >= next_ping:
                self._ping_watchdog(now, ping_every, observer)
                next_ping = now + ping_every

    def _tend_observer(self, observer: InboxObserver, now: float, tending: _Tending) -> None:
        """The observer's chores each tick: the folders that arrived walked, a pass on
        an event flood, its watches audited, the folders it cannot watch polled."""
        self._walk_arrivals(observer)
        seen = observer.events_seen - tending.events_seen
        tending.events_seen = observer.events_seen
        if seen > FLOOD_EVENTS_PER_TICK and now >= tending.next_flood_pass:
            self.worker.request_reconcile("event flood")
            tending.next_flood_pass = now + FLOOD_PASS_INTERVAL
        if observer.audit_due.is_set() and now >= tending.next_audit:
            self._audit_watches()  # walks the inbox: at most once a second
            tending.next_audit = now + 1.0
        if observer.unwatched and now >= tending.next_poll:
            observer.poll_unwatched()
            tending.next_poll = now + self.config.watch.poll_interval

    def _ping_watchdog(self, now: float, ping_every: float, observer: InboxObserver | None) -> None:
        # Ping only while the worker makes progress and the inbox is watched:
        # a hung model call, or an observer that cannot be restarted, must let
        # systemd's watchdog fire.
        # Waiting for a lost inbox to come back is the guard doing its job
        # (a restart by systemd could only fail to find it: exit 3).
        worker = self.worker
        if now - worker.heartbeat >= 2 * ping_every:
            self._log.error("worker_stalled", seconds=round(now - worker.heartbeat, 1))
        elif observer is None and not self._inbox_lost:
            self._log.error("watching_down", retry_in=round(self._next_observer_start - now, 1))
        else:
            self._notifier.watchdog()
