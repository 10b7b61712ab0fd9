"""Files a person names on the command line: `report --html`, `learn --out`, `eval --plot`.

facesieve may run as root, and the file named may sit in a folder others can
write: a local user links FILE to a root-only file and waits for root's report,
which would replace that file's bytes and leave it world-readable. So the name
is never opened. Its folder is resolved once and held by descriptor; the bytes
go to a fresh temporary beside it (`O_CREAT | O_EXCL | O_NOFOLLOW`, relative to
that descriptor), are synced, and are renamed over the name, which replaces a
symlink found there instead of following it. Readers see the old file or the
new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from .intake.safefs import open_path

__all__ = ["write_output"]

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_output(path: Path, data: str | bytes, *, mode: int = 0o644) -> Path:
    """Replace `path` with `data` (text is UTF-8) atomically; a symlink at `path`
    is replaced, never followed. Missing folders are made. Returns the path written.

    Raises:
        OSError: the folder cannot be made or held (ELOOP: a folder on the way was
            swapped for a symlink after it was resolved), or the write failed.
    """
    path = Path(os.path.abspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    # The folders the person named, links and all, resolved once; from here on
    # every step is relative to the held descriptor.
    folder = Path(os.path.realpath(path.parent))
    folder_fd = open_path(folder)
    try:
        _replace(folder_fd, path.name, data.encode() if isinstance(data, str) else data, mode)
    finally:
        os.close(folder_fd)
    return folder / path.name


def _replace(folder_fd: int, name: str, data: bytes, mode: int) -> None:
    temporary, fd = _create_temporary(folder_fd, name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temporary, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=folder_fd)
        raise
    os.fsync(folder_fd)  # the rename itself survives a crash


def _create_temporary(folder_fd: int, name: str) -> tuple[str, int]:
    for _ in range(100):
        temporary = f".{name}.{secrets.token_hex(6)}"
        try:
            return temporary, os.open(temporary, _CREATE, 0o600, dir_fd=folder_fd)
        except FileExistsError:  # planted, or a rare clash: another name
            continue
    raise FileExistsError(f"no free temporary name beside {name}")
