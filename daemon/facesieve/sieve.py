"""The Python API: load the models once, then judge images by path or by bytes.

    import facesieve

    sieve = facesieve.Sieve.from_config("facesieve.toml")  # or Sieve(), Sieve(require="man")
    if not sieve.keep("upload.jpg"):
        ...
    judgement = sieve.judge(data)  # bytes: judged in memory, nothing written to disk

A `Sieve` judges exactly as `facesieve check` does: the same judge (`judging.judge`:
one held descriptor per file, the budgeted decoder process, the models, the policy),
changing nothing. Only what is not a verdict differs: where `check` prints "not
judged" and exits 2, a `Sieve` raises `NotJudgedError`.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Config, load_config
from .errors import FacesieveError, FileTooLargeError
from .intake.safefs import Identity
from .judging.images import RawFile
from .judging.judge import Judgement, NotJudged, Read, Status, judge, judge_read
from .judging.policy import Verdict

if TYPE_CHECKING:
    from .judging.analyzer import FaceModel

__all__ = ["BYTES_PATH", "NotJudgedError", "Sieve", "caller_path"]

# The `path` of a judgement of bytes: they came from no file.
BYTES_PATH = Path("<bytes>")

Image = str | os.PathLike[str] | bytes


class NotJudgedError(FacesieveError):
    """The image got no verdict: it is missing, a symlink, not a regular file, could
    not be read, or a model failed. Never a verdict about the image.

    `status` is the judge's (`skipped` or `error`), `reason` says why.
    """

    def __init__(self, path: Path, status: str, reason: str) -> None:
        super().__init__(f"{path}: not judged: {reason}")
        self.path = path
        self.status = status
        self.reason = reason

    def __reduce__(self) -> tuple[type[NotJudgedError], tuple[Path, str, str]]:
        return type(self), (self.path, self.status, self.reason)


def caller_path(path: Path) -> Path:
    """A path the caller named, absolute, with the folders on it resolved.

    Whoever names a path is trusted up to its file: a symlinked folder on it is
    followed (judging changes nothing), the file itself is never followed. A file
    in a watched inbox gets no such trust; it is opened from `/` without links.
    """
    return Path(os.path.realpath(path.parent)) / path.name


class Sieve:
    """The models, loaded once, and the policy they are judged under.

    Safe to call from one thread only: the models are not thread-safe, and belong to
    the thread that built the `Sieve` (a call from another raises RuntimeError). For
    parallel judging, build one `Sieve` per process.

    Args:
        config: the configuration (`load_config`); None: the built-in defaults.
        require: overrides `[policy] require` ("face", "man" or "woman"), as
            `check --require` does.

    Raises:
        ConfigError: `require` is not one of those values.
        ModelLoadError: the models cannot be loaded (weights missing, a package missing).
    """

    def __init__(self, config: Config | None = None, *, require: str | None = None) -> None:
        from .judging.analyzer import load_analyzer  # the model packages load here, not at import

        config = config if config is not None else Config()
        self.config = config if require is None else config.with_policy(require=require)
        self._analyzer: FaceModel = load_analyzer(self.config)
        self._owner = threading.get_ident()

    @classmethod
    def from_config(
        cls, path: str | os.PathLike[str] | None, *, require: str | None = None
    ) -> Sieve:
        """A `Sieve` for the TOML config at `path` (None: the built-in defaults).

        Raises:
            ConfigError: the file is missing, not TOML, or a setting is invalid.
            ModelLoadError: the models cannot be loaded.
        """
        return cls(load_config(None if path is None else Path(path)), require=require)

    @property
    def models(self) -> dict[str, str]:
        """The models' names and the versions of the packages behind them."""
        return self._analyzer.describe()

    def judge(self, image: Image) -> Judgement:
        """The verdict on one image, given by path or as its bytes. Changes nothing.

        A path is read once through a held descriptor, without following a symlinked
        file (its folders are the caller's: see `caller_path`). Bytes are judged in
        memory, without touching the disk: the judgement's `path` is `BYTES_PATH`, its
        `dev`, `ino`, `mtime_ns`, `ctime_ns` and `mode` are 0. Bytes and a file with
        the same bytes get the same verdict, faces and sha256.

        Raises:
            NotJudgedError: no verdict (missing, a symlink, not a regular file,
                unreadable for I/O reasons, a model error).
            RuntimeError: called from a thread other than the one that built it.
        """
        if threading.get_ident() != self._owner:
            raise RuntimeError("Sieve used from a thread other than the one that built it")
        if isinstance(image, bytes):
            result = self._judge_bytes(image)
        else:
            path = Path(os.fspath(image))
            if not os.path.lexists(path):
                raise NotJudgedError(path, Status.SKIPPED.value, "no such file")
            result = judge(
                caller_path(path), self._analyzer, self.config.policy, self.config.images
            )
        if isinstance(result, NotJudged):
            raise NotJudgedError(result.path, result.status.value, result.reason)
        return result

    def keep(self, image: Image) -> bool:
        """Whether the image is kept under the policy: `judge(image).verdict` is keep.

        Raises:
            NotJudgedError: no verdict (see `judge`): neither kept nor not kept.
        """
        return self.judge(image).verdict is Verdict.KEEP

    def _judge_bytes(self, data: bytes) -> Judgement | NotJudged:
        policy, images = self.config.policy, self.config.images
        raw = RawFile(path=BYTES_PATH, data=data, size=len(data), mtime_ns=0, mode=0)
        if len(data) > images.max_file_bytes:
            # The verdict a file of this size gets (the judge does not read it): unreadable.
            too_large = FileTooLargeError(len(data), images.max_file_bytes)
            result = judge_read(self._too_large(raw, too_large), self._analyzer, policy)
        else:
            result = judge(raw, self._analyzer, policy, images)
        return dataclasses.replace(result, path=BYTES_PATH)

    @staticmethod
    def _too_large(raw: RawFile, error: FileTooLargeError) -> Read:
        import hashlib

        return Read(
            path=raw.path,
            sha256=hashlib.sha256(raw.data).hexdigest(),
            identity=Identity(0, 0, raw.size, 0, 0),
            mode=0,
            image=None,
            unreadable_reason=f"too large: {error}",
            read_ms=0.0,
        )
