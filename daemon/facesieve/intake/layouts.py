"""Layouts: how a writer lays out what it writes into the inbox, and what is a sample.

A sample is the unit facesieve judges and acts on: one image plus the files that
belong to it (`members`): files with the image's stem and another, non-image
extension in its folder (`KEY.json`, `KEY.txt` beside `KEY.jpg`), files named
after the image's full name plus a suffix (`NAME.jpg.json`), and, in Scrapy's
layout, `thumbs/<size>/<sha1>.jpg` beside `full/<sha1>.jpg`. A member is never
judged on its own: the image's verdict moves, deletes or keeps the sample whole.
A file belonging to no image is judged as any other (and so is `not_image`).

Each profile also names the dataset's own index files, never judged or moved
(img2dataset's `*.parquet` and `*_stats.json`, gallery-dl's `info.json`), and the
folders a writer works in (img2dataset's `_tmp/`), in progress. `auto` picks a
profile by the marks a writer leaves (and says which and why); under `watch` it
keeps looking at what arrives, so an inbox that was empty at start still gets the
writer's profile as soon as its first mark appears.

Whoever can write the inbox is hostile: a "member" or an "index file" whose first
bytes are an image is neither, it is judged on its own (a photo named `KEY.json`
beside a kept `KEY.jpg`, or `x.parquet`, must not escape its judge). Scrapy's
thumbnails are images: one follows its full image only if its pixels are a
downscale of it (`thumbs`), or it is judged on its own. A writer's work folder is
in progress, not invisible: `Inbox` judges what lies there once quiet for
`[watch] ignore_stale_seconds`, as an ignored name.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..config import DEFAULT_EXTENSIONS, ImagesConfig
from ..config import Layout as LayoutName
from ..logs import get_logger
from .safefs import Identity, open_below, scan_folder
from .thumbs import MAX_THUMB_BYTES, Downscales

__all__ = [
    "IMAGE_SUFFIXES",
    "LAYOUTS",
    "DescriptorView",
    "FolderView",
    "LayoutName",
    "Profile",
    "SampleRules",
    "detect",
    "is_image_name",
]

LAYOUTS: tuple[LayoutName, ...] = ("auto", "files", "img2dataset", "gallery-dl", "scrapy")

# Names that say "image": a file so named is never a member, it is judged.
IMAGE_SUFFIXES = frozenset((*DEFAULT_EXTENSIONS, ".heic", ".heif", ".avif", ".jxl"))
_SNIFF_BYTES = 32
_THUMBS, _FULL = "thumbs", "full"
# img2dataset's shards: 00000.parquet, 00000_stats.json.
_SHARD_INDEX = re.compile(r"^\d+(\.parquet|_stats\.json)$")
_DETECT_ENTRIES = 4096  # how many names auto looks at, at most, before it decides


@dataclass(frozen=True, slots=True)
class Profile:
    """What one writer's layout means to facesieve."""

    name: str
    index: tuple[str, ...] = ()  # fnmatch patterns on a file's name: the dataset's index
    work_areas: tuple[str, ...] = ()  # folder names a writer works in: in progress
    thumbs: bool = False  # Scrapy: thumbs/<size>/<name> belongs to full/<name>


PROFILES: dict[str, Profile] = {
    "files": Profile("files"),
    "img2dataset": Profile(
        "img2dataset", index=("*.parquet", "*_stats.json"), work_areas=("_tmp",)
    ),
    "gallery-dl": Profile("gallery-dl", index=("info.json",)),
    "scrapy": Profile("scrapy", thumbs=True),
}


def is_image_name(name: str) -> bool:
    """Whether a file's name says it is an image (only a sample's rule: the judge reads bytes)."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def owners_of(name: str) -> list[str]:
    """The image names a non-image file `name` would belong to, the likeliest first:
    `NAME.jpg.json` -> `NAME.jpg`; `KEY.json` -> `KEY.jpg`, `KEY.png`, ..."""
    if is_image_name(name):
        return []
    found: list[str] = []
    dots = [i for i, c in enumerate(name) if c == "." and i > 0]
    for i in reversed(dots):
        prefix = name[:i]
        if is_image_name(prefix):
            found.append(prefix)
    for i in dots:
        prefix = name[:i]
        found.extend(prefix + suffix for suffix in sorted(IMAGE_SUFFIXES))
        found.extend(prefix + suffix.upper() for suffix in sorted(IMAGE_SUFFIXES))
    return list(dict.fromkeys(found))


def evidence(parts: Sequence[str], is_dir: bool) -> tuple[str, str] | None:
    """(profile, why) if this path (relative to the inbox) is one writer's mark."""
    if not parts:
        return None
    name = parts[-1]
    if (is_dir and name == "_tmp" and len(parts) == 1) or (len(parts) > 1 and parts[0] == "_tmp"):
        return "img2dataset", "its work folder _tmp/"
    if not is_dir and _SHARD_INDEX.match(name):
        return "img2dataset", f"its shard index {'/'.join(parts)}"
    if not is_dir and name == "info.json":
        return "gallery-dl", f"its {'/'.join(parts)}"
    if not is_dir and len(parts) >= 3 and parts[-3] == _THUMBS:
        return "scrapy", f"its thumbnails folder {'/'.join(parts[:-2])}/"
    if is_dir and name == _THUMBS and len(parts) == 1:
        return "scrapy", "its thumbnails folder thumbs/"
    if not is_dir and fnmatch.fnmatch(name.lower(), "*.jpg.json"):
        return "gallery-dl", f"its metadata file {'/'.join(parts)}"
    return None


def detect(root: Path) -> tuple[str, str]:
    """(profile, why) for the folder as it is now: the first writer's mark found,
    a bounded walk (no symlink followed); "files" when there is none."""
    budget = _DETECT_ENTRIES
    stack: list[tuple[str, ...]] = [()]
    while stack and budget > 0:
        parts = stack.pop()
        try:
            entries = sorted(os.scandir(root.joinpath(*parts)), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            budget -= 1
            is_dir = entry.is_dir(follow_symlinks=False)
            found = evidence((*parts, entry.name), is_dir)
            if found is not None:
                return found
            if is_dir and not entry.name.startswith(".") and len(parts) < 4:
                stack.append((*parts, entry.name))
    return "files", "no scraper's marks in the folder"


class SampleRules:
    """One layout's rules over an inbox: index files, work areas, and samples."""

    def __init__(
        self,
        layout: LayoutName,
        root: Path,
        *,
        announce: bool = False,
        images: ImagesConfig | None = None,
    ) -> None:
        self.root = root
        self.auto = layout == "auto"
        self._announce = announce
        self.downscales = Downscales(images)
        if self.auto:
            name, why = detect(root)
        else:
            name, why = layout, "set in [inbox] layout"
        self.profile = PROFILES[name]
        self.why = why
        if announce:
            get_logger().info("layout_chosen", layout=name, why=why, auto=self.auto)

    @property
    def name(self) -> str:
        return self.profile.name

    def observe(self, parts: Sequence[str], is_dir: bool = False) -> None:
        """Under `auto`, a writer's first mark switches "files" to that writer's profile."""
        if not self.auto or self.profile.name != "files":
            return
        found = evidence(parts, is_dir)
        if found is None:
            return
        self.profile, self.why = PROFILES[found[0]], found[1]
        if self._announce:
            get_logger().info("layout_chosen", layout=found[0], why=found[1], auto=True)

    def is_index(self, name: str) -> bool:
        return any(fnmatch.fnmatch(name, pattern) for pattern in self.profile.index)

    def in_work_area(self, parts: Sequence[str]) -> bool:
        """Whether a path (its parts below the inbox) lies in a writer's work folder
        (in progress: judged once quiet, `Inbox`)."""
        return any(part in self.profile.work_areas for part in parts[:-1])

    def is_work_area(self, name: str) -> bool:
        return name in self.profile.work_areas

    def owners(self, parts: Sequence[str]) -> list[tuple[str, ...]]:
        """Every image path the file at `parts` would belong to, the likeliest first,
        whether or not it is there (for a member arriving after its image left)."""
        name, folder = parts[-1], tuple(parts[:-1])
        if self.profile.thumbs and len(parts) >= 3 and parts[-3] == _THUMBS:
            return [(*parts[:-3], _FULL, name)]
        return [(*folder, candidate) for candidate in owners_of(name)]

    def owner(self, parts: Sequence[str], view: FolderView) -> tuple[str, ...] | None:
        """The image (its parts) the file at `parts` belongs to, if any."""
        name, folder = parts[-1], tuple(parts[:-1])
        if self.profile.thumbs and len(parts) >= 3 and parts[-3] == _THUMBS:
            full = (*parts[:-3], _FULL, name)
            return full if view.is_file(full) and self._downscale(parts, full, view) else None
        for candidate in owners_of(name):
            image = (*folder, candidate)
            if view.is_file(image):
                return None if view.is_image(parts) else image
        return None

    def members(self, parts: Sequence[str], view: FolderView) -> list[tuple[str, ...]]:
        """The members of the image at `parts`; each member belongs to its likeliest
        owner only."""
        name, folder = parts[-1], tuple(parts[:-1])
        names = set(view.files(folder))
        found: list[tuple[str, ...]] = []
        for other in sorted(names):
            if other == name or is_image_name(other):
                continue
            owner = next((c for c in owners_of(other) if c in names), None)
            if owner == name and not view.is_image((*folder, other)):
                found.append((*folder, other))
        if self.profile.thumbs and folder and folder[-1] == _FULL:
            thumbs = (*folder[:-1], _THUMBS)
            for size in sorted(view.folders(thumbs)):
                thumb = (*thumbs, size, name)
                if name in set(view.files(thumb[:-1])) and self._downscale(thumb, parts, view):
                    found.append(thumb)
        return found

    def _downscale(self, thumb: Sequence[str], full: Sequence[str], view: FolderView) -> bool:
        """Whether the thumbnail at `thumb` is a downscale of the image at `full` (its
        name is no proof: `thumbs`)."""
        thumb_read = view.read(thumb, MAX_THUMB_BYTES)
        if thumb_read is None:
            return False
        full_read = view.read(full, self.downscales.images.max_file_bytes)
        if full_read is None:
            return False
        return self.downscales.follows(thumb_read, full_read, "/".join(thumb))


class FolderView(Protocol):
    """A look at the inbox by parts below its root, never through a symlink."""

    def files(self, parts: Sequence[str]) -> list[str]:
        """The regular files' names in a folder (none if it cannot be listed)."""

    def folders(self, parts: Sequence[str]) -> list[str]:
        """The sub-folders' names in a folder."""

    def is_file(self, parts: Sequence[str]) -> bool:
        """Whether a regular file is there."""

    def is_image(self, parts: Sequence[str]) -> bool:
        """Whether the file's first bytes are an image's."""

    def read(self, parts: Sequence[str], max_bytes: int) -> tuple[Identity, bytes] | None:
        """A regular file's identity and bytes (None: gone, odd, or over `max_bytes`)."""


class DescriptorView:
    """A `FolderView` from a held root descriptor: every folder opened below it
    without following a symlink (`safefs.open_below`), listings cached for its life
    (one view per walk of a folder, or per sample acted on)."""

    def __init__(self, root_fd: int) -> None:
        self._root_fd = root_fd
        self._listed: dict[tuple[str, ...], tuple[list[str], list[str]]] = {}

    def _list(self, parts: Sequence[str]) -> tuple[list[str], list[str]]:
        key = tuple(parts)
        cached = self._listed.get(key)
        if cached is not None:
            return cached
        files: list[str] = []
        folders: list[str] = []
        try:
            fd = open_below(self._root_fd, key)
        except OSError:
            self._listed[key] = (files, folders)
            return files, folders
        try:
            for entry in scan_folder(fd):
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.name)
                elif entry.is_file(follow_symlinks=False):
                    files.append(entry.name)
        except OSError:
            pass
        finally:
            os.close(fd)
        self._listed[key] = (files, folders)
        return files, folders

    def files(self, parts: Sequence[str]) -> list[str]:
        return self._list(parts)[0]

    def folders(self, parts: Sequence[str]) -> list[str]:
        return self._list(parts)[1]

    def is_file(self, parts: Sequence[str]) -> bool:
        return bool(parts) and parts[-1] in self._list(parts[:-1])[0]

    def _open(self, parts: Sequence[str]) -> int | None:
        try:
            folder = open_below(self._root_fd, parts[:-1])
        except OSError:
            return None
        try:
            return os.open(
                parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder
            )
        except OSError:
            return None
        finally:
            os.close(folder)

    def is_image(self, parts: Sequence[str]) -> bool:
        from ..judging.images import sniff_format  # the judge's own test of bytes

        fd = self._open(parts)
        if fd is None:
            return False
        try:
            return sniff_format(os.pread(fd, _SNIFF_BYTES, 0)) is not None
        except OSError:
            return False
        finally:
            os.close(fd)

    def read(self, parts: Sequence[str], max_bytes: int) -> tuple[Identity, bytes] | None:
        fd = self._open(parts)
        if fd is None:
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
                return None
            data = os.pread(fd, info.st_size, 0)
            if len(data) != info.st_size:
                return None  # changed while read: no answer this time
            identity = Identity(
                info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns
            )
            return identity, data
        except OSError:
            return None
        finally:
            os.close(fd)
