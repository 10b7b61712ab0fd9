"""The observer: filesystem events under the inbox become offers of complete files.

It runs on watchdog's threads and never blocks them: an offer goes to the
worker's bounded queue or, when that is full, becomes a request for a
reconciliation pass (the inbox itself is the backlog). Candidacy is the inbox's
(`Inbox.accepts`), the same rule a scan walks by.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
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

from .config import WatchConfig
from .inbox import Inbox

__all__ = ["InboxObserver", "Settler"]


class Settler:
    """Files that may still be written: offered once their size and mtime stay put.

    Polling mode has no close event, and a reconciliation pass meets files written
    moments ago; both wait here `settle_seconds` for the writer to finish.
    """

    def __init__(self, settle_seconds: float, offer: Callable[[Path], None]) -> None:
        self._settle = settle_seconds
        self._offer = offer
        self._waiting: dict[Path, tuple[float, tuple[int, int] | None]] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def wait_for(self, path: Path) -> None:
        """(Re)start the wait: the file just changed."""
        with self._lock:
            self._waiting[path] = (time.monotonic(), None)

    def defer(self, paths: list[Path]) -> None:
        """Files found too young by a reconciliation pass; a wait already running goes on."""
        with self._lock:
            for path in paths:
                self._waiting.setdefault(path, (time.monotonic(), None))

    def release(self) -> None:
        """Offer the files that stayed put long enough (the main thread, every tick)."""
        now = time.monotonic()
        with self._lock:
            for path, (since, seen) in list(self._waiting.items()):
                try:
                    info = path.lstat()
                except OSError:
                    del self._waiting[path]
                    continue
                current = (info.st_size, info.st_mtime_ns)
                if current != seen:
                    self._waiting[path] = (now, current)
                elif now - since >= self._settle:
                    del self._waiting[path]
                    self._offer(path)


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


class InboxObserver:
    """watchdog's observer on the inbox, offering each candidate file it sees complete.

    `offer` must not block (the worker's `offer` drops into reconciliation when full);
    `reconcile(why)` asks for a pass over the whole inbox.
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
        if watch.polling:
            from watchdog.observers.polling import PollingObserver

            self._observer: Any = PollingObserver(timeout=watch.poll_interval)
            settle: Callable[[Path], None] | None = self._settle
        else:
            from watchdog.observers import Observer

            self._observer = Observer()
            settle = None
        handler = _InboxEvents(self.offer, settle, lambda: reconcile("folder moved in"))
        self._observer.schedule(handler, str(inbox.root), recursive=True)

    def offer(self, path: Path) -> None:
        if self._inbox.accepts(path):
            self._offer(path)

    def _settle(self, path: Path) -> None:
        if self._inbox.accepts(path):
            self._settler.wait_for(path)

    def start(self) -> None:
        logging.getLogger("watchdog").addHandler(self._alarm)
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()

    def join(self, timeout: float) -> None:
        self._observer.join(timeout)
        logging.getLogger("watchdog").removeHandler(self._alarm)
