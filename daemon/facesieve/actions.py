"""The only module that changes files: keep, move into a folder, or delete.

Moves never overwrite (a taken name gets a `~N` suffix), keep the path relative
to the root, the mode and the mtime, and work across filesystems: copy to a
partial name, fsync, link into place, then remove the source. A file is never
in no place at all: the source goes only after its copy is durable.

A restore is the same move to one exact name: when that name is taken it fails
instead of picking a `~N` name, since only the original path is "back".
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

from .config import ActionsConfig, ResolvedFolders
from .errors import ActionError, RestoreConflictError
from .images import file_sha256
from .policy import Verdict

__all__ = [
    "PARTIAL_SUFFIX",
    "Action",
    "delete_file",
    "finish_restore",
    "free_destination",
    "move_file",
    "plan",
    "purge_file",
    "remove_partials",
    "restore_file",
    "resume_move",
]

PARTIAL_SUFFIX = ".facesieve-partial"


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


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move_file(source: Path, destination: Path) -> Path:
    """Move `source` to `destination`, or to the next free `~N` name beside it.

    Returns where the file landed. Raises ActionError, with the source intact,
    when the move fails.
    """
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        for candidate in _candidates(destination):
            landed = _place(source, candidate)
            if landed is not None:
                return landed
    except OSError as error:
        raise ActionError(f"cannot move {source} to {destination}: {error}") from error
    raise AssertionError("unreachable")


def _place(source: Path, candidate: Path) -> Path | None:
    """Move `source` to exactly `candidate`; None, with nothing changed, if the name is taken."""
    try:
        # link() fails on an existing name, so no overwrite can race in.
        os.link(source, candidate, follow_symlinks=False)
    except FileExistsError:
        return None
    except OSError as error:
        if error.errno == errno.EXDEV:
            return _copy_across(source, candidate)
        if error.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOTSUP):
            return _rename_if_free(source, candidate)
        raise
    _fsync_dir(candidate.parent)
    os.unlink(source)
    _fsync_dir(source.parent)
    return candidate


def restore_file(source: Path, original: Path) -> None:
    """Move `source` back to exactly `original`, creating its folders, keeping mode and mtime.

    Raises:
        RestoreConflictError: something is at `original`; nothing was changed.
        ActionError: the move failed; the file is still at `source`.
    """
    if not os.path.lexists(source):
        raise ActionError(f"cannot restore {source}: it is no longer there")
    try:
        original.parent.mkdir(parents=True, exist_ok=True)
        # A copy across filesystems that a crash cut short left this; the name is ours.
        partial = original.with_name(original.name + PARTIAL_SUFFIX)
        if os.path.lexists(partial):
            os.unlink(partial)
        landed = _place(source, original)
    except OSError as error:
        raise ActionError(f"cannot restore {source} to {original}: {error}") from error
    if landed is None:
        raise RestoreConflictError(f"{original} exists; {source} left where it is")


def finish_restore(source: Path, original: Path, sha256: str) -> bool:
    """Whether a restore cut short had already put the file at `original`.

    If so, a source still holding the same bytes goes now, as in `resume_move`;
    unlike it, no `~N` name is ever taken for the original.
    """
    if not _same_content(original, sha256):
        return False
    _drop_lingering_source(source, sha256)
    return True


def purge_file(path: Path, sha256: str) -> bool:
    """Delete a quarantined file if it still holds the bytes that were judged.

    Returns False when the file is gone already.

    Raises:
        ActionError: other bytes are at `path` now (left alone), or the delete failed.
    """
    if not os.path.lexists(path):
        return False
    if not _same_content(path, sha256):
        raise ActionError(f"{path} no longer holds the file that was quarantined; left alone")
    delete_file(path)
    return True


def _rename_if_free(source: Path, candidate: Path) -> Path | None:
    # Filesystems without hard links: a check-then-rename, which is as close as they allow.
    if os.path.lexists(candidate):
        return None
    os.rename(source, candidate)
    _fsync_dir(candidate.parent)
    _fsync_dir(source.parent)
    return candidate


def _copy_across(source: Path, candidate: Path) -> Path | None:
    partial = candidate.with_name(candidate.name + PARTIAL_SUFFIX)
    info = os.stat(source, follow_symlinks=False)
    try:
        with source.open("rb") as reader, partial.open("xb") as writer:
            shutil.copyfileobj(reader, writer, 1 << 20)
            writer.flush()
            os.fsync(writer.fileno())
        os.chmod(partial, info.st_mode & 0o7777)
        os.utime(partial, ns=(info.st_atime_ns, info.st_mtime_ns))
        try:
            os.link(partial, candidate)
        except FileExistsError:
            return None
        _fsync_dir(candidate.parent)
    finally:
        if os.path.lexists(partial):
            os.unlink(partial)
    os.unlink(source)
    _fsync_dir(source.parent)
    return candidate


def delete_file(source: Path) -> None:
    try:
        os.unlink(source)
        _fsync_dir(source.parent)
    except OSError as error:
        raise ActionError(f"cannot delete {source}: {error}") from error


def _same_content(path: Path, sha256: str) -> bool:
    try:
        return file_sha256(path) == sha256
    except OSError:
        return False


def _drop_lingering_source(source: Path, sha256: str) -> None:
    """After a crash between link and unlink: the copy in place is the file, the source goes."""
    if os.path.lexists(source) and _same_content(source, sha256):
        os.unlink(source)
        _fsync_dir(source.parent)


def resume_move(source: Path, planned: Path, sha256: str) -> Path | None:
    """Finish a move that a crash interrupted; None when it had not happened yet.

    A move links the file into place before it unlinks the source, so after a
    crash the file is at the source, at the destination, or (briefly) at both:
    never nowhere. Where both exist the source goes now. A name taken by a
    collision is followed along its `~N` names to the file with this content.
    """
    landed = None
    for candidate in _candidates(planned):
        partial = candidate.with_name(candidate.name + PARTIAL_SUFFIX)
        if os.path.lexists(partial):
            os.unlink(partial)
        if not os.path.lexists(candidate):
            break
        if _same_content(candidate, sha256):
            landed = candidate
            break
    if landed is not None:
        _drop_lingering_source(source, sha256)
    return landed


def remove_partials(folder: Path) -> list[Path]:
    """Delete copies a crash left half-written; their sources were never unlinked."""
    removed = []
    if folder.is_dir():
        for partial in folder.rglob(f"*{PARTIAL_SUFFIX}"):
            if partial.is_file() and not partial.is_symlink():
                partial.unlink()
                removed.append(partial)
    return removed
