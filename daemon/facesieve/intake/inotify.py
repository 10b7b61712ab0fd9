"""watchdog's observer as facesieve runs it: named threads, and no warning that
kills the inotify reader.

watchdog runs three threads per inotify observer: the reader (`InotifyFD`, which
reads the kernel's events and adds the watches of new folders), the emitter (turns
them into events) and the dispatcher (the observer itself, which calls the
handler). An exception on any of them ends that thread and nothing else: the
guard's main loop checks they are alive (`observer_threads`).

The reader warns `Callback with id ... already exists` (a RuntimeWarning) when its
watch group adds a folder it already watches, which it does by design when nested
folders are created together: the walk after `q`'s create event finds and watches
`q/sub`, then `q/sub`'s own create event adds it again. A quarantine does exactly
that (`.facesieve/quarantine` and `.facesieve/quarantine/sub` made ~0.1 ms apart).
Under `-W error` (the test suite's `filterwarnings = error`, or
`PYTHONWARNINGS=error`) the warning is an exception on the reader, and every inotify
event after it is lost. Here re-adding the callback a folder already has is the
no-op it is, and says nothing.
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
    from watchdog.observers.api import DEFAULT_OBSERVER_TIMEOUT, BaseObserver
    from watchdog.observers.inotify import InotifyEmitter, InotifyObserver
    from watchdog.observers.inotify_c import InotifyFD

    if not hasattr(InotifyFD, "_get_or_create_watch"):
        # Another watchdog: its own observer, warning and all (the liveness check
        # still replaces a reader that dies of it).
        return InotifyObserver()

    class _Reader(InotifyFD):
        def _add_callback(self, path: bytes, mask: Any, callback: Any, id_: Any) -> Any:
            watch = self._get_or_create_watch(path, mask)
            if watch.callbacks.get(id_) is callback:
                return watch.wd  # the same group watching the same folder again
            return super()._add_callback(path, mask, callback, id_)

    class _Observer(InotifyObserver):
        def __init__(self) -> None:
            # InotifyObserver.__init__, with the reader above (started at once, as there).
            reader = _Reader()
            reader.name = "facesieve-inotify"
            reader.start()
            self._inotify_fd = reader
            BaseObserver.__init__(
                self, InotifyEmitter, timeout=DEFAULT_OBSERVER_TIMEOUT, inotify_fd=reader
            )

    return _Observer()
