"""The argparse pieces several commands share: options, ways to choose files, value types."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

__all__ = [
    "add_common",
    "add_file_choice",
    "add_folder_argument",
    "add_who_argument",
    "argument_type",
    "parse_duration",
    "parse_since",
]


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


_T = TypeVar("_T")


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `2w`, `45s`, or several at once (`1d12h`).

    Raises:
        ValueError: not a duration, or zero.
    """
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    if not parts or _DURATION.sub("", compact).strip():
        raise ValueError(f"{text!r} is not a duration such as 30d, 12h, 90m or 2w")
    seconds = sum(float(amount) * _UNITS[unit] for amount, unit in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return timedelta(seconds=seconds)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """A moment: a duration back from now (`2h`), or an ISO date or time (UTC unless given).

    Raises:
        ValueError: neither.
    """
    try:
        return (now or datetime.now(UTC)) - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (12h, 7d) nor a date (2024-05-01T12:00)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def argument_type(parse: Callable[[str], _T]) -> Callable[[str], _T]:
    """An argparse `type` that reports a bad value as a usage error (exit 2)."""

    def convert(text: str) -> _T:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from error

    convert.__name__ = parse.__name__
    return convert


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML config (default: built-in)"
    )
    parser.add_argument(
        "--require",
        choices=("face", "man", "woman"),
        help="what an image must show to be kept (policy.require)",
    )
    parser.add_argument(
        "--faces", choices=("any", "all", "largest"), help="which faces must match (policy.faces)"
    )
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--json", action="store_true", help="one JSON object per image on stdout")


def add_folder_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "folder",
        type=Path,
        nargs="?",
        metavar="DIR",
        help="the folder that was scanned (default: folders.inbox, or ledger.path, of --config)",
    )


def add_file_choice(
    parser: argparse.ArgumentParser, *, id_help: str, path_help: str
) -> argparse._ArgumentGroup:
    """`--id N` and `--path FILE` (both repeatable) in a group of their own, returned
    so that a command can add its own ways of choosing files to it."""
    which = parser.add_argument_group("which files (at least one)")
    which.add_argument(
        "--id", dest="ids", type=int, action="append", default=[], metavar="N", help=id_help
    )
    which.add_argument(
        "--path",
        dest="paths",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help=path_help,
    )
    return which


def add_who_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--who", metavar="NAME", help="who decides, for the ledger (default: the OS user)"
    )
