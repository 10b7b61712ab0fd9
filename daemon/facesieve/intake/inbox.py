"""The inbox: which files facesieve judges, and walking to them.

One rule for `scan`, the daemon's reconciliation passes and its observer, so the
three agree on every file: a candidate lies under the root, outside facesieve's
own folders and the excluded ones, and its own name does not match an ignore
pattern (a name still being written: `*.part`) unless that file has been quiet
for `ignore_stale_seconds`: an ignored name means "in progress", never
"invisible" (or `.x.jpg` would keep any image). Its name is no test of being an
image: the judge reads the bytes (a video named .jpg is `not_image`, a JPEG
without an extension an image). Ignore patterns never match a folder: a hidden
folder is walked unless it is in `[watch] exclude`. Symlinked folders are never
entered, nor listed: every folder is opened by descriptor from the root, without
following a symlink, so one swapped in after its parent was listed is refused.
A symlink or other non-regular file is still offered, so the judge
reports why it is skipped.

The layout (`layouts`, `[inbox] layout`) takes out what is no candidate of its
own: the dataset's index files and the members of a sample (a caption beside its
image), which go wherever their image goes. A writer's work folder (img2dataset's
`_tmp/`) is in progress, as an ignored name is: a file there is judged once quiet
for `ignore_stale_seconds` (or `_tmp/` would keep any image).
"""

from __future__ import annotations

import fnmatch
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path

from ..config import Config, ImagesConfig, Layout, ResolvedFolders
from ..logs import get_logger
from .layouts import DescriptorView, SampleRules
from .safefs import is_symlink_refusal, open_below, scan_folder

__all__ = ["Inbox"]

# One listed entry: its name, whether it is a folder, a symlink to a folder, and left
# out as in progress.
_Listed = tuple[str, bool, bool, bool]


class Inbox:
    """The candidate files under one root."""

    def __init__(
        self,
        folders: ResolvedFolders,
        *,
        ignore: tuple[str, ...] = (),
        ignore_stale_seconds: float = 600.0,
        layout: Layout = "files",
        announce: bool = False,
        images: ImagesConfig | None = None,
    ) -> None:
        self.folders = folders
        self.root = folders.root
        self._managed = frozenset(folders.managed())
        self._ignore = ignore
        self._stale_ns = int(ignore_stale_seconds * 1e9)
        # The earliest time (ns since the epoch) an ignored file met so far goes
        # stale: `watch` looks again then (`stale_due`). One number, whatever the
        # number of files: a flood of in-progress names costs no memory.
        self._next_stale_ns: int | None = None
        self._stale_lock = threading.Lock()
        self.rules = SampleRules(layout, folders.root, announce=announce, images=images)

    @classmethod
    def of(cls, config: Config, folders: ResolvedFolders) -> Inbox:
        return cls(
            folders,
            ignore=config.watch.ignore,
            ignore_stale_seconds=config.watch.ignore_stale_seconds,
            layout=config.inbox.layout,
            announce=True,
            images=config.images,
        )

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
        self.rules.observe(relative.parts)
        if self.ignored(path.name) or self.rules.in_work_area(relative.parts):
            info = self.lstat(path)
            if info is None:
                return False  # gone: nothing to judge
            # Not logged here: the observer asks on every write; walks log each file.
            if not self._is_stale(info):
                return False
        return self._own_candidate(relative.parts)

    def _own_candidate(self, parts: tuple[str, ...]) -> bool:
        """Not an index file and no member of an image: judged itself."""
        rules = self.rules
        try:
            root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return True  # the walk or the judge says why
        try:
            view = DescriptorView(root_fd)
            if rules.is_index(parts[-1]):
                return view.is_image(parts)  # an image named like an index is judged
            return rules.owner(parts, view) is None
        finally:
            os.close(root_fd)

    def walk(
        self, top: Path | None = None, counts: Counter[str] | None = None
    ) -> Generator[Path, None, None]:
        """Every candidate under `top` (default: the root), depth first, each folder's
        files in sorted order.

        Folders are listed by descriptor, each opened from the root without following
        a symlink, so a folder swapped for a symlink after its parent was listed is
        never entered, nor listed. A file with an ignored name is a candidate once
        it is stale; until then it is counted in `counts["ignored"]` and logged (each
        at debug, their number at info when the walk ends).
        """
        log = get_logger()
        in_progress = 0
        try:
            # The root is the caller's to name; everything below it is reached by descriptor.
            root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            log.warning("not_judged", path=str(self.root), reason=f"cannot open: {error.strerror}")
            return
        try:
            start: tuple[str, ...] = () if top is None else top.relative_to(self.root).parts
            stack: list[tuple[str, ...]] = [start]
            while stack:
                parts = stack.pop()
                kinds = self._list_folder(root_fd, parts)
                if kinds is None:
                    continue
                files, folders, ignored = self._sort_listing(root_fd, parts, kinds)
                stack.extend(folders)
                in_progress += ignored
                yield from reversed(files)
        finally:
            os.close(root_fd)
            if counts is not None:
                counts["ignored"] += in_progress
            if in_progress:
                log.info(
                    "ignored_files",
                    path=str(self.root if top is None else top),
                    files=in_progress,
                    reason=self._in_progress,
                )

    def _list_folder(self, root_fd: int, parts: tuple[str, ...]) -> list[_Listed] | None:
        """The folder's entries, last name first, each as a `_Listed`; None (and said
        why) if it cannot be opened (a folder swapped for a symlink) or listed."""
        try:
            fd = open_below(root_fd, parts)
            try:
                entries = sorted(scan_folder(fd), key=lambda e: e.name, reverse=True)
                for e in entries:
                    self.rules.observe((*parts, e.name), e.is_dir(follow_symlinks=False))
                in_work = self.rules.in_work_area((*parts, ""))
                return [
                    # A symlink's target is stat()ed (never opened, read or listed)
                    # only to tell a symlinked folder, which is never offered.
                    (
                        e.name,
                        e.is_dir(follow_symlinks=False),
                        e.is_symlink() and e.is_dir(),
                        self._ignored_entry(e, in_work),
                    )
                    for e in entries
                ]
            finally:
                os.close(fd)
        except OSError as error:
            reason = (
                "symlinked folder: never followed"
                if is_symlink_refusal(error)
                else f"cannot list folder: {error.strerror}"
            )
            get_logger().warning("not_judged", path=str(self.root.joinpath(*parts)), reason=reason)
            return None

    def _sort_listing(
        self, root_fd: int, parts: tuple[str, ...], kinds: list[_Listed]
    ) -> tuple[list[Path], list[tuple[str, ...]], int]:
        """A folder's listing sorted out: its candidates, its subfolders to walk, and
        how many files in it were left out as in progress."""
        log = get_logger()
        folder = self.root.joinpath(*parts)
        files: list[Path] = []
        folders: list[tuple[str, ...]] = []
        in_progress = 0
        rules = self.rules
        view = DescriptorView(root_fd)
        for name, is_dir, linked_folder, ignored in kinds:
            path = folder / name
            if is_dir:
                if path not in self._managed:
                    folders.append((*parts, name))
            elif linked_folder:
                log.info("skipped", path=str(path), reason="symlinked folder: never followed")
            elif ignored:
                in_progress += 1
                log.debug("ignored", path=str(path), reason=self._in_progress)
            elif rules.is_index(name) and not view.is_image((*parts, name)):
                log.debug("skipped", path=str(path), reason="the dataset's index file")
            elif rules.owner((*parts, name), view) is not None:
                continue  # a member: it goes with its image
            else:
                files.append(path)  # a symlink too: the judge says why it is skipped
        return files, folders, in_progress

    @property
    def _in_progress(self) -> str:
        return (
            "name matches an ignore pattern or lies in a writer's work folder: in progress, "
            f"judged once quiet for {self._stale_ns / 1e9:g} s"
        )

    def _ignored_entry(self, entry: os.DirEntry[str], in_work: bool = False) -> bool:
        """Whether a listed entry is left out as in progress (an ignored name, or any
        file in a writer's work folder, not yet stale)."""
        if entry.is_dir(follow_symlinks=False) or not (in_work or self.ignored(entry.name)):
            return False
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            return True  # gone since it was listed: nothing to judge
        return not self._is_stale(info)

    def _is_stale(self, info: os.stat_result) -> bool:
        """Quiet (mtime and ctime) for `ignore_stale_seconds`; if not, noted for `stale_due`.

        A writer can set mtime to any time but nobody can set ctime: an mtime in the
        future is forged (it would keep the file "in progress" for ever), and only the
        ctime counts then.
        """
        now = time.time_ns()
        changed = info.st_ctime_ns
        if info.st_mtime_ns <= now:
            changed = max(changed, info.st_mtime_ns)
        stale_at = changed + self._stale_ns
        if now >= stale_at:
            return True
        with self._stale_lock:
            if self._next_stale_ns is None or stale_at < self._next_stale_ns:
                self._next_stale_ns = stale_at
        return False

    def stale_due(self) -> bool:
        """Whether an in-progress file met since the last call that said yes has gone
        stale by now (`watch` then walks the inbox again, which judges it)."""
        with self._stale_lock:
            if self._next_stale_ns is None or time.time_ns() < self._next_stale_ns:
                return False
            self._next_stale_ns = None
            return True

    def lstat(self, path: Path) -> os.stat_result | None:
        """`path`'s own stat, every folder from the root without following a symlink.

        None when it is gone, outside the root, or behind a symlinked folder.
        """
        try:
            parts = path.relative_to(self.root).parts
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (OSError, ValueError):
            return None
        try:
            folder = open_below(fd, parts[:-1])
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        try:
            return os.stat(parts[-1], dir_fd=folder, follow_symlinks=False)
        except OSError:
            return None
        finally:
            os.close(folder)

    def settled(
        self,
        paths: Iterable[Path],
        settle_seconds: float,
        should_stop: Callable[[], bool] = lambda: False,
        *,
        rounds: int = 20,
        wait_limit: float = 30.0,
    ) -> Iterator[Path]:
        """`paths`, each only once it has been quiet for `settle_seconds` (by ctime,
        the one time nobody can set back); a file still changing is looked at again
        later, up to `rounds` times, and left for the next scan after that."""
        young: dict[Path, float] = {}
        for path in paths:
            wait = self._young(path, settle_seconds)
            if wait > 0:
                young[path] = wait
            else:
                yield path
        for _ in range(rounds):
            if not young or should_stop():
                break
            pause = min(max(young.values()), wait_limit)
            deadline = time.monotonic() + pause
            while time.monotonic() < deadline and not should_stop():
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            again = {}
            for path in young:
                wait = self._young(path, settle_seconds)
                if wait > 0:
                    again[path] = wait
                else:
                    yield path
            young = again
        for path in young:
            get_logger().info("deferred", path=str(path), reason="still being written")

    def _young(self, path: Path, settle_seconds: float) -> float:
        info = self.lstat(path)
        if info is None:
            return 0.0  # gone or odd: the judge says why
        return settle_seconds - (time.time_ns() - info.st_ctime_ns) / 1e9
