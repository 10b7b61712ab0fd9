"""File names that are not valid UTF-8, stored and shown without loss.

Linux names are bytes. Python turns the bytes that are not UTF-8 into lone
surrogates (`b"bad\\xff.jpg"` -> `"bad\\udcff.jpg"`), which SQLite, JSON readers
and terminals refuse. So: the ledger stores such a name as its exact bytes (a
BLOB; every other name stays TEXT, readable by any SQLite client), and output
shows a readable form (`bad\\xff.jpg`) plus, only where they differ, the exact
bytes in base64 (`path_bytes`).
"""

from __future__ import annotations

import base64
import codecs
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "OUTPUT_ERRORS",
    "from_sql",
    "is_lossless",
    "json_safe",
    "readable",
    "to_sql",
]

OUTPUT_ERRORS = "facesieve-bytes"  # a codec error handler for stdout and stderr


def is_lossless(text: str) -> bool:
    """Whether `text` is valid UTF-8 as it stands (no surrogate-escaped bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def readable(path: str | os.PathLike[str]) -> str:
    """A printable form of a path: undecodable bytes as `\\xNN`, the rest as it is."""
    text = os.fspath(path)
    if is_lossless(text):
        return text
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def to_sql(path: str | os.PathLike[str]) -> str | bytes:
    """What the ledger stores for a path: TEXT when it is UTF-8, its exact bytes otherwise."""
    text = os.fspath(path)
    return text if is_lossless(text) else os.fsencode(text)


def from_sql(value: str | bytes) -> str:
    """The path `to_sql` stored, as Python names it (surrogate-escaped if need be)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def json_safe(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `data` that any JSON reader takes: every string that hides raw bytes
    becomes its readable form, and a `<key>_bytes` field (base64) carries the exact bytes.
    """
    safe: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Path):
            value = str(value)
        if isinstance(value, str) and not is_lossless(value):
            safe[key] = readable(value)
            safe[f"{key}_bytes"] = base64.b64encode(os.fsencode(value)).decode("ascii")
        elif isinstance(value, Mapping):
            safe[key] = json_safe(value)
        elif isinstance(value, list | tuple):
            safe[key] = [json_safe(v) if isinstance(v, Mapping) else _text(v) for v in value]
        else:
            safe[key] = value
    return safe


def _text(value: Any) -> Any:
    return readable(value) if isinstance(value, str) else value


def _bytes_as_hex(error: UnicodeError) -> tuple[str, int]:
    # Lone surrogates U+DC80..U+DCFF are the bytes 0x80..0xFF that were not UTF-8.
    if not isinstance(error, UnicodeEncodeError):
        raise error
    bad = error.object[error.start : error.end]
    return "".join(
        f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else f"\\u{ord(c):04x}"
        for c in bad
    ), error.end


codecs.register_error(OUTPUT_ERRORS, _bytes_as_hex)
