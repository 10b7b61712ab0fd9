"""watchdog's inotify observer, made to never follow a symlinked folder.

watchdog adds a folder's watches by path: for a folder just created or moved in it
calls `os.walk(path)`, and `os.walk` lists its top even when that is a symlink. An
uploader who swaps a new folder for a symlink to the inbox before watchdog reaches
it makes watchdog walk (and re-watch, and report events for) the whole inbox again
under the symlink's name, once per swap: tens of thousands of events, gigabytes,
and real uploads reported under paths the judge refuses (issue 18).

Here every folder is opened by descriptor from the root, no component followed,
and its watch is added through that descriptor (`/proc/self/fd/N`), so a watch is
only ever on the very folder opened, recorded under the path it was opened by. A
symlink is never walked nor watched. watchdog's own walks of a new folder, which
only invent events for what it holds, are dropped: the observer walks each arrived
folder itself, by descriptor (`InboxObserver.walk_arrivals`).

Threads: watchdog runs three per inotify observer: the reader (`InotifyFD`, which
reads the kernel's events and adds the watches of new folders), the emitter (turns
them into events) and the dispatcher (the observer itself, which calls the
handler). An exception on any of them ends that thread and nothing else: the
guard's main loop checks they are alive (`observer_threads`).

The stock reader warns `Callback with id ... already exists` (a RuntimeWarning) when
its watch group adds a folder it already watches, which it does by design when nested
folders are created together (`.facesieve/quarantine` and `.facesieve/quarantine/sub`
made ~0.1 ms apart). Under `-W error` (the test suite's `filterwarnings = error`, or
`PYTHONWARNINGS=error`) the warning is an exception on the reader, and every inotify
event after it is lost. Here re-adding the callback a folder already has is the
no-op it is, and says nothing (`_Reader`).
"""

from __future__ import annotations

import ctypes
import os
import stat
import threading
from typing import Any

from watchdog.events import DirCreatedEvent, DirModifiedEvent, DirMovedEvent
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyEmitter, InotifyWatchGroup
from watchdog.observers.inotify_c import (
    InotifyConstants,
    InotifyEvent,
    InotifyFD,
    Mask,
    WatchDescriptor,
    inotify_add_watch,
)
from watchdog.observers.inotify_move_event_grouper import PathedInotifyEvent

from .safefs import open_below

__all__ = ["SafeInotifyObserver", "make_observer", "name_threads", "observer_threads"]

_PROC_FD = "/proc/self/fd"


class _SafeWatchGroup(InotifyWatchGroup):
    """The watches of one recursive watch, each added through a held descriptor."""

    def _add_all_callbacks(self, path: bytes) -> None:
        # The root is the caller's to name; everything below is reached by descriptor.
        try:
            fd = self._open(path)
        except OSError:
            if path == self.path:
                raise
            return  # gone, or a symlink now: never walked, never watched
        try:
            if not self.is_recursive:
                self._watch_held(path, fd)
                return
            for top, _, _, top_fd in os.fwalk(b".", dir_fd=fd, follow_symlinks=False):
                # fwalk opens each subfolder from its parent's descriptor and checks it is
                # the folder it listed, never a symlink swapped in since.
                full = path if top == b"." else os.path.join(path, top[2:])
                self._watch_held(full, top_fd)
        finally:
            os.close(fd)

    def _open(self, path: bytes) -> int:
        root = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if path == self.path:
            return root
        try:
            parts = os.fsdecode(os.path.relpath(path, self.path)).split(os.sep)
            if parts[0] == "..":
                raise OSError(f"{path!r} is not below the watched root")
            return open_below(root, parts)
        finally:
            os.close(root)

    def _watch_held(self, path: bytes, fd: int) -> None:
        """A watch on the folder `fd` holds, recorded as `path`."""
        # Following /proc/self/fd/N reaches exactly the folder held, whatever its
        # path has become; IN_ONLYDIR refuses anything else.
        mask = Mask(
            (self.event_mask & ~InotifyConstants.IN_DONT_FOLLOW) | InotifyConstants.IN_ONLYDIR
        )
        held = os.fsencode(f"{_PROC_FD}/{fd}")
        try:
            # The kernel answers a folder already watched with its watch: then only
            # its path changed (moved while its events were queued), and the stale
            # path is dropped rather than watchdog warned of a second callback.
            wd = WatchDescriptor(inotify_add_watch(self._inotify_fd._inotify_fd, held, mask))
            if wd == -1:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            if wd not in self._active_callbacks_by_watch:
                wd = self._inotify_fd.add_callback(held, mask, self._callback, self._id)
        except OSError:
            if not os.path.isdir(_PROC_FD):
                wd = self._watch_by_path(path, fd)
            elif path == self.path:
                raise
            else:
                return  # the kernel's watch limit: the audit finds it unwatched
        stale = self._active_callbacks_by_watch.get(wd)
        if stale is not None and stale != path and self._active_callbacks_by_path.get(stale) == wd:
            del self._active_callbacks_by_path[stale]
        self._active_callbacks_by_path[path] = wd
        self._active_callbacks_by_watch[wd] = path

    def _watch_by_path(self, path: bytes, fd: int) -> Any:
        """No /proc: by path, the last component never followed, if it is still `fd`'s."""
        held = os.fstat(fd)
        now = os.lstat(path)
        if not stat.S_ISDIR(now.st_mode) or (now.st_dev, now.st_ino) != (
            held.st_dev,
            held.st_ino,
        ):
            raise OSError(f"{path!r} changed while its watch was added")
        mask = Mask(self.event_mask | InotifyConstants.IN_DONT_FOLLOW | InotifyConstants.IN_ONLYDIR)
        return self._inotify_fd.add_callback(path, mask, self._callback, self._id)

    def _recursive_simulate(self, src_path: bytes) -> list[InotifyEvent]:
        # watchdog invents a created event for everything a new folder holds, by a
        # walk that follows a symlinked top; the observer walks it itself, by descriptor.
        return []


class _SafeEmitter(InotifyEmitter):
    """watchdog's emitter with `_SafeWatchGroup`, and no invented events for a folder's
    contents (watchdog walks a moved-in folder by path for them, through a symlink too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = "facesieve-emitter"

    def on_thread_start(self) -> None:
        self._inotify = _SafeWatchGroup(
            self._inotify_fd,
            os.fsencode(self.watch.path),
            is_recursive=self.watch.is_recursive,
            event_mask=self.get_event_mask_from_filter(),
            follow_symlink=False,
        )

    def build_and_queue_event(self, event: Any, *, full_events: bool = False) -> None:
        if isinstance(event, PathedInotifyEvent):
            if event.ev.is_moved_to and event.ev.is_directory and not full_events:
                path = self._decode_path(event.path)
                self.queue_event(DirCreatedEvent(path))
                self.queue_event(DirModifiedEvent(os.path.dirname(path)))
                return
            super().build_and_queue_event(event, full_events=full_events)
            return
        move_from, move_to = event
        if not move_from.ev.is_directory:
            super().build_and_queue_event(event, full_events=full_events)
            return
        source = self._decode_path(move_from.path)
        dest = self._decode_path(move_to.path)
        self.queue_event(DirMovedEvent(source, dest))
        self.queue_event(DirModifiedEvent(os.path.dirname(source)))
        self.queue_event(DirModifiedEvent(os.path.dirname(dest)))


class _Reader(InotifyFD):
    """watchdog's reader, for which re-adding the callback a folder already has is a
    no-op, not a warning (see the module's docstring)."""

    def _add_callback(self, path: bytes, mask: Any, callback: Any, id_: Any) -> Any:
        if hasattr(self, "_get_or_create_watch"):
            watch = self._get_or_create_watch(path, mask)
            if watch.callbacks.get(id_) is callback:
                return watch.wd  # the same group watching the same folder again
        return super()._add_callback(path, mask, callback, id_)


class SafeInotifyObserver(BaseObserver):
    """watchdog's `InotifyObserver`, its emitters `_SafeEmitter`, its threads named."""

    def __init__(self) -> None:
        self._inotify_fd = _Reader()
        self._inotify_fd.name = "facesieve-inotify"
        self._inotify_fd.start()
        super().__init__(_SafeEmitter, inotify_fd=self._inotify_fd)
        self.name = "facesieve-observer"

    def on_thread_stop(self) -> None:
        super().on_thread_stop()
        self._inotify_fd.stop()
        self._inotify_fd.join()


def make_observer(*, polling: bool, poll_interval: float) -> Any:
    """A new, not yet started observer: `SafeInotifyObserver`, or polling when asked."""
    if polling:
        from watchdog.observers.polling import PollingObserver

        return PollingObserver(timeout=poll_interval)
    return SafeInotifyObserver()


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
