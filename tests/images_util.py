"""Builders for awkward image files, shared by the tests."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def _chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def write_png_bomb(path: Path, side: int = 30000) -> None:
    """A valid greyscale PNG of side x side black pixels, about a megabyte on disk.

    Written row by row through a streaming compressor, so the test never holds
    the 900-megapixel image in memory that the file claims to be.
    """
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + one byte per pixel
    parts = [compressor.compress(row) for _ in range(side)]
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )


def write_truncated_copy(source: Path, target: Path, keep: float = 0.5) -> None:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
