"""The exceptions facesieve raises, and the exit code each one ends a command with.

Every command and the daemon map errors to exit codes through `exit_code` and
nowhere else. Every error pickles (`pickle.loads(pickle.dumps(error))` gives an
equal error back), so a judge running in another process can raise it across.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "ActionError",
    "AlreadyHasVerdictError",
    "ChangedError",
    "ConfigError",
    "DecodeInterruptedError",
    "ExitCode",
    "FacesieveError",
    "FileTooLargeError",
    "FileVanishedError",
    "HumanVerdictError",
    "ImageAccessError",
    "LedgerBusyError",
    "LedgerError",
    "ModelLoadError",
    "NotRegularFileError",
    "RestoreConflictError",
    "SlowDecodeError",
    "SymlinkRefusedError",
    "UnreadableImageError",
    "UnsafeFolderError",
    "WorkerError",
    "exit_code",
    "exit_message",
]


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1  # an unexpected error
    # `check` follows ClamAV's clamdscan: 0 every image kept, 1 at least one not
    # kept (found), 2 at least one file not judged (missing, not a file, an error).
    NOT_KEPT = 1
    USAGE = 2  # argparse's own code for bad arguments; check: a file not judged
    CONFIG = 3  # the config is invalid: restarting will not help
    MODEL = 4  # a model cannot be loaded: nothing was touched
    LEDGER = 5  # the ledger cannot be opened or written: restarting will not mend it
    INTERRUPTED = 130


class FacesieveError(Exception):
    """Base class of every error facesieve raises on purpose."""


class ConfigError(FacesieveError):
    """The configuration is invalid; `key` names the offending setting."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str]]:
        # The default rebuilds from `args` (the formatted text alone), which this
        # __init__ cannot take.
        return type(self), (self.key, self.message)


class ModelLoadError(FacesieveError):
    """A model cannot be loaded. Never a verdict about an image."""

    def __init__(self, model: str, message: str) -> None:
        super().__init__(f"model {model!r} cannot be loaded: {message}")
        self.model = model
        self.message = message

    def __reduce__(self) -> tuple[type[ModelLoadError], tuple[str, str]]:
        return type(self), (self.model, self.message)


class UnreadableImageError(FacesieveError):
    """The bytes were read but are not a decodable image: this *is* a verdict."""


class DecodeInterruptedError(FacesieveError):
    """A stop request ended a decode: nothing is known about the image, so no verdict."""


class SlowDecodeError(DecodeInterruptedError):
    """A decode outlasted a short first budget (`images.first_decode_seconds`): nothing
    is known yet; the file is set aside and decoded again with the full budget."""


class ImageAccessError(FacesieveError):
    """The file could not be read (permissions, vanished, not a regular file).

    An I/O failure says nothing about the image, so it is never a verdict: the
    file stays where it is and is tried again on the next pass.
    """


class FileTooLargeError(ImageAccessError):
    """The file is larger than `max_file_bytes`: it is not read, and it is a verdict
    (`unreadable`, too large), not an I/O failure."""

    def __init__(self, size: int, limit: int, *stat: int) -> None:
        super().__init__(f"{size} bytes is over the {limit}-byte limit")
        self.size = size
        self.limit = limit
        # The file's mtime_ns, mode, ctime_ns, dev and ino: what a verdict records.
        self.stat = stat

    def __reduce__(self) -> tuple[type[FileTooLargeError], tuple[int, ...]]:
        return type(self), (self.size, self.limit, *self.stat)


class FileVanishedError(ImageAccessError):
    """The file was gone before it could be opened: nothing to judge (not an error)."""


class SymlinkRefusedError(ImageAccessError):
    """The file, or a folder on its path, is a symbolic link: never followed."""


class NotRegularFileError(ImageAccessError):
    """Not a regular file (a FIFO, a device, a socket, a folder): never opened."""


class LedgerError(FacesieveError):
    """The decision ledger cannot be opened or written."""


class LedgerBusyError(LedgerError):
    """Another `scan` or `watch` holds the ledger: two writers would record files twice."""


class UnsafeFolderError(FacesieveError):
    """A folder facesieve writes its own files into is a symlink, or someone else's.

    An uploader who can plant `.facesieve` or a quarantine folder could otherwise
    make facesieve write its ledger and quarantined files wherever they like.
    """


class ChangedError(FacesieveError):
    """The file changed between being judged and being acted on, or while it was read.

    Not a verdict and not a failure: nothing was done, and the file is judged again
    once it is quiet.
    """


class ActionError(FacesieveError):
    """A keep/move/delete action failed; the file is left where it was."""


class RestoreConflictError(ActionError):
    """A file cannot go back to its original path because another file is there now.

    Never resolved by renaming or overwriting: the file stays where it is, and a
    person decides.
    """


class WorkerError(FacesieveError):
    """A judging process or actor failed in a way that is not about one image."""


class HumanVerdictError(FacesieveError):
    """A person's decision about a file in review cannot be applied; nothing was changed."""


class AlreadyHasVerdictError(HumanVerdictError):
    """Someone else settled (or is settling) this file first; nothing was changed."""


# Typed errors become exit codes here and nowhere else. First match wins.
_EXITS: tuple[tuple[type[FacesieveError], ExitCode, str], ...] = (
    (ConfigError, ExitCode.CONFIG, "config error: "),
    # A planted or symlinked state folder: a person must look; restarting will not help.
    (UnsafeFolderError, ExitCode.CONFIG, "unsafe folder: "),
    (ModelLoadError, ExitCode.MODEL, ""),
    (LedgerError, ExitCode.LEDGER, "ledger error: "),
    (FacesieveError, ExitCode.FAILURE, ""),
)


def exit_code(error: BaseException) -> ExitCode:
    """The exit code a command ends with when `error` stops it."""
    for kind, code, _ in _EXITS:
        if isinstance(error, kind):
            return code
    return ExitCode.FAILURE


def exit_message(error: BaseException) -> str:
    """The one line a command prints on stderr when `error` stops it."""
    prefix = next((p for kind, _, p in _EXITS if isinstance(error, kind)), "")
    return f"facesieve: {prefix}{error}"
