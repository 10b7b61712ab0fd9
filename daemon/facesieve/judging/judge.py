"""The judge: one file in, one verdict out. It reads; it never moves, deletes or records.

Judging is two stages. `read` opens, hashes and decodes a file (I/O only, safe on
any thread, so `judge_many` runs it ahead on a second core); `judge_read` runs the
models and the policy (on the one thread that owns the analyzer). `judge` is both
for one file. The result is a `Judgement`, or a `NotJudged` for every problem that
is not a verdict (vanished, a symlink, unreadable for I/O reasons, a model error):
both are plain, picklable values, so a judge can run in another process and ship
its results back. What is done about a judgement is `apply`'s business.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from ..config import ImagesConfig, PolicyConfig
from ..errors import (
    ChangedError,
    DecodeInterruptedError,
    FileTooLargeError,
    FileVanishedError,
    ImageAccessError,
    LedgerError,
    NotRegularFileError,
    SlowDecodeError,
    SymlinkRefusedError,
    UnreadableImageError,
)
from ..intake.safefs import HeldFile, Identity, is_symlink_refusal, open_path
from ..ledger.store import LedgerRow, policy_fingerprint
from ..logs import get_logger
from .analyzer import MAX_BATCH, FaceModel
from .decoder import shared_decoder
from .images import DecodedImage, RawFile, descriptor_sha256, sniff_format
from .policy import Face, Verdict, decide, not_image, unreadable

__all__ = [
    "Judgement",
    "NotJudged",
    "Read",
    "Seen",
    "Status",
    "is_sparse",
    "judge",
    "judge_many",
    "judge_read",
    "read",
]


class Status(StrEnum):
    DECIDED = "decided"
    KNOWN = "known"  # decided before and unchanged since: not judged again
    SKIPPED = "skipped"  # never judged: a symlink, not a regular file, gone
    ERROR = "error"  # could not be judged or acted on; the file is where it was
    # Not judged or not acted on yet: being written, changed while judged, or
    # unreadable while young. Nothing was done; it is looked at again later.
    DEFERRED = "deferred"


@dataclass(frozen=True, slots=True)
class Judgement:
    """The verdict on one file's content, and which inode and bytes it is about.

    `identity` names the inode that was read, with its size and times, so whoever
    acts on the verdict can check that the file at `path` is still that one.
    """

    path: Path  # absolute; a symlink is never resolved
    sha256: str
    identity: Identity
    mode: int
    faces: tuple[Face, ...]
    verdict: Verdict
    reason: str
    models: dict[str, str] = field(hash=False)  # model names and package versions
    policy_fingerprint: str  # ledger.policy_fingerprint of the policy that decided
    read_ms: float  # reading, hashing and decoding
    model_ms: float  # the models' share of time (of a batch: an equal share)

    @property
    def elapsed_ms(self) -> float:
        return self.read_ms + self.model_ms

    # The identity's parts, for whoever needs one of them.
    @property
    def dev(self) -> int:
        return self.identity.dev

    @property
    def ino(self) -> int:
        return self.identity.ino

    @property
    def size(self) -> int:
        return self.identity.size

    @property
    def mtime_ns(self) -> int:
        return self.identity.mtime_ns

    @property
    def ctime_ns(self) -> int:
        return self.identity.ctime_ns


@dataclass(frozen=True, slots=True)
class NotJudged:
    """A file that got no verdict, and why. Never a verdict: the file stays where it is."""

    path: Path
    status: Status  # KNOWN, SKIPPED or ERROR
    reason: str
    # DEFERRED only: set aside as slow (over the first decode budget, or sparse), to
    # be judged again without the first budget (`judge_many(first_budget=None)`).
    slow: bool = False


@dataclass(frozen=True, slots=True)
class Seen:
    """What an earlier decision knew of the file now at a path (from the ledger)."""

    size: int
    mtime_ns: int
    sha256: str
    source: str  # where it was recorded, for the reason: "ledger #12"
    # The inode and its ctime (None in rows written before they were recorded):
    # only the same inode with the same ctime proves the bytes unchanged without
    # reading them; size and mtime alone anyone who can write the file can forge.
    dev: int | None = None
    ino: int | None = None
    ctime_ns: int | None = None

    @classmethod
    def of_row(cls, row: LedgerRow) -> Seen:
        """What a ledger row knew of its file: every engine asks the ledger this way."""
        return cls(
            row.size,
            row.mtime_ns,
            row.sha256,
            f"ledger #{row.id}",
            dev=row.dev,
            ino=row.ino,
            ctime_ns=row.ctime_ns,
        )

    @property
    def identity(self) -> Identity | None:
        """The file's identity as recorded; None in rows from before inodes were."""
        if self.dev is None or self.ino is None or self.ctime_ns is None:
            return None
        return Identity(self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns)

    def same_stat(self, identity: Identity) -> bool:
        """Whether a stat proves the bytes untouched: the one "already decided?" rule."""
        return self.identity == identity

    def same_content(self, sha256: str, identity: Identity) -> bool:
        """Same bytes, and the same inode unless the row predates inodes in the ledger."""
        return self.sha256 == sha256 and (
            self.ino is None or (self.dev, self.ino) == (identity.dev, identity.ino)
        )


@dataclass(frozen=True, slots=True)
class Read:
    """Stage one's product: a file read, hashed and decoded, not yet judged."""

    path: Path
    sha256: str
    identity: Identity  # of the bytes read
    mode: int
    image: DecodedImage | None  # None: not decodable, see `unreadable_reason`
    unreadable_reason: str
    read_ms: float
    not_image: str = ""  # the bytes are no image format at all: why


def _absolute(path: Path) -> Path:
    # abspath, not resolve(): a symlink must stay the symlink, never its target.
    return Path(os.path.abspath(path))


def _hold(path: Path) -> HeldFile | NotJudged:
    """Open `path` once, every folder from `/` without following a symlink.

    Configured folders are resolved when the config loads, so a symlink on the way
    was put there by someone who can write the inbox: never followed.
    """
    try:
        folder = open_path(path.parent)
    except FileNotFoundError:
        return NotJudged(path, Status.SKIPPED, "vanished before it was judged")
    except OSError as error:
        if is_symlink_refusal(error):
            return NotJudged(
                path, Status.SKIPPED, "a folder on its path is a symlink: never followed"
            )
        return NotJudged(path, Status.ERROR, f"cannot open its folder: {error.strerror}")
    try:
        return HeldFile(path, folder, path.name)
    except ImageAccessError as error:
        return NotJudged(path, *_not_held(error))


def _not_held(error: ImageAccessError) -> tuple[Status, str]:
    """What a file that could not be held is, by the error's class, never its wording:
    a reworded message must not turn a skip into an error, or an error into a skip."""
    if isinstance(error, FileVanishedError):
        return Status.SKIPPED, "vanished before it was judged"
    if isinstance(error, SymlinkRefusedError):
        return Status.SKIPPED, "symlink: never followed"
    if isinstance(error, NotRegularFileError):
        return Status.SKIPPED, "not a regular file"
    return Status.ERROR, str(error)


def read(
    source: Path | RawFile,
    images: ImagesConfig,
    seen: Seen | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    first_budget: float | None = None,
) -> Read | NotJudged:
    """Read (unless `source` already was), hash and decode one file. Never raises.

    With `seen`, a file whose size and mtime, or else whose content, is what was
    seen before is `NotJudged(KNOWN)`, without reading or decoding more than needed.
    Decoding runs in the budgeted decoder process (`decoder`); `should_stop` ends
    a decode at once (the file is then `NotJudged(SKIPPED)`, judged later).
    With `first_budget` (seconds), a file that is sparse (`is_sparse`), or whose
    decode outlasts it, is `NotJudged(DEFERRED, slow=True)`: set aside, unread or
    undecided, for a look without the first budget when nothing else waits.
    """
    path = _absolute(source if isinstance(source, Path) else source.path)
    try:
        return _read(path, source, images, seen, should_stop, first_budget)
    except Exception as error:  # noqa: BLE001 - one odd file must not end a scan
        return NotJudged(path, Status.ERROR, f"{type(error).__name__}: {error}")


def _too_large(
    path: Path, held: HeldFile, error: FileTooLargeError, started: float
) -> Read | NotJudged:
    # Too large to read is a verdict (unreadable), not an I/O failure: left
    # unjudged, it would sit in the inbox for ever. Hashed in blocks from the held
    # descriptor: the name may be a symlink or a FIFO by now.
    mtime_ns, mode, ctime_ns, dev, ino = error.stat
    try:
        sha256 = descriptor_sha256(held.fd)
        after = Identity.of(os.fstat(held.fd))
    except OSError as failure:
        return NotJudged(path, Status.ERROR, f"cannot read: {failure.strerror}")
    if after != Identity(dev, ino, error.size, mtime_ns, ctime_ns):
        return NotJudged(path, Status.DEFERRED, "changed while it was read: being written")
    return Read(
        path=path,
        sha256=sha256,
        identity=Identity(dev, ino, error.size, mtime_ns, ctime_ns),
        mode=mode,
        image=None,
        unreadable_reason=f"too large: {error}",
        read_ms=(time.perf_counter() - started) * 1000,
    )


def _read(
    path: Path,
    source: Path | RawFile,
    images: ImagesConfig,
    seen: Seen | None,
    should_stop: Callable[[], bool],
    first_budget: float | None = None,
) -> Read | NotJudged:
    started = time.perf_counter()
    if isinstance(source, Path):
        held_read = _read_held(path, images, seen, started, first_budget)
        if not isinstance(held_read, RawFile):
            return held_read
        raw = held_read
    else:
        raw = source
    sha256 = hashlib.sha256(raw.data).hexdigest()
    if seen is not None and seen.same_content(sha256, raw.identity):
        return NotJudged(path, Status.KNOWN, f"content unchanged ({seen.source})")
    image: DecodedImage | None = None
    why = ""
    # The bytes decide, not the name: a video named .jpg is no image, and a JPEG
    # without an extension is one. (Zero bytes are an empty image: unreadable.)
    foreign = ""
    if raw.size and sniff_format(raw.data) is None:
        foreign = "no image format recognised in its bytes"
    else:
        decoded = _decode(path, raw, images, should_stop, first_budget)
        if isinstance(decoded, NotJudged):
            return decoded
        image, why = decoded
    return Read(
        path=path,
        sha256=sha256,
        identity=raw.identity,
        mode=raw.mode,
        image=image,
        unreadable_reason=why,
        read_ms=(time.perf_counter() - started) * 1000,
        not_image=foreign,
    )


def _read_held(
    path: Path,
    images: ImagesConfig,
    seen: Seen | None,
    started: float,
    first_budget: float | None,
) -> RawFile | Read | NotJudged:
    """`_read`'s first half for a path: hold the file, read its bytes with their stat
    (or the answer without them: known by its stat, sparse, changed, too large)."""
    opened = _hold(path)
    if isinstance(opened, NotJudged):
        return opened
    with opened as held:
        if seen is not None and seen.same_stat(held.identity):
            return NotJudged(path, Status.KNOWN, f"already decided ({seen.source})")
        if first_budget is not None and is_sparse(os.fstat(held.fd)):
            # Set aside before a byte is read: reading, hashing and decoding its
            # holes would cost the one judge seconds, and its uploader no disk.
            return NotJudged(
                path,
                Status.DEFERRED,
                "set aside: sparse (its stored bytes are far "
                "fewer than its size); judged when nothing else waits",
                slow=True,
            )
        try:
            data = held.read(images.max_file_bytes)
        except ChangedError as error:
            return NotJudged(path, Status.DEFERRED, str(error))
        except FileTooLargeError as error:
            return _too_large(path, held, error, started)
        except ImageAccessError as error:
            return NotJudged(path, Status.ERROR, str(error))
        identity = held.identity
        return RawFile(
            path=path,
            data=data,
            size=len(data),
            mtime_ns=identity.mtime_ns,
            mode=held.mode,
            ctime_ns=identity.ctime_ns,
            dev=identity.dev,
            ino=identity.ino,
        )


def _decode(
    path: Path,
    raw: RawFile,
    images: ImagesConfig,
    should_stop: Callable[[], bool],
    first_budget: float | None,
) -> tuple[DecodedImage | None, str] | NotJudged:
    """The image and why it is unreadable (""), or the answer that it waits: set
    aside as slow, or stopped while decoding."""
    try:
        image = shared_decoder(images).decode(raw.data, should_stop, first_budget=first_budget)
    except UnreadableImageError as error:
        return None, str(error)
    except SlowDecodeError as error:
        reason = f"set aside: {error}; judged when nothing else waits"
        return NotJudged(path, Status.DEFERRED, reason, slow=True)
    except DecodeInterruptedError:
        return NotJudged(path, Status.SKIPPED, "stopped while decoding; judged later")
    return image, ""


def judge_read(
    item: Read,
    analyzer: FaceModel,
    policy: PolicyConfig,
    *,
    faces: Sequence[Face] | None = None,
    model_ms: float = 0.0,
) -> Judgement | NotJudged:
    """Run the models (unless `faces` came from a batch) and the policy on a read file.

    The models take their floors from `policy` too, so the policy passed is the one
    applied throughout.

    The analyzer's thread only. A model failure is `NotJudged(ERROR)`, never a verdict.
    """
    if item.not_image:
        decision, faces = not_image(item.not_image), ()
    elif item.image is None:
        decision, faces = unreadable(item.unreadable_reason or "cannot decode"), ()
    else:
        if faces is None:
            started = time.perf_counter()
            try:
                faces = analyzer.analyze_many([item.image], policy)[0]
            except Exception as error:  # noqa: BLE001 - a model failure is never a verdict
                return NotJudged(
                    item.path, Status.ERROR, f"model error: {type(error).__name__}: {error}"
                )
            model_ms = (time.perf_counter() - started) * 1000
        decision = decide(faces, policy)
    return Judgement(
        path=item.path,
        sha256=item.sha256,
        identity=item.identity,
        mode=item.mode,
        faces=tuple(faces),
        verdict=decision.verdict,
        reason=decision.reason,
        models=analyzer.describe(),
        policy_fingerprint=policy_fingerprint(policy.model_dump()),
        read_ms=round(item.read_ms, 1),
        model_ms=round(model_ms, 1),
    )


def judge(
    source: Path | RawFile,
    analyzer: FaceModel,
    policy: PolicyConfig,
    images: ImagesConfig,
    *,
    seen: Seen | None = None,
) -> Judgement | NotJudged:
    """Judge one file (a path, or bytes already read with their stat). Never raises."""
    item = read(source, images, seen)
    if isinstance(item, NotJudged):
        return item
    return judge_read(item, analyzer, policy)


def judge_many(
    sources: Iterable[Path | RawFile],
    analyzer: FaceModel,
    policy: PolicyConfig,
    images: ImagesConfig,
    *,
    batch: int = MAX_BATCH,
    should_stop: Callable[[], bool] = lambda: False,
    seen: Callable[[Path], Seen | None] | None = None,
    first_budget: float | None = None,
) -> Iterator[Judgement | NotJudged]:
    """`judge` over many files, in order: the next files are read and decoded on a
    second thread while the models run, and images of about one size share a model call.
    `first_budget`: as `read`'s (slow files are handed out as `NotJudged(slow=True)`).

    `seen` is asked on the caller's thread (it may hold the ledger). `should_stop` is
    asked before each result is handed out; files read ahead but not handed out
    when it says yes are dropped, untouched.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="facesieve-decode") as pool:
        ahead: deque[Future[Read | NotJudged]] = deque()
        remaining = iter(sources)

        def read_ahead() -> None:
            while len(ahead) < 2 * batch and not should_stop():
                source = next(remaining, None)
                if source is None:
                    return
                path = _absolute(source if isinstance(source, Path) else source.path)
                try:
                    known = None if seen is None else seen(path)
                except LedgerError:
                    raise  # no ledger: nothing could be recorded; the run stops
                except Exception as error:  # noqa: BLE001 - one odd file must not end a scan
                    reason = f"{type(error).__name__}: {error}"
                    ahead.append(_done(NotJudged(path, Status.ERROR, reason)))
                    continue
                ahead.append(pool.submit(read, source, images, known, should_stop, first_budget))

        try:
            read_ahead()
            while ahead and not should_stop():
                chunk = [ahead.popleft().result() for _ in range(min(batch, len(ahead)))]
                read_ahead()
                found = _analyze_chunk(analyzer, chunk, policy)
                if (yield from _hand_out(chunk, found, analyzer, policy, should_stop)):
                    return
        finally:
            for future in ahead:
                future.cancel()


def _hand_out(
    chunk: Sequence[Read | NotJudged],
    found: dict[int, tuple[list[Face], float]],
    analyzer: FaceModel,
    policy: PolicyConfig,
    should_stop: Callable[[], bool],
) -> Generator[Judgement | NotJudged, None, bool]:
    """Yield a chunk's results in order (judged with the faces its model call found);
    True when `should_stop` said yes before all were handed out."""
    for item in chunk:
        if should_stop():
            return True
        if isinstance(item, NotJudged):
            yield item
        elif id(item) in found:
            faces, share = found[id(item)]
            yield judge_read(item, analyzer, policy, faces=faces, model_ms=share)
        else:
            yield judge_read(item, analyzer, policy)
    return False


# A file at least this large whose blocks hold under an eighth of its size.
_SPARSE_MIN_BYTES = 1 << 20
_SPARSE_RATIO = 8


def is_sparse(info: os.stat_result) -> bool:
    """Whether a file stores far fewer bytes than its size says: holes (a sparse file),
    or a filesystem's own compression (btrfs, ZFS, ...) of very compressible bytes.

    Photos (JPEG, PNG, WebP, HEIF: compressed already) never look so; an uncompressed
    BMP or TIFF on a compressing filesystem may, which is why a sparse file is only
    set aside to the slow lane, never given a verdict for it.
    """
    return info.st_size >= _SPARSE_MIN_BYTES and info.st_blocks * 512 * _SPARSE_RATIO < info.st_size


def _done(result: NotJudged) -> Future[Read | NotJudged]:
    future: Future[Read | NotJudged] = Future()
    future.set_result(result)
    return future


def _analyze_chunk(
    analyzer: FaceModel, chunk: Sequence[Read | NotJudged], policy: PolicyConfig
) -> dict[int, tuple[list[Face], float]]:
    """One model call for the decodable images of a chunk: faces and each one's time share."""
    ready = [item for item in chunk if isinstance(item, Read) and item.image is not None]
    if len(ready) < 2:
        return {}  # judge_read runs the models itself, timing its own call
    started = time.perf_counter()
    try:
        found = analyzer.analyze_many(
            [item.image for item in ready if item.image is not None], policy
        )
    except Exception as error:  # noqa: BLE001 - retried one by one: only a bad file errors
        get_logger().warning(
            "batch_failed", files=len(ready), error=f"{type(error).__name__}: {error}"
        )
        return {}
    share = (time.perf_counter() - started) * 1000 / len(ready)
    return {id(item): (faces, share) for item, faces in zip(ready, found, strict=True)}
