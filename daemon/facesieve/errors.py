"""The exceptions facesieve raises; the CLI maps each to an exit code."""

from __future__ import annotations

__all__ = [
    "ActionError",
    "AlreadySettledError",
    "ConfigError",
    "FacesieveError",
    "ImageAccessError",
    "LedgerError",
    "ModelLoadError",
    "RestoreConflictError",
    "SettleError",
    "UnreadableImageError",
    "WorkerError",
]


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


class ImageAccessError(FacesieveError):
    """The file could not be read (permissions, vanished, not a regular file).

    An I/O failure says nothing about the image, so it is never a verdict: the
    file stays where it is and is tried again on the next pass.
    """


class LedgerError(FacesieveError):
    """The decision ledger cannot be opened or written."""


class ActionError(FacesieveError):
    """A keep/move/delete action failed; the file is left where it was."""


class RestoreConflictError(ActionError):
    """A file cannot go back to its original path because another file is there now.

    Never resolved by renaming or overwriting: the file stays where it is, and a
    person decides.
    """


class WorkerError(FacesieveError):
    """A judging process or actor failed in a way that is not about one image."""


class SettleError(FacesieveError):
    """A person's decision about a file in review cannot be applied; nothing was changed."""


class AlreadySettledError(SettleError):
    """Someone else settled (or is settling) this file first; nothing was changed."""
