"""structlog set-up: readable lines on a terminal, one JSON object per line elsewhere."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from typing import Any, Literal, TextIO

import structlog

from .paths import OUTPUT_ERRORS, json_safe

__all__ = ["configure_logging", "get_logger"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _TqdmAwareWriter:
    """Writes log lines above a live progress bar instead of through it."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        from tqdm import tqdm

        tqdm.write(message, file=self._stream)

    log = debug = info = warning = warn = error = critical = exception = msg


_PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}


def _journal_sender() -> Any:
    """systemd-python's journal.send when stdout is a journald stream, else None."""
    if not os.environ.get("JOURNAL_STREAM"):
        return None
    try:
        from systemd import journal
    except ImportError:
        return None
    return journal.send


def _to_journal(send: Any) -> Any:
    def render(logger: Any, name: str, event: dict[str, Any]) -> str:
        fields = {
            key.upper(): value if isinstance(value, str) else json.dumps(value, default=str)
            for key, value in event.items()
            if key not in ("event", "level", "timestamp")
        }
        level = str(event.get("level", "info"))
        send(
            str(event.get("event", "")),
            PRIORITY=str(_PRIORITIES.get(level, 6)),
            SYSLOG_IDENTIFIER="facesieve",
            **fields,
        )
        raise structlog.DropEvent

    return render


def _lossless_names(logger: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
    # A file name that is not UTF-8 must neither crash the renderer nor reach a
    # JSON reader as a lone surrogate: readable text plus `<key>_bytes`.
    return json_safe(event)


def configure_logging(
    *,
    level: str = "info",
    format: Literal["auto", "json", "console"] = "auto",
    stream: TextIO | None = None,
    journal: bool = False,
) -> None:
    """Route structlog events to `stream` (stderr by default) as JSON or console lines.

    With `journal`, under journald (JOURNAL_STREAM set) and with systemd-python
    installed, each event goes to the journal with its fields as journal fields.
    """
    stream = stream or sys.stderr
    if isinstance(stream, io.TextIOWrapper):
        stream.reconfigure(errors=OUTPUT_ERRORS)
    use_console = format == "console" or (format == "auto" and stream.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _lossless_names,
    ]
    send = _journal_sender() if journal and format == "auto" else None
    factory: Any
    if send is not None:
        processors.append(_to_journal(send))
        factory = structlog.WriteLoggerFactory(file=stream)
    elif use_console:
        processors.append(structlog.dev.ConsoleRenderer(colors=stream.isatty()))
        factory = lambda *_: _TqdmAwareWriter(stream)  # noqa: E731
    else:
        processors += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=str),
        ]
        factory = structlog.WriteLoggerFactory(file=stream)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )


def get_logger() -> Any:
    return structlog.get_logger("facesieve")
