"""Folders held by descriptor: a path below a held folder is never resolved again.

An inbox is written by others, who can swap a folder for a symlink, or a file for
other bytes, between the moment facesieve lists or reads a file and the moment it
acts. So every folder is opened as a descriptor, component by component, each
with `O_NOFOLLOW`, and every later step works relative to a descriptor. A file is
opened once (`HeldFile`), read from that descriptor and kept open until the action,
so that the action can prove the name still refers to the bytes that were judged.

Only reads happen here; creating, moving and deleting are `actions.py`'s.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import (
    ChangedError,
    FileTooLargeError,
    FileVanishedError,
    ImageAccessError,
    NotRegularFileError,
    SymlinkRefusedError,
    UnsafeFolderError,
)

__all__ = [
    "DIR_FLAGS",
    "FILE_FLAGS",
    "Folder",
    "HeldFile",
    "Identity",
    "check_owner",
    "is_symlink_refusal",
    "open_below",
    "open_path",
    "relative_parts",
    "scan_folder",
]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class Identity:
    """What says a name still holds the same bytes: the inode, and its size and times.

    `ctime_ns` is the kernel's own clock of the last change; unlike mtime nobody
    can set it back, so equal identities mean untouched bytes.
    """

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, info: os.stat_result) -> Identity:
        return cls(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)

    def same_inode(self, other: Identity | os.stat_result) -> bool:
        if isinstance(other, os.stat_result):
            return (self.dev, self.ino) == (other.st_dev, other.st_ino)
        return (self.dev, self.ino) == (other.dev, other.ino)


def is_symlink_refusal(error: OSError) -> bool:
    """Whether an O_NOFOLLOW open failed because a component is a symlink (or not a folder)."""
    return error.errno in (errno.ELOOP, errno.ENOTDIR)


def relative_parts(path: Path, base: Path) -> tuple[str, ...]:
    """`path`'s components below `base`.

    Raises:
        ValueError: `path` is not below `base`, or names `..` or `.`.
    """
    parts = path.relative_to(base).parts
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"{path} is not a plain path below {base}")
    return parts


def open_below(base_fd: int, parts: Sequence[str]) -> int:
    """A new descriptor of the folder `base/parts...`, no component followed if a symlink.

    Raises:
        OSError: ELOOP or ENOTDIR when a component is a symlink or not a folder.
    """
    fd = os.open(".", DIR_FLAGS, dir_fd=base_fd)
    try:
        for part in parts:
            if part in ("", ".", ".."):
                raise OSError(errno.EINVAL, f"{part!r} is not a folder name")
            child = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_path(path: Path) -> int:
    """A descriptor of an absolute folder, walked from `/` without following any symlink.

    Configured folders are resolved when the config is loaded, so a symlink found
    here was put there since: refused.
    """
    if not path.is_absolute():
        path = Path(os.path.abspath(path))
    root = os.open("/", DIR_FLAGS)
    try:
        return open_below(root, path.parts[1:])
    finally:
        os.close(root)


def check_owner(fd: int, path: Path) -> None:
    """A state folder must be the running user's (or root's): nobody else may plant it.

    Raises:
        UnsafeFolderError: someone else owns it.
    """
    owner = os.fstat(fd).st_uid
    if owner not in (os.geteuid(), 0):
        raise UnsafeFolderError(
            f"{path} is owned by uid {owner}, not by this user ({os.geteuid()}) or root: "
            "refusing to write facesieve's files there"
        )


def scan_folder(fd: int) -> Iterator[os.DirEntry[str]]:
    """The entries of a held folder (`os.scandir` on the descriptor: no path resolved)."""
    with os.scandir(fd) as entries:
        yield from entries


class Folder:
    """A folder held open; every path below it is reached from the descriptor alone."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def open(cls, path: Path) -> Folder:
        """Raises OSError (ELOOP/ENOTDIR for a symlink on the way, ENOENT...)."""
        path = Path(os.path.abspath(path))
        return cls(path, open_path(path))

    def parts(self, path: Path) -> tuple[str, ...]:
        """Raises ValueError when `path` is not below this folder."""
        return relative_parts(Path(os.path.abspath(path)), self.path)

    def contains(self, path: Path) -> bool:
        try:
            self.parts(path)
        except ValueError:
            return False
        return True

    def open_folder(self, parts: Sequence[str]) -> int:
        """A new descriptor of a folder below this one; the caller closes it."""
        return open_below(self.fd, parts)

    def lstat(self, path: Path) -> os.stat_result | None:
        """`path`'s own stat, reached from this folder without following any symlink.

        None when it is gone, outside this folder, or behind a symlinked folder.
        """
        try:
            parts = self.parts(path)
            fd = self.open_folder(parts[:-1])
        except (OSError, ValueError):
            return None
        try:
            return os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except OSError:
            return None
        finally:
            os.close(fd)

    def identity(self) -> tuple[int, int]:
        info = os.fstat(self.fd)
        return info.st_dev, info.st_ino

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Folder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_error(error: OSError) -> ImageAccessError:
    """The error class of a failed open, by its errno (a message is no contract)."""
    if error.errno == errno.ELOOP:
        return SymlinkRefusedError("is a symlink; symlinks are never followed")
    if error.errno == errno.ENOENT:  # gone between the look and the open
        return FileVanishedError("vanished before it was read")
    return ImageAccessError(f"cannot open: {error.strerror}")


class HeldFile:
    """A regular file opened once, without following a symlink, held until acted on.

    It owns two descriptors: the file and the folder it was found in.
    """

    def __init__(self, path: Path, folder_fd: int, name: str) -> None:
        """Open `name` in the folder `folder_fd` (which this object now owns).

        Raises:
            ImageAccessError: a symlink, not a regular file, gone, or unreadable.
        """
        self.path = path
        self.name = name
        self.dir_fd = folder_fd
        self.fd = -1
        self.parts: tuple[str, ...] = ()  # its folders below the root it was reached from
        try:
            try:
                seen = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
            except FileNotFoundError as error:
                raise FileVanishedError("vanished before it was read") from error
            if stat.S_ISLNK(seen.st_mode):
                raise SymlinkRefusedError("is a symlink; symlinks are never followed")
            if not stat.S_ISREG(seen.st_mode):
                # Never opened: opening a device or a FIFO can have effects of its own.
                raise NotRegularFileError("not a regular file")
            try:
                self.fd = os.open(name, FILE_FLAGS, dir_fd=folder_fd)
            except OSError as error:
                raise _open_error(error) from error
            info = os.fstat(self.fd)
            if not stat.S_ISREG(info.st_mode) or not Identity.of(seen).same_inode(info):
                raise ImageAccessError("replaced while it was opened")
            folder = os.fstat(folder_fd)
        except BaseException:
            self.close()
            raise
        self.folder = (folder.st_dev, folder.st_ino)
        self.identity = Identity.of(info)
        self.mode = info.st_mode
        self.atime_ns = info.st_atime_ns

    def read(self, max_bytes: int) -> bytes:
        """Every byte, from the descriptor; the identity is that of the bytes returned.

        Raises:
            ImageAccessError: larger than `max_bytes`, or a read error.
            ChangedError: the file changed while it was read (being written).
        """
        info = os.fstat(self.fd)
        before = Identity.of(info)
        if before.size > max_bytes:
            raise FileTooLargeError(
                before.size,
                max_bytes,
                info.st_mtime_ns,
                info.st_mode,
                info.st_ctime_ns,
                info.st_dev,
                info.st_ino,
            )
        chunks = []
        offset = 0
        try:
            while chunk := os.pread(self.fd, _BLOCK, offset):
                chunks.append(chunk)
                offset += len(chunk)
                if offset > max_bytes:
                    raise ImageAccessError(f"grew over the {max_bytes}-byte limit while read")
        except OSError as error:
            raise ImageAccessError(f"cannot read: {error.strerror}") from error
        after = Identity.of(os.fstat(self.fd))
        if after != before or offset != after.size:
            raise ChangedError("changed while it was read: being written")
        self.identity = after
        return b"".join(chunks)

    def changed(self) -> str | None:
        """Why the name no longer refers to the bytes read, or None if it still does."""
        now = Identity.of(os.fstat(self.fd))
        if now != self.identity:
            return "its bytes changed since they were judged"
        try:
            named = os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return "it vanished since it was judged"
        if Identity.of(named) != self.identity:
            return "its name refers to another file now"
        return None

    def close(self) -> None:
        for attribute in ("fd", "dir_fd"):
            fd = getattr(self, attribute)
            if fd >= 0:
                os.close(fd)
                setattr(self, attribute, -1)

    def __enter__(self) -> HeldFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a held file dropped by a stop must not leak descriptors
        self.close()
