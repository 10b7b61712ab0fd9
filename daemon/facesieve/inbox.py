"""The inbox: which files facesieve judges, and walking to them.

One rule for `scan`, the daemon's reconciliation passes and its observer, so the
three agree on every file: a candidate lies under the root, outside facesieve's
own folders and the excluded ones, and its own name does not match an ignore
pattern (a name still being written: `*.part`). Its name is no test of being an
image: the judge reads the bytes (a video named .jpg is `not_image`, a JPEG
without an extension an image). Ignore patterns never match a folder: a hidden
folder is walked unless it is in `[watch] exclude`. Symlinked folders are never
entered. A symlink or other non-regular file is still offered, so the judge
reports why it is skipped.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from pathlib import Path

from .config import Config, ResolvedFolders
from .logs import get_logger

__all__ = ["Inbox"]


class Inbox:
    """The candidate files under one root."""

    def __init__(self, folders: ResolvedFolders, *, ignore: tuple[str, ...] = ()) -> None:
        self.folders = folders
        self.root = folders.root
        self._managed = frozenset(folders.managed())
        self._ignore = ignore

    @classmethod
    def of(cls, config: Config, folders: ResolvedFolders) -> Inbox:
        return cls(folders, ignore=config.watch.ignore)

    def ignored(self, name: str) -> bool:
        """Whether a file's own name matches an ignore pattern."""
        return any(fnmatch.fnmatch(name, pattern) for pattern in self._ignore)

    def accepts(self, path: Path) -> bool:
        """Whether `path` (absolute, as the observer reports it) is a candidate."""
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            return False
        if not relative.parts:
            return False
        if any(path == m or m in path.parents for m in self._managed):
            return False
        return not self.ignored(path.name)

    def walk(self, top: Path | None = None) -> Iterator[Path]:
        """Every candidate under `top` (default: the root), depth first, each folder's
        files in sorted order."""
        log = get_logger()
        stack = [self.root if top is None else top]
        while stack:
            folder = stack.pop()
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
            except OSError as error:
                log.warning(
                    "not_judged", path=str(folder), reason=f"cannot list folder: {error.strerror}"
                )
                continue
            files = []
            for entry in entries:
                path = Path(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    if path not in self._managed:
                        stack.append(path)
                elif entry.is_symlink() and entry.is_dir():
                    log.info("skipped", path=str(path), reason="symlinked folder: never followed")
                elif not self.ignored(entry.name):
                    files.append(path)
            yield from reversed(files)
