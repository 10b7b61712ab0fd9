"""Threads that die: said as a structlog event, and remembered for the guard.

An exception that ends a thread (facesieve's own or watchdog's) is otherwise only a
traceback on stderr, easily lost under a service manager. `ThreadFailures` hooks
`threading.excepthook` while the guard runs: each such exception becomes a
`thread_failed` event with its traceback, then goes to the hook it replaced (the
interpreter's, which prints it, or a test runner's), and the guard's liveness check
looks up why a thread it found dead ended.
"""

from __future__ import annotations

import threading
import traceback
from types import TracebackType
from typing import Any

from ..logs import get_logger

__all__ = ["ThreadFailures"]


class ThreadFailures:
    """`with ThreadFailures() as failures:` logs every thread's uncaught exception."""

    def __init__(self) -> None:
        self._log = get_logger()
        self._lock = threading.Lock()
        self._errors: dict[int, str] = {}  # id(thread) -> its exception, as text
        self._previous: Any = None

    def __enter__(self) -> ThreadFailures:
        self._previous = threading.excepthook
        threading.excepthook = self._hook
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if threading.excepthook == self._hook:
            threading.excepthook = self._previous

    def error_of(self, thread: threading.Thread) -> str | None:
        """Why `thread` ended, if it ended by an exception; None if it returned."""
        with self._lock:
            return self._errors.get(id(thread))

    def _hook(self, args: Any) -> None:
        thread = args.thread
        error = (
            "".join(traceback.format_exception_only(args.exc_type, args.exc_value)).strip()
            if args.exc_value is not None
            else args.exc_type.__name__
        )
        if thread is not None:
            with self._lock:
                self._errors[id(thread)] = error
        self._log.error(
            "thread_failed",
            thread=thread.name if thread is not None else None,
            error=error,
            traceback="".join(
                traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)
            ),
        )
        self._previous(args)
