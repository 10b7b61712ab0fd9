"""The only module that changes files: keep, move into a folder, or delete.

Moves never overwrite (a taken name gets a `~N` suffix), keep the path relative
to the root and the mtime, and work across filesystems: copy to a partial name,
fsync, link into place, then remove the source. A file is never in no place at
all: the source goes only after its copy is durable.

The inbox is written by others, so nothing here resolves a path string at the
moment of acting: every folder is reached by descriptor from a held folder with
no symlink followed (`safefs`), and a judged file is acted on through the
descriptor it was read from (`HeldFile`). Right before a link, a copy's final
step or an unlink, the name must still refer to the judged inode with the judged
size, mtime and ctime; otherwise nothing is done (`ChangedError`) and the file is
judged again. A copy across filesystems reads the held descriptor, never the
path, and gets the source's permission bits without setuid, setgid or sticky,
never wider than `[actions] mode`.

A restore is the same move to one exact name: when that name is taken it fails
instead of picking a `~N` name, since only the original path is "back".
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

from ..config import ActionsConfig, ResolvedFolders
from ..errors import (
    ActionError,
    ChangedError,
    ImageAccessError,
    RestoreConflictError,
    UnsafeFolderError,
)
from ..intake.safefs import (
    DIR_FLAGS,
    Folder,
    HeldFile,
    Identity,
    check_owner,
    is_symlink_refusal,
    open_path,
    scan_folder,
)

# The judge's own hash of a held file, under this module's name (tests fail it here).
from ..judging.images import descriptor_sha256 as _digest
from ..judging.policy import Verdict
from ..logs import get_logger
from .lease import ReadLease

__all__ = [
    "PARTIAL_SUFFIX",
    "STATE_FOLDER_MODE",
    "Action",
    "Places",
    "check_unchanged",
    "content_identity",
    "delete_file",
    "delete_held",
    "finish_restore",
    "free_destination",
    "identity_of",
    "move_file",
    "move_held",
    "open_state_folder",
    "plan",
    "purge_file",
    "remove_partials",
    "restore_file",
    "resume_move",
    "safe_mode",
]

PARTIAL_SUFFIX = ".facesieve-partial"
STATE_FOLDER_MODE = 0o750  # facesieve's own folders: never writable by the inbox's group
_NO_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOTSUP)


class Action(StrEnum):
    KEEP = "keep"  # left where it is
    ACCEPT = "accept"  # moved to the accepted folder
    QUARANTINE = "quarantine"
    REVIEW = "review"
    DELETE = "delete"
    RESTORE = "restore"  # moved back from quarantine or review to where it was judged


def plan(
    verdict: Verdict, actions: ActionsConfig, folders: ResolvedFolders
) -> tuple[Action, Path | None]:
    """The action for a verdict and the folder it moves the file into, if any."""
    if verdict is Verdict.KEEP:
        if folders.accepted is not None:
            return Action.ACCEPT, folders.accepted
        return Action.KEEP, None
    if verdict is Verdict.REVIEW:
        return Action.REVIEW, folders.review
    choices = {
        Verdict.REJECT: actions.reject,
        Verdict.UNREADABLE: actions.unreadable,
        Verdict.NOT_IMAGE: actions.not_image,
    }
    choice = choices[verdict]
    if choice == "delete":
        return Action.DELETE, None
    if choice == "keep":
        return Action.KEEP, None
    if choice == "review":
        return Action.REVIEW, folders.review
    return Action.QUARANTINE, folders.quarantine


def safe_mode(mode: int, limit: int) -> int:
    """A copy's permission bits: the source's, never setuid/setgid/sticky, never above `limit`."""
    return stat.S_IMODE(mode) & 0o777 & limit


def _candidates(target: Path) -> Iterator[Path]:
    yield target
    stem, suffix = target.stem, target.suffix
    n = 1
    while True:
        yield target.with_name(f"{stem}~{n}{suffix}")
        n += 1


def free_destination(source: Path, root: Path, folder: Path) -> Path:
    """Where `source` would land in `folder`: its path relative to `root`, not yet taken."""
    try:
        relative = source.relative_to(root)
    except ValueError:
        relative = Path(source.name)
    for candidate in _candidates(folder / relative):
        if not os.path.lexists(candidate):
            return candidate
    raise AssertionError("unreachable")


# -- folders by descriptor -------------------------------------------------------------


def _make_below(
    base_fd: int, parts: tuple[str, ...], *, check: bool = False, like_parent: bool = False
) -> int:
    """A new descriptor of `base/parts...`, creating missing folders; no symlink followed.

    `check`: every folder on the way must be this user's or root's (inside a state folder).
    `like_parent`: a folder created gets the owner, group and mode of the folder it is
    created in (a restore's folders in the inbox: its users' folders, not facesieve's
    0750 ones); otherwise it is facesieve's, 0750.
    """
    fd = os.open(".", DIR_FLAGS, dir_fd=base_fd)
    try:
        for part in parts:
            if part in ("", ".", ".."):
                raise OSError(errno.EINVAL, f"{part!r} is not a folder name")
            made = False
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                try:
                    os.mkdir(part, STATE_FOLDER_MODE, dir_fd=fd)
                    made = True
                except FileExistsError:
                    pass
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            if made and like_parent:
                _take_after_parent(child, fd)
            os.close(fd)
            fd = child
            if check:
                check_owner(fd, Path(part))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _take_after_parent(child: int, parent: int) -> None:
    """Give a folder facesieve just made its parent's owner, group and mode, by descriptor.

    Only while it is still the folder made (this user's): one swapped in meanwhile
    is left as it is. Without the right to chown (not root), it keeps facesieve's
    owner and takes the parent's mode.
    """
    info, like = os.fstat(child), os.fstat(parent)
    if info.st_uid != os.geteuid():
        return
    if (info.st_uid, info.st_gid) != (like.st_uid, like.st_gid):
        with contextlib.suppress(PermissionError):
            os.fchown(child, like.st_uid, like.st_gid)
    # After the chown, which may clear setgid; setuid means nothing on a folder.
    os.fchmod(child, stat.S_IMODE(like.st_mode) & 0o3777)


def _ensure_path(path: Path, *, like_parent: bool = False) -> int:
    """A descriptor of an absolute folder, created if missing, walked from `/` without symlinks."""
    root = os.open("/", DIR_FLAGS)
    try:
        return _make_below(root, Path(os.path.abspath(path)).parts[1:], like_parent=like_parent)
    finally:
        os.close(root)


def open_state_folder(path: Path, *, create: bool = True) -> int:
    """A descriptor of one of facesieve's own folders, created (0750) if missing and `create`.

    Raises:
        UnsafeFolderError: a symlink on its path, or it is owned by someone else.
        FileNotFoundError: missing and not `create`.
    """
    try:
        fd = _ensure_path(path) if create else open_path(path)
    except OSError as error:
        if is_symlink_refusal(error):
            raise UnsafeFolderError(
                f"{path}: a symlink (or a file) on its path; facesieve's folders "
                "are never reached through a symlink"
            ) from error
        raise
    try:
        check_owner(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Places:
    """The inbox and facesieve's own folders of one run, each held open by descriptor.

    State folders (the ledger's, quarantine, review, accepted) are created when
    first needed, and refused (`UnsafeFolderError`) when a symlink or someone
    else's: a planted `.facesieve` must not receive the ledger or the quarantine.
    """

    def __init__(self, folders: ResolvedFolders, *, mode: int = 0o640) -> None:
        self.folders = folders
        self.mode = mode
        self.root = Folder.open(folders.root)
        self._state: dict[Path, Folder] = {}
        self._roots: dict[Path, Folder] = {}

    def state_folder(self, path: Path, *, create: bool = True) -> Folder:
        """A held state folder; created (mode 0750) if missing and `create`.

        Raises:
            UnsafeFolderError: a symlink on the way, or a folder owned by someone else.
            FileNotFoundError: missing and not `create`.
        """
        path = Path(os.path.abspath(path))
        held = self._state.get(path)
        if held is not None:
            return held
        state = self.folders.state
        if state in path.parents:
            # Under the inbox, `.facesieve` itself must be ours as well as the folder in it.
            os.close(open_state_folder(state, create=create))
        held = self._state[path] = Folder(path, open_state_folder(path, create=create))
        return held

    def check_state_folders(self) -> None:
        """Refuse an unsafe layout before anything is touched; creates nothing."""
        for path in (self.folders.state, self.folders.ledger.parent, *self.folders.managed()):
            if os.path.lexists(path):
                self.state_folder(path, create=False)

    def _moved_to(self) -> list[Path]:
        folders = (self.folders.quarantine, self.folders.review, self.folders.accepted)
        return sorted((p for p in folders if p is not None), key=lambda p: -len(p.parts))

    def is_state(self, path: Path) -> bool:
        """Whether `path` lies in quarantine, review or accepted."""
        path = Path(os.path.abspath(path))
        return any(folder in path.parents for folder in self._moved_to())

    def base_of(self, path: Path) -> tuple[Folder, tuple[str, ...]]:
        """The held folder `path` lies below (the deepest), and its parts below it.

        Raises:
            ValueError: `path` lies in none of them.
        """
        path = Path(os.path.abspath(path))
        for folder in self._moved_to():
            if folder in path.parents:
                base = self.state_folder(folder)
                return base, base.parts(path)
        return self.root, self.root.parts(path)

    def extra_root(self, root: Path) -> Folder:
        """Another inbox (a ledger's older root), held like the first one."""
        held = self._roots.get(root)
        if held is None:
            held = self._roots[root] = Folder.open(root)
        return held

    def close(self) -> None:
        self.root.close()
        for folder in [*self._state.values(), *self._roots.values()]:
            folder.close()
        self._state.clear()
        self._roots.clear()

    def __enter__(self) -> Places:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fsync(fd: int) -> None:
    os.fsync(fd)


# -- acting on a judged file -------------------------------------------------------------


def _check_reachable(held: HeldFile, root: Folder, parts: tuple[str, ...]) -> None:
    """The held file's folder must still be `root/parts...`, reached without symlinks."""
    try:
        fd = root.open_folder(parts)
    except OSError as error:
        raise ChangedError(
            "a folder on its path was replaced by a symlink or moved: never followed"
            if is_symlink_refusal(error)
            else f"its folder is gone: {error.strerror}"
        ) from error
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    if (info.st_dev, info.st_ino) != held.folder:
        raise ChangedError("its folder was moved or replaced since it was judged")


def _verify(held: HeldFile) -> None:
    problem = held.changed()
    if problem is not None:
        raise ChangedError(problem)


def check_unchanged(held: HeldFile, root: Folder, parts: tuple[str, ...]) -> None:
    """The judged file is still reachable from `root` by the same folders, with its bytes.

    Raises:
        ChangedError: a folder on its path or the file itself changed since it was judged.
    """
    _check_reachable(held, root, parts)
    _verify(held)


def identity_of(path: Path, base: Folder | None) -> Identity | None:
    """The identity of whatever is at `path` (never followed), or None if nothing is."""
    try:
        fd = _parent(path, base)
    except (OSError, ValueError):
        return None
    try:
        return Identity.of(os.stat(path.name, dir_fd=fd, follow_symlinks=False))
    except FileNotFoundError:
        return None
    finally:
        os.close(fd)


def delete_held(
    held: HeldFile,
    root: Folder,
    parts: tuple[str, ...],
    *,
    sha256: str | None = None,
    lease: ReadLease | None = None,
) -> None:
    """Delete the judged file, only if its name still refers to the bytes judged.

    With `sha256`, the bytes themselves are compared first (a write within the
    kernel clock's tick would leave ctime as it was). With `lease` (taken on the
    held descriptor), only if nobody opened it for writing meanwhile; without a
    lease held, only once it is quiet (`lease`).

    Raises:
        ChangedError: it changed, or is (maybe) still written; nothing was deleted.
        ActionError: the unlink failed.
    """
    _check_reachable(held, root, parts)
    _verify(held)
    if lease is not None:
        lease.require_quiet(held.identity, "a delete")
    if sha256 is not None and _digest(held.fd) != sha256:
        raise ChangedError("its bytes are not the ones judged")
    _verify(held)
    if lease is not None:
        lease.check()
    try:
        os.unlink(held.name, dir_fd=held.dir_fd)
        _fsync(held.dir_fd)
    except OSError as error:
        raise ActionError(f"cannot delete {held.path}: {error}") from error


def move_held(
    held: HeldFile,
    root: Folder,
    parts: tuple[str, ...],
    destination: Path,
    base: Folder,
    *,
    mode: int,
    sha256: str | None,
    lease: ReadLease | None = None,
) -> Path:
    """Move the judged file to `destination` (below the held `base`), or to a free `~N` name.

    `parts` are the folders from `root` to the file, as it was judged. Returns where
    it landed. With `lease` (taken on the held descriptor), a writer that opens the
    file before its source name goes undoes the move (`lease`).

    Raises:
        ChangedError: the name, its folder or its bytes changed; nothing was moved.
        ActionError: the move failed; the file is where it was.
    """
    _check_reachable(held, root, parts)
    _verify(held)
    try:
        relative = base.parts(destination)
    except ValueError as error:
        raise ActionError(f"{destination} is not below {base.path}") from error
    try:
        folder_fd = _make_below(base.fd, relative[:-1], check=True)
    except OSError as error:
        raise ActionError(f"cannot create the folder of {destination}: {error}") from error
    try:
        for candidate in _candidates(Path(relative[-1])):
            if _place(held, folder_fd, candidate.name, mode=mode, sha256=sha256, lease=lease):
                return destination.with_name(candidate.name)
    except OSError as error:
        raise ActionError(f"cannot move {held.path} to {destination}: {error}") from error
    finally:
        os.close(folder_fd)
    raise AssertionError("unreachable")


def _place(
    held: HeldFile,
    folder_fd: int,
    name: str,
    *,
    mode: int,
    sha256: str | None,
    lease: ReadLease | None = None,
    own_partials: bool = True,
) -> bool:
    """Move the held file to exactly `name` in `folder_fd`; False, nothing changed, if taken.

    `own_partials`: a `name.facesieve-partial` found there is a copy facesieve left
    (in its own folders); otherwise it is someone's file, never removed.
    """
    _verify(held)
    if lease is not None:
        lease.check()
    try:
        # link() fails on an existing name, so no overwrite can race in.
        os.link(
            held.name, name, src_dir_fd=held.dir_fd, dst_dir_fd=folder_fd, follow_symlinks=False
        )
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno == errno.EXDEV:
            return _copy_across(
                held,
                folder_fd,
                name,
                mode=mode,
                sha256=sha256,
                lease=lease,
                own_partials=own_partials,
            )
        if error.errno in _NO_LINKS:
            return _rename_if_free(held, folder_fd, name)
        raise
    return _keep_link(held, folder_fd, name, sha256=sha256, lease=lease)


def _keep_link(
    held: HeldFile, folder_fd: int, name: str, *, sha256: str | None, lease: ReadLease | None
) -> bool:
    """The held file is linked at `name` in `folder_fd`: keep that link and remove the
    source's name (True) only if it is still the judged file, else take the link back.

    Raises:
        ChangedError: the name was swapped, or the file changed; the link was taken back.
    """
    linked = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    if not held.identity.same_inode(linked):
        # The name was swapped between the check and the link: take back our link.
        os.unlink(name, dir_fd=folder_fd)
        raise ChangedError("its name was swapped for another file at the moment of acting")
    _fsync(folder_fd)
    # The link itself changed the inode's ctime; from here, any other change is a writer.
    after_link = Identity.of(os.fstat(held.fd))
    judged = held.identity
    named = _named(held)
    if named is None:
        # The source's name went since the link: a recovery finished this move
        # (or someone removed the name). The link is now the file's only name, and
        # taking it back would leave the file with none.
        return _only_name_left(held, name, sha256)
    # The link bumped ctime, so a write between the last check and the link would
    # hide behind it: the bytes themselves are compared once more (from page cache).
    changed = (after_link.size, after_link.mtime_ns) != (judged.size, judged.mtime_ns)
    if changed or named != after_link or (sha256 is not None and _digest(held.fd) != sha256):
        os.unlink(name, dir_fd=folder_fd)
        _fsync(folder_fd)
        raise ChangedError("it changed at the moment of acting; the link was taken back")
    if Identity.of(os.fstat(held.fd)) != after_link:
        os.unlink(name, dir_fd=folder_fd)
        _fsync(folder_fd)
        raise ChangedError("it changed at the moment of acting; the link was taken back")
    if lease is not None:
        try:
            lease.check()
        except ChangedError as error:
            os.unlink(name, dir_fd=folder_fd)
            _fsync(folder_fd)
            raise ChangedError(f"{error}; the link was taken back") from error
    _unlink_source(held)
    return True


def _only_name_left(held: HeldFile, name: str, sha256: str | None) -> bool:
    """The move is done (True) if the file, now only at `name`, holds the judged bytes.

    Raises:
        ChangedError: its bytes changed; it stays at `name`, its one name left.
    """
    now = Identity.of(os.fstat(held.fd))
    judged = held.identity
    same = (now.size, now.mtime_ns) == (judged.size, judged.mtime_ns)
    if same and (sha256 is None or _digest(held.fd) == sha256):
        return True
    raise ChangedError(
        f"it changed at the moment of acting and its source name is gone: left at {name}, "
        "its only name"
    )


def _unlink_source(held: HeldFile) -> None:
    """Remove the source's name once the file is in place; gone already is fine (a
    recovery that finished this move took it)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(held.name, dir_fd=held.dir_fd)
    _fsync(held.dir_fd)


def _named(held: HeldFile) -> Identity | None:
    try:
        return Identity.of(os.stat(held.name, dir_fd=held.dir_fd, follow_symlinks=False))
    except FileNotFoundError:
        return None


def _rename_if_free(held: HeldFile, folder_fd: int, name: str) -> bool:
    # Filesystems without hard links: a check-then-rename, which is as close as they allow.
    try:
        os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:
        pass
    else:
        return False
    _verify(held)
    os.rename(held.name, name, src_dir_fd=held.dir_fd, dst_dir_fd=folder_fd)
    _fsync(folder_fd)
    _fsync(held.dir_fd)
    return True


def _copy_across(
    held: HeldFile,
    folder_fd: int,
    name: str,
    *,
    mode: int,
    sha256: str | None,
    lease: ReadLease | None = None,
    own_partials: bool = True,
) -> bool:
    """Copy from the held descriptor, never the path; unlink the source only if unchanged.

    The copy is written at `name.facesieve-partial` first; one found there is
    removed only with `own_partials` (facesieve's own folders), else left alone
    (ActionError).

    With `lease`: only if nobody has it open for writing, from before the copy until
    right before the unlink; without a lease held, only once it is quiet (`lease`).
    """
    if lease is not None:
        lease.require_quiet(held.identity, "a copy to another filesystem")
        lease.check()
    partial = name + PARTIAL_SUFFIX
    writer = _open_partial(folder_fd, partial, own_partials=own_partials)
    placed = False
    try:
        digest = _write_copy(held, writer, mode)
        if sha256 is not None and digest != sha256:
            raise ChangedError("its bytes are not the ones judged; the copy was removed")
        _verify(held)
        try:
            os.link(partial, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
        except FileExistsError:
            return False
        placed = True
        _fsync(folder_fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial, dir_fd=folder_fd)
    try:
        _verify(held)
        if lease is not None:
            lease.check()  # a writer that opened it since would add bytes the copy misses
    except ChangedError as error:
        if placed and _named(held) is None:
            # The source's name went (a recovery finished this move; the unlink moved
            # its ctime): the copy is the file's only name now, never removed.
            return _only_name_left(held, name, sha256)
        if placed:
            os.unlink(name, dir_fd=folder_fd)
            _fsync(folder_fd)
        raise ChangedError(f"{error}; the copy was removed") from error
    _unlink_source(held)
    return True


def _open_partial(folder_fd: int, partial: str, *, own_partials: bool) -> int:
    """A new, empty `partial` in `folder_fd`, open for writing; one found there is removed
    first only with `own_partials`.

    Raises:
        ActionError: `partial` exists and is not facesieve's (left alone).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(partial, flags, 0o600, dir_fd=folder_fd)
    except FileExistsError as error:
        if not own_partials:
            raise ActionError(
                f"{partial} exists and is no copy facesieve left: left alone"
            ) from error
        # Left by a crash in facesieve's own folder (recovery removes these).
        os.unlink(partial, dir_fd=folder_fd)
        return os.open(partial, flags, 0o600, dir_fd=folder_fd)


def _write_copy(held: HeldFile, writer: int, mode: int) -> str:
    """Copy the held descriptor's bytes, mode and times to `writer`, synced, and close
    `writer` (always); the SHA-256 of the bytes copied."""
    try:
        digest = hashlib.sha256()
        offset = 0
        while block := os.pread(held.fd, 1 << 20, offset):
            digest.update(block)
            view = memoryview(block)
            while view:
                view = view[os.write(writer, view) :]
            offset += len(block)
        os.fchmod(writer, safe_mode(held.mode, mode))
        os.utime(writer, ns=(held.atime_ns, held.identity.mtime_ns))
        os.fsync(writer)
    finally:
        os.close(writer)
    return digest.hexdigest()


# -- by path: for restores, purges, recovery and tests ----------------------------------------


def _parent(
    path: Path, base: Folder | None, *, create: bool = False, like_parent: bool = False
) -> int:
    """A descriptor of `path`'s folder: from `base` if given, else from `/`; no symlinks.

    `create`: missing folders are made (`like_parent`: as `_make_below` says)."""
    path = Path(os.path.abspath(path))
    if base is None:
        if not create:
            return open_path(path.parent)
        return _ensure_path(path.parent, like_parent=like_parent)
    parts = base.parts(path)[:-1]
    if not create:
        return base.open_folder(parts)
    return _make_below(base.fd, parts, like_parent=like_parent)


def _hold(path: Path, base: Folder | None, expected: Identity | None = None) -> HeldFile:
    """The file at `path`, held; with `expected`, only if it is still exactly that file.

    Raises:
        OSError: its folder cannot be reached without a symlink.
        ImageAccessError: the file cannot be held.
        ChangedError: it is not the `expected` file (inode, size or times differ).
    """
    fd = _parent(path, base)
    held = HeldFile(path, fd, path.name)
    if expected is not None and held.identity != expected:
        held.close()
        raise ChangedError("it is not the file checked any more (its inode, size or times)")
    return held


def move_file(
    source: Path,
    destination: Path,
    *,
    mode: int = 0o640,
    base: Folder | None = None,
    source_base: Folder | None = None,
    sha256: str | None = None,
    expected: Identity | None = None,
) -> Path:
    """Move `source` to `destination`, or to the next free `~N` name beside it.

    Every folder is walked without following a symlink, from `source_base` and
    `base` when given. With `expected` and `sha256` it moves only that file with
    those bytes, as `move_held` does. Returns where the file landed. Raises
    ActionError, with the source intact, when the move fails or the file changed.
    """
    try:
        with _hold(source, source_base, expected) as held:
            folder_fd = _parent(destination, base, create=True)
            try:
                for candidate in _candidates(Path(destination.name)):
                    if _place(held, folder_fd, candidate.name, mode=mode, sha256=sha256):
                        return destination.with_name(candidate.name)
            finally:
                os.close(folder_fd)
    except (OSError, ValueError, ImageAccessError, ChangedError) as error:
        raise ActionError(f"cannot move {source} to {destination}: {error}") from error
    raise AssertionError("unreachable")


def delete_file(
    source: Path,
    *,
    base: Folder | None = None,
    sha256: str | None = None,
    expected: Identity | None = None,
) -> None:
    """Delete `source`; with `expected` and `sha256`, only that file with those bytes.

    Raises:
        ActionError: it changed, or the unlink failed; nothing was deleted.
    """
    try:
        with _hold(source, base, expected) as held:
            if sha256 is not None and _digest(held.fd) != sha256:
                raise ChangedError("its bytes are not the ones judged")
            _verify(held)
            os.unlink(held.name, dir_fd=held.dir_fd)
            _fsync(held.dir_fd)
    except (OSError, ValueError, ImageAccessError, ChangedError) as error:
        raise ActionError(f"cannot delete {source}: {error}") from error


def restore_file(
    source: Path,
    original: Path,
    *,
    source_base: Folder | None = None,
    original_base: Folder | None = None,
    mode: int = 0o640,
    sha256: str | None = None,
    expected: Identity | None = None,
    resumed: bool = False,
) -> Identity:
    """Move `source` back to exactly `original`, creating its folders, keeping the mtime.

    No folder on either path is followed if it is a symlink: a folder on the way
    to `original` swapped for one is an error, never a way out of the inbox.
    A missing folder is re-created with the owner, group and mode of the folder
    it is made in (the ledger keeps no folder's own). With `expected` and `sha256`
    it moves only that file with those bytes. Returns the identity of the file now
    at `original`.

    `original` lies in a folder others write: a `original.facesieve-partial` there
    is removed only when `resumed` (an earlier restore of this file, a row of its
    own, was cut short) and it is facesieve's (this user's, one link); any other is
    left alone, logged, and a copy across filesystems that needs its name fails.

    Raises:
        RestoreConflictError: something is at `original`; nothing was changed.
        ActionError: the move failed, or the file changed; it is still at `source`.
    """
    try:
        held = _hold(source, source_base, expected)
    except (OSError, ValueError, ImageAccessError, ChangedError) as error:
        raise ActionError(f"cannot restore {source}: {error}") from error
    with held:
        try:
            folder_fd = _parent(original, original_base, create=True, like_parent=True)
        except (OSError, ValueError) as error:
            refused = isinstance(error, OSError) and is_symlink_refusal(error)
            why = "a folder on the way is a symlink, never followed" if refused else str(error)
            raise ActionError(f"cannot restore {source} to {original}: {why}") from error
        try:
            _clear_partial(folder_fd, original.with_name(original.name + PARTIAL_SUFFIX), resumed)
            if not _place(
                held, folder_fd, original.name, mode=mode, sha256=sha256, own_partials=False
            ):
                raise RestoreConflictError(f"{original} exists; {source} left where it is")
            return Identity.of(os.stat(original.name, dir_fd=folder_fd, follow_symlinks=False))
        except (OSError, ChangedError) as error:
            raise ActionError(f"cannot restore {source} to {original}: {error}") from error
        finally:
            os.close(folder_fd)


def _clear_partial(folder_fd: int, partial: Path, resumed: bool) -> None:
    """Remove a partial copy an interrupted restore left, and nothing else (logged)."""
    try:
        info = os.stat(partial.name, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    ours = stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and info.st_nlink == 1
    if not (resumed and ours):
        why = "no restore of this file was cut short" if not resumed else "not facesieve's"
        get_logger().warning("partial_left_alone", path=str(partial), reason=why)
        return
    os.unlink(partial.name, dir_fd=folder_fd)
    get_logger().info("partial_removed", path=str(partial))


def content_identity(path: Path, base: Folder | None, sha256: str) -> Identity | None:
    """The identity of the file at `path` if it holds exactly these bytes; None otherwise."""
    try:
        with _hold(path, base) as held:
            digest = hashlib.sha256()
            offset = 0
            while block := os.pread(held.fd, 1 << 20, offset):
                digest.update(block)
                offset += len(block)
            return held.identity if digest.hexdigest() == sha256 else None
    except (OSError, ValueError, ImageAccessError):
        return None


def _drop_lingering_source(
    source: Path, base: Folder | None, sha256: str, inode: tuple[int, int] | None = None
) -> bool:
    """After a crash between link and unlink: the copy in place is the file, the source goes.

    Only a source holding the same bytes goes, and with `inode` given only that
    inode: a file restored or replaced since is someone's file again.
    """
    identity = content_identity(source, base, sha256)
    if identity is None or (inode is not None and (identity.dev, identity.ino) != inode):
        return False
    try:
        fd = _parent(source, base)
    except OSError:
        return False
    try:
        now = os.stat(source.name, dir_fd=fd, follow_symlinks=False)
        if Identity.of(now) != identity:
            return False
        os.unlink(source.name, dir_fd=fd)
        _fsync(fd)
    finally:
        os.close(fd)
    return True


def finish_restore(
    source: Path,
    original: Path,
    sha256: str,
    *,
    source_base: Folder | None = None,
    original_base: Folder | None = None,
    inode: tuple[int, int] | None = None,
) -> bool:
    """Whether a restore cut short had already put the file at `original`.

    If so, a source still holding the same bytes (and, with `inode`, still that
    inode) goes now, as in `resume_move`; unlike it, no `~N` name is ever taken
    for the original.
    """
    if content_identity(original, original_base, sha256) is None:
        return False
    _drop_lingering_source(source, source_base, sha256, inode)
    return True


def purge_file(path: Path, sha256: str, *, base: Folder | None = None) -> bool:
    """Delete a quarantined file if it still holds the bytes that were judged.

    Returns False when the file is gone already.

    Raises:
        ActionError: other bytes are at `path` now (left alone), or the delete failed.
    """
    try:
        fd = _parent(path, base)
    except FileNotFoundError:
        return False
    except OSError as error:
        raise ActionError(f"cannot purge {path}: {error}") from error
    try:
        try:
            os.stat(path.name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        identity = content_identity(path, base, sha256)
        if identity is None:
            raise ActionError(f"{path} no longer holds the file that was quarantined; left alone")
        try:
            now = Identity.of(os.stat(path.name, dir_fd=fd, follow_symlinks=False))
            if now != identity:
                raise ActionError(f"{path} changed while it was purged; left alone")
            os.unlink(path.name, dir_fd=fd)
            _fsync(fd)
        except OSError as error:
            raise ActionError(f"cannot delete {path}: {error}") from error
    finally:
        os.close(fd)
    return True


def resume_move(
    source: Path,
    planned: Path,
    sha256: str,
    *,
    source_base: Folder | None = None,
    planned_base: Folder | None = None,
    inode: tuple[int, int] | None = None,
    drop_source: bool = True,
) -> Path | None:
    """Finish a move that a crash interrupted; None when it had not happened yet.

    A move links the file into place before it unlinks the source, so after a
    crash the file is at the source, at the destination, or (briefly) at both:
    never nowhere. Where both exist the source goes now, if it is still the
    judged inode (`inode`) with the judged bytes and `drop_source` allows. A name
    taken by a collision is followed along its `~N` names to the file with this
    content.
    """
    landed = None
    try:
        folder_fd = _parent(planned, planned_base)
    except (OSError, ValueError):
        return None
    try:
        for candidate in _candidates(Path(planned.name)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(candidate.name + PARTIAL_SUFFIX, dir_fd=folder_fd)
            try:
                os.stat(candidate.name, dir_fd=folder_fd, follow_symlinks=False)
            except FileNotFoundError:
                break
            path = planned.with_name(candidate.name)
            if content_identity(path, planned_base, sha256) is not None:
                landed = path
                break
    finally:
        os.close(folder_fd)
    if landed is not None and drop_source:
        _drop_lingering_source(source, source_base, sha256, inode)
    return landed


def remove_partials(folder: Path) -> list[Path]:
    """Delete copies a crash left half-written; their sources were never unlinked."""
    removed: list[Path] = []
    try:
        fd = open_path(folder)
    except OSError:
        return removed
    stack = [(fd, Path(os.path.abspath(folder)))]
    while stack:
        fd, path = stack.pop()
        try:
            for entry in scan_folder(fd):
                if entry.is_dir(follow_symlinks=False):
                    try:
                        stack.append((os.open(entry.name, DIR_FLAGS, dir_fd=fd), path / entry.name))
                    except OSError:
                        continue
                elif entry.name.endswith(PARTIAL_SUFFIX) and entry.is_file(follow_symlinks=False):
                    os.unlink(entry.name, dir_fd=fd)
                    removed.append(path / entry.name)
        finally:
            os.close(fd)
    return removed
