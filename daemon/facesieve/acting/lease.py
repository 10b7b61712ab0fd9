"""Whether anyone still has a file open for writing: a read lease on the held descriptor.

A stalled upload (a slow client that keeps its file open and pauses) looks like
a finished file that happens to be unreadable; acting on it quarantines half a
file, and a copy across filesystems followed by an unlink loses every byte
written after the copy. Linux says who still writes only through a lease:
`fcntl(fd, F_SETLEASE, F_RDLCK)` fails with EAGAIN while any descriptor has the
file open for writing, and a later open for writing (or a truncate) breaks it,
which `F_GETLEASE` then shows. So a lease is taken right before a file is linked
or copied and checked right before its source name is unlinked; a file still
written is not acted on (`StillWrittenError`, a `ChangedError`: judged again when
quiet).

A broken lease is announced with a signal to the holder, SIGIO by default, whose
default action ends the process; `F_SETSIG` first makes it SIGURG, which is
ignored by default and used by nothing in facesieve, so a writer's open never
kills the guard. The writer's open waits until the lease is released (at most
`/proc/sys/fs/lease-break-time`), which is right after the action.

A lease cannot always be taken: EACCES when facesieve is not the file's owner and
lacks CAP_LEASE (a service user acting on uploaders' files: the unit grants it),
EINVAL on a filesystem without leases (NFS, some FUSE) or with
`/proc/sys/fs/leases-enable` = 0. Then nobody can say whether a writer still has
the file open, and only what loses no bytes is done without waiting: a link or
rename on one filesystem moves the inode itself, with whatever a writer adds
later. A copy across filesystems, whose unlink would lose those later bytes, and a
delete wait until the file has been quiet (unchanged ctime) for
`UNLEASED_QUIET_SECONDS`; the copy is then checked against a fresh fstat and the
judged sha256 before the source goes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import signal
import time

from ..errors import ChangedError
from ..intake.safefs import Identity

__all__ = [
    "OPEN_WRITER_LIMIT_SECONDS",
    "UNLEASED_QUIET_SECONDS",
    "ReadLease",
    "StillWrittenError",
    "quiet_for",
]

# Without a lease, a copy across filesystems (or a delete) waits until the file has
# been unchanged this long: longer than any pause of a client that is still
# uploading (a stalled TCP upload is usually given up after a minute or two).
UNLEASED_QUIET_SECONDS = 120.0
# A file still open for writing but unchanged this long is acted on anyway (what a
# writer adds later to a file moved on one filesystem follows it; a copy across
# filesystems misses it): otherwise a writer that never closes would keep any file
# in the inbox for ever.
OPEN_WRITER_LIMIT_SECONDS = 900.0

# Linux's values (<fcntl.h>); older Pythons lack the names, other systems the call.
_F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)
_F_GETLEASE = getattr(fcntl, "F_GETLEASE", 1025)
_F_SETSIG = getattr(fcntl, "F_SETSIG", 10)
_WHY_NOT = {
    errno.EACCES: "not the file's owner and no CAP_LEASE",
    errno.EPERM: "not the file's owner and no CAP_LEASE",
    errno.EINVAL: "its filesystem has no leases (or fs.leases-enable is 0)",
    errno.ENOSYS: "no leases on this system",
}


class StillWrittenError(ChangedError):
    """Someone has the file open for writing (or may have, and it changed recently):
    nothing was done, it is judged again when quiet."""


def quiet_for(identity: Identity) -> float:
    """Seconds since the file last changed (its ctime, which nobody can set back)."""
    return (time.time_ns() - identity.ctime_ns) / 1e9


class ReadLease:
    """A read lease on one held, read-only descriptor, or why there is none.

    `held`: the lease is ours, so nobody had the file open for writing when it was
    taken. `missing`: why no lease could be taken (nobody can tell whether a writer
    has the file open). Released by `release` or the `with` block.
    """

    def __init__(self, fd: int, *, quiet: float = UNLEASED_QUIET_SECONDS) -> None:
        self.fd = fd
        self.held = False
        self.missing: str | None = None
        self.open_for_writing = False  # still open for writing, but quiet past the limit
        self.quiet = quiet  # without a lease, what could lose bytes waits this long

    @classmethod
    def take(
        cls,
        fd: int,
        identity: Identity,
        *,
        open_limit: float = OPEN_WRITER_LIMIT_SECONDS,
        quiet: float = UNLEASED_QUIET_SECONDS,
    ) -> ReadLease:
        """Take the lease on `fd` (the file `identity`).

        Raises:
            StillWrittenError: a descriptor has it open for writing, and it changed
                less than `open_limit` seconds ago.
        """
        lease = cls(fd, quiet=quiet)
        try:
            fcntl.fcntl(fd, _F_SETSIG, signal.SIGURG)
            fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_RDLCK)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                name = errno.errorcode.get(error.errno or 0, str(error.errno))
                lease.missing = f"no read lease ({name}: {_WHY_NOT.get(error.errno or 0, error)})"
                return lease
            quiet = quiet_for(identity)
            if quiet < open_limit:
                raise StillWrittenError(
                    f"it is still open for writing (changed {quiet:.1f} s ago)"
                ) from error
            lease.missing = f"still open for writing but unchanged for {quiet:.0f} s"
            lease.open_for_writing = True
            return lease
        lease.held = True
        return lease

    def check(self) -> None:
        """The lease is still ours: nobody opened the file for writing since it was taken.

        Raises:
            StillWrittenError: a writer opened (or truncated) it meanwhile.
        """
        if self.held and fcntl.fcntl(self.fd, _F_GETLEASE) != fcntl.F_RDLCK:
            raise StillWrittenError("it was opened for writing while acted on")

    def require_quiet(self, identity: Identity, doing: str) -> None:
        """Without a lease, `doing` (what could lose bytes) waits until the file is quiet.

        Raises:
            StillWrittenError: no lease, and it changed less than `quiet` seconds ago.
        """
        if self.held or self.missing is None:
            return
        since = quiet_for(identity)
        if since < self.quiet:
            raise StillWrittenError(
                f"{self.missing}, so a writer may still have it open, and it changed "
                f"{since:.1f} s ago: {doing} waits until it is quiet for {self.quiet:.0f} s"
            )

    def release(self) -> None:
        if self.held:
            self.held = False
            # On error: the descriptor is closed right after, which ends the lease too.
            with contextlib.suppress(OSError):
                fcntl.fcntl(self.fd, _F_SETLEASE, fcntl.F_UNLCK)

    def __enter__(self) -> ReadLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
