"""watchdog's observer as facesieve runs it, with named threads.

watchdog runs three threads per inotify observer: the reader (`InotifyFD`, which
reads the kernel's events and adds the watches of new folders), the emitter (turns
them into events) and the dispatcher (the observer itself, which calls the
handler). An exception on any of them ends that thread and nothing else: the
guard's main loop checks they are alive (`observer_threads`).
"""

from __future__ import annotations

import sys
import threading
from typing import Any

__all__ = ["make_observer", "name_threads", "observer_threads"]


def make_observer(*, polling: bool, poll_interval: float) -> Any:
    """A new, not yet started observer (inotify on Linux; polling when asked)."""
    if polling:
        from watchdog.observers.polling import PollingObserver

        return PollingObserver(timeout=poll_interval)
    if not sys.platform.startswith("linux"):
        from watchdog.observers import Observer

        return Observer()
    return _inotify_observer()


def name_threads(observer: Any) -> None:
    """facesieve's names on the observer's threads, so a log line, a traceback or
    `py-spy dump` says which one it is. Call after `schedule` (it creates the emitters)."""
    observer.name = "facesieve-observer"
    for emitter in observer.emitters:
        emitter.name = "facesieve-emitter"
    reader = getattr(observer, "_inotify_fd", None)
    if isinstance(reader, threading.Thread):
        reader.name = "facesieve-inotify"


def observer_threads(observer: Any) -> list[threading.Thread]:
    """Every thread the observer needs alive to report events: dispatcher, emitters and
    (inotify) the reader."""
    threads: list[threading.Thread] = [observer, *observer.emitters]
    reader = getattr(observer, "_inotify_fd", None)
    if isinstance(reader, threading.Thread):
        threads.append(reader)
    return threads


def _inotify_observer() -> Any:
    from watchdog.observers.inotify import InotifyObserver

    return InotifyObserver()
