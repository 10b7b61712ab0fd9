"""The observer: filesystem events under the inbox become offers of complete files.

It runs on watchdog's threads and never blocks them: an offer goes to the
worker's bounded queue or, when that is full, becomes a request for a
reconciliation pass (the inbox itself is the backlog). Candidacy is the inbox's
(`Inbox.accepts`), the same rule a scan walks by.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from ..config import WatchConfig
from ..logs import get_logger
from .inbox import Inbox
from .inotify import make_observer, name_threads, observer_threads
from .safefs import open_below

__all__ = [
    "ARRIVAL_FILES_PER_PASS",
    "ARRIVAL_FOLDERS_PER_PASS",
    "InboxObserver",
    "Settler",
    "WatchAuditError",
]

# What one tick of the main loop walks of the folders that arrived: enough for any
# honest upload (a folder of photos), little enough that a flood of new folders
# costs a tick a few tens of milliseconds; the rest waits for the next tick.
ARRIVAL_FOLDERS_PER_PASS = 256
ARRIVAL_FILES_PER_PASS = 5000
# Folders noted and not yet walked; beyond this the inbox is the backlog (a pass).
MAX_PENDING_ARRIVALS = 20000


class Settler:
    """Files that may still be written: offered once their size and mtime stay put.

    Polling mode has no close event, and a reconciliation pass meets files written
    moments ago; both wait here `settle_seconds` for the writer to finish.
    """

    def __init__(
        self,
        settle_seconds: float,
        offer: Callable[[Path], None],
        stat: Callable[[Path], os.stat_result | None] | None = None,
    ) -> None:
        self._settle = settle_seconds
        self._offer = offer
        # The inbox's own lstat: no symlinked folder on the way is followed.
        self._stat = stat or _lstat
        # path -> (quiet since, its last stat, not to be offered before: monotonic)
        self._waiting: dict[Path, tuple[float, tuple[int, int, int] | None, float]] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def wait_for(self, path: Path) -> None:
        """(Re)start the wait: the file just changed."""
        with self._lock:
            self._waiting[path] = (time.monotonic(), None, 0.0)

    def forget(self, path: Path) -> None:
        """The writer closed the file: it is offered now, and waits no more."""
        with self._lock:
            self._waiting.pop(path, None)

    def defer(self, paths: list[Path], retry_in: float = 0.0) -> None:
        """Files to look at again: found too young by a reconciliation pass, or deferred
        by the worker, not before `retry_in` seconds (`Outcome.retry_in`: an unreadable
        file stays provisional while young) unless they change meanwhile. A wait
        already running goes on."""
        now = time.monotonic()
        with self._lock:
            for path in paths:
                self._waiting.setdefault(path, (now, None, now + retry_in))

    def release(self) -> None:
        """Offer the files that stayed put long enough (the main thread, every tick)."""
        now = time.monotonic()
        with self._lock:
            for path, (since, seen, due) in list(self._waiting.items()):
                info = self._stat(path)
                if info is None:
                    del self._waiting[path]
                    continue
                current = (info.st_size, info.st_mtime_ns, info.st_ctime_ns)
                if current != seen:
                    # Changed since it was deferred: judged again once quiet, no later.
                    self._waiting[path] = (now, current, due if seen is None else 0.0)
                elif now - since >= self._settle and now >= due:
                    del self._waiting[path]
                    self._offer(path)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except OSError:
        return None


class _InboxEvents(FileSystemEventHandler):
    """Turns filesystem events into offers of complete files. Never blocks."""

    def __init__(
        self,
        offer: Callable[[Path], None],
        settle: Callable[[Path], None],
        closed: Callable[[Path], None],
        arrived: Callable[[Path, bool], None],
    ) -> None:
        self._offer = offer
        self._settle = settle
        self._closed = closed
        self._arrived = arrived
        self.seen = 0  # events dispatched since start (only this thread writes it)

    def dispatch(self, event: FileSystemEvent) -> None:
        self.seen += 1
        super().dispatch(event)

    def on_closed(self, event: FileClosedEvent) -> None:
        # IN_CLOSE_WRITE: the writer is done. IN_CLOSE_NOWRITE (our own reads) is
        # a different event class and never reaches here.
        self._closed(Path(os.fsdecode(event.src_path)))

    def on_moved(self, event: FileSystemEvent) -> None:
        if isinstance(event, DirMovedEvent):
            # A folder moved in brings files no event announces: walked at once.
            self._arrived(Path(os.fsdecode(event.dest_path)), True)
        elif isinstance(event, FileMovedEvent):
            self._offer(Path(os.fsdecode(event.dest_path)))

    def on_created(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileCreatedEvent):
            # Usually still being written, and its close event follows. A hard link,
            # a file created in a folder before its watch was added, or a network
            # filesystem's file has none: each settles and is judged after
            # settle_seconds unless a close event comes first.
            self._settle(Path(os.fsdecode(event.src_path)))
        else:
            # A folder created (or moved in from outside the inbox, which inotify
            # reports as created): files may be in it before it is watched.
            self._arrived(Path(os.fsdecode(event.src_path)), False)

    def on_modified(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileModifiedEvent):
            self._settle(Path(os.fsdecode(event.src_path)))


_HANDLED = (
    FileClosedEvent,
    FileCreatedEvent,
    DirCreatedEvent,
    FileMovedEvent,
    DirMovedEvent,
    FileModifiedEvent,
)


class _OverflowAlarm(logging.Handler):
    """watchdog reports a kernel event-queue overflow only as a log line."""

    def __init__(self, alarm: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self._alarm = alarm

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._alarm()


class InboxObserver:
    """watchdog's observer on the inbox, offering each candidate file it sees complete.

    `offer` must not block (the worker's `offer` drops into reconciliation when full);
    `reconcile(why)` asks for a pass over the whole inbox.

    watchdog swallows a failed inotify_add_watch below the root (the kernel's
    `max_user_watches`): `audit` finds the folders left without a watch, and
    `poll_unwatched` looks into them every `poll_interval` instead.
    """

    def __init__(
        self,
        inbox: Inbox,
        watch: WatchConfig,
        settler: Settler,
        *,
        offer: Callable[[Path], None],
        reconcile: Callable[[str], None],
    ) -> None:
        self._inbox = inbox
        self._settler = settler
        self._offer = offer
        self._alarm = _OverflowAlarm(lambda: reconcile("inotify overflow"))
        self._log = get_logger()
        self._polling = watch.polling
        self._observer: Any = make_observer(
            polling=watch.polling, poll_interval=watch.poll_interval
        )
        handler = _InboxEvents(self.offer, self._settle, self._closed, self._arrived)
        self._handler = handler
        # Only the events the handler uses: with watchdog's default mask, every folder
        # facesieve itself opens (walks, audits, adding watches) and every file it reads
        # came back as open and close-nowrite events, a flood feeding itself.
        self._observer.schedule(
            handler, str(inbox.root), recursive=True, event_filter=list(_HANDLED)
        )
        name_threads(self._observer)
        self._started = False
        self._reconcile = reconcile
        # Folders that arrived since the last walk, merged: folder -> moved in (complete).
        self._arrivals: dict[Path, bool] = {}
        self._arrivals_lock = threading.Lock()
        self.arrivals_deferred = 0  # folders left to a reconciliation pass, since start
        # Folders inotify could not watch, polled instead: folder -> its files' states.
        self.unwatched: dict[Path, dict[Path, tuple[int, int]]] = {}
        self.audit_due = threading.Event()
        # False once watchdog's internals no longer say which folders are watched.
        self.audit_available = True

    @property
    def events_seen(self) -> int:
        """Filesystem events handled since start: the main loop tells a flood by it."""
        return self._handler.seen

    def offer(self, path: Path) -> None:
        if not self._inbox.accepts(path):
            return
        info = self._inbox.lstat(path)
        if info is not None and stat.S_ISLNK(info.st_mode) and os.path.isdir(path):
            # As the inbox's walk does: a symlinked folder is no file to judge, and
            # queueing one per swap let an uploader fill the worker's queue.
            self._log.info("skipped", path=str(path), reason="symlinked folder: never followed")
            return
        self._offer(path)

    def _settle(self, path: Path) -> None:
        if self._inbox.accepts(path):
            self._settler.wait_for(path)

    def _closed(self, path: Path) -> None:
        self._settler.forget(path)
        self.offer(path)

    def _arrived(self, folder: Path, complete: bool) -> None:
        """A folder appeared in the inbox: walked at the next tick, not at the next pass.

        Only noted here (watchdog's thread never walks): however many events a burst
        brings for a folder, it is walked once (`walk_arrivals`). A folder moved in
        holds complete files (a rename is atomic); a new folder's may still be written.
        """
        if not self._inbox.accepts(folder):
            return
        with self._arrivals_lock:
            if folder in self._arrivals or len(self._arrivals) < MAX_PENDING_ARRIVALS:
                # Moved in and also created in one burst: its files settle first.
                self._arrivals[folder] = self._arrivals.get(folder, True) and complete
                return
        # More new folders than a tick can walk: the inbox itself is the backlog.
        self._reconcile("arrivals over cap")

    def walk_arrivals(
        self,
        max_folders: int = ARRIVAL_FOLDERS_PER_PASS,
        max_files: int = ARRIVAL_FILES_PER_PASS,
    ) -> int:
        """Walk the folders that arrived since the last call (the main thread, every
        tick), each once, a folder below another one walked with it. At most
        `max_folders` are walked and `max_files` files offered in one call; folders
        beyond that wait for the next call, and the rest of a walk cut short is left
        to a reconciliation pass (logged `arrivals_deferred`, counted in
        `arrivals_deferred`). Returns how many folders were walked."""
        with self._arrivals_lock:
            if not self._arrivals:
                return 0
            arrived, self._arrivals = self._arrivals, {}
        self.audit_due.set()  # were their folders given watches? (the main loop checks)
        ordered = sorted(arrived)
        batch: list[Path] = []
        for folder in ordered:
            if batch and batch[-1] in folder.parents:
                # Walked with the folder it lies in: a move into a new folder settles.
                arrived[batch[-1]] = arrived[batch[-1]] and arrived[folder]
                continue
            batch.append(folder)
        walked = files = 0
        for folder in batch:
            if walked >= max_folders or files >= max_files:
                with self._arrivals_lock:  # the next tick's
                    self._arrivals[folder] = self._arrivals.get(folder, True) and arrived[folder]
                continue
            count, cut = self._walk_arrived(folder, arrived[folder], max_files - files)
            walked += 1
            files += count
            if cut:
                self.arrivals_deferred += 1
                self._log.warning(
                    "arrivals_deferred",
                    path=str(folder),
                    offered=count,
                    reason=f"over {max_files} files in one tick: the rest is the next pass's",
                )
                self._reconcile("arrival walk over budget")
        return walked

    def _walk_arrived(self, folder: Path, complete: bool, budget: int) -> tuple[int, bool]:
        """Offer (moved in) or settle (created) up to `budget` files under `folder`;
        how many, and whether there were more."""
        count = 0
        walk = self._inbox.walk(folder)
        try:
            for path in walk:
                if count >= budget:
                    return count, True
                count += 1
                if complete:
                    self.offer(path)
                else:
                    self._settle(path)
        finally:
            walk.close()
        self._log.info("folder_arrived", path=str(folder), files=count, moved_in=complete)
        return count, False

    def audit(self) -> list[Path]:
        """Folders that lost or never had an inotify watch since the last audit (the
        main thread). Each is then polled; the caller logs and counts them."""
        self.audit_due.clear()
        if self._polling:
            return []
        try:
            watched = _watched_folders(self._observer)
        except WatchAuditError as error:
            # Not a reason to stop guarding, but never a silent one: said once.
            if self.audit_available:
                self.audit_available = False
                self._log.error(
                    "watch_audit_unavailable",
                    reason=str(error),
                    consequence="a folder inotify cannot watch (fs.inotify.max_user_watches) "
                    "is neither reported nor polled; its files wait for a reconciliation pass",
                )
            return []
        if watched is None:
            return []  # an emitter not started yet: the next audit looks again
        managed = set(self._inbox.folders.managed())
        found = []
        # fwalk, not walk: a folder swapped for a symlink while listed is never entered.
        for folder, subfolders, _, _ in os.fwalk(self._inbox.root, follow_symlinks=False):
            subfolders[:] = [n for n in subfolders if Path(folder, n) not in managed]
            path = Path(folder)
            if os.fsencode(folder) in watched or path in self.unwatched:
                continue
            self.unwatched[path] = {}
            # What is there now is the start-up pass's or the arrival walk's to judge.
            self._poll(path, self.unwatched[path], settle=False)
            found.append(path)
        for path in [p for p in self.unwatched if os.fsencode(p) in watched or not p.is_dir()]:
            del self.unwatched[path]
        return found

    def poll_unwatched(self) -> None:
        """New or changed files in unwatched folders settle, then are judged."""
        for folder, seen in list(self.unwatched.items()):
            self._poll(folder, seen, settle=True)

    def _poll(self, folder: Path, seen: dict[Path, tuple[int, int]], *, settle: bool) -> None:
        try:
            # By descriptor from the root: a folder swapped for a symlink is not listed.
            root = os.open(self._inbox.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fd = open_below(root, folder.relative_to(self._inbox.root).parts)
            finally:
                os.close(root)
        except (OSError, ValueError):
            return
        states = {}
        try:
            for entry in os.scandir(fd):  # each entry stats through fd: used before it closes
                if not entry.is_file(follow_symlinks=False) or self._inbox.ignored(entry.name):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                states[folder / entry.name] = (info.st_size, info.st_mtime_ns)
        except OSError:
            return
        finally:
            os.close(fd)
        for path, state in states.items():
            if seen.get(path) != state:
                seen[path] = state
                if settle:
                    self._settle(path)

    def start(self) -> None:
        """Start watching.

        Raises:
            OSError: the inbox cannot be watched (gone, or the kernel's inotify limits).
        """
        logging.getLogger("watchdog").addHandler(self._alarm)
        try:
            self._observer.start()
        except BaseException:
            # watchdog's inotify reader runs from the observer's construction on.
            with contextlib.suppress(Exception):
                self._observer.stop()
            logging.getLogger("watchdog").removeHandler(self._alarm)
            raise
        self._started = True

    def dead_threads(self) -> list[threading.Thread]:
        """The observer's threads that ended while it should be watching (the main
        thread, every tick): events they would have carried are lost until a restart."""
        if not self._started:
            return []
        return [thread for thread in observer_threads(self._observer) if not thread.is_alive()]

    def stop(self) -> None:
        self._started = False  # its threads end now, as asked
        self._observer.stop()

    def join(self, timeout: float) -> None:
        self._observer.join(timeout)
        logging.getLogger("watchdog").removeHandler(self._alarm)


class WatchAuditError(Exception):
    """watchdog's internals are not what the audit reads: it cannot tell what is watched."""


def _watched_folders(observer: Any) -> set[bytes] | None:
    """The folders watchdog's inotify emitters really watch; None while one is starting.

    Raises:
        WatchAuditError: watchdog keeps them elsewhere (an upgrade renamed a private
            attribute read here).
    """
    found: set[bytes] = set()
    try:
        for emitter in observer.emitters:
            group = emitter._inotify
            if group is None:
                return None
            found.update(group._active_callbacks_by_path)
    except AttributeError as error:
        raise WatchAuditError(f"watchdog {_watchdog_version()}: {error}") from error
    return found


def _watchdog_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("watchdog")
    except metadata.PackageNotFoundError:
        return "(version unknown)"
