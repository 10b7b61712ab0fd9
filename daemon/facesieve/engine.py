"""The engine: one file in, one recorded decision out.

A file goes through two stages. `prepare` reads and decodes it (I/O only, safe on
any thread, so a scan runs it ahead on a second core); `finish` runs the models,
applies the policy, acts and records (on the one thread that owns the analyzer).
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from .actions import (
    Action,
    delete_file,
    free_destination,
    move_file,
    plan,
    remove_partials,
    resume_move,
)
from .analyzer import MAX_BATCH, Analyzer
from .config import Config, ResolvedFolders
from .errors import ActionError, ImageAccessError, UnreadableImageError
from .images import DecodedImage, decode_image, read_file
from .ledger import Ledger, LedgerRow, policy_fingerprint
from .logs import get_logger
from .policy import Face, Verdict, decide, unreadable

__all__ = ["Engine", "Outcome", "Status", "iter_images"]


class Status(StrEnum):
    DECIDED = "decided"
    KNOWN = "known"  # decided before and unchanged since: not judged again
    SKIPPED = "skipped"  # never judged: a symlink, not a regular file, gone
    ERROR = "error"  # could not be judged or acted on; the file is where it was


@dataclass(frozen=True, slots=True)
class Outcome:
    path: Path
    status: Status
    verdict: Verdict | None = None
    reason: str = ""
    faces: tuple[Face, ...] = ()
    action: str | None = None
    destination: Path | None = None
    elapsed_ms: float = 0.0
    sha256: str | None = None
    size: int | None = None

    def as_dict(self, *, with_action: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "path": str(self.path),
            "verdict": None if self.verdict is None else self.verdict.value,
            "reason": self.reason,
            "faces": [face.as_dict() for face in self.faces],
        }
        if with_action:
            data["action"] = self.action
            data["destination"] = None if self.destination is None else str(self.destination)
        return data


@dataclass(slots=True)
class _Prepared:
    path: Path
    prepare_ms: float = 0.0
    model_ms: float = 0.0
    raw_size: int = 0
    mtime_ns: int = 0
    mode: int = 0
    sha256: str = ""
    image: DecodedImage | None = None
    unreadable_reason: str | None = None


def _absolute(path: Path) -> Path:
    # abspath, not resolve(): a symlink must stay the symlink, never its target.
    return Path(os.path.abspath(path))


class Engine:
    """Judges files with one analyzer and, unless `folders` is None, acts on them.

    Like the analyzer and the ledger it holds, an engine belongs to one thread.
    """

    def __init__(
        self,
        config: Config,
        analyzer: Analyzer,
        *,
        folders: ResolvedFolders | None = None,
        ledger: Ledger | None = None,
        dry_run: bool = False,
        rejudge: Callable[[LedgerRow], bool] | None = None,
    ) -> None:
        self.config = config
        self.analyzer = analyzer
        self.folders = folders
        self.ledger = ledger
        self.dry_run = dry_run
        # Decisions to judge again although the file is unchanged (`scan --rejudge`).
        self.rejudge = rejudge
        self._log = get_logger()
        self._models = analyzer.describe()

    def models_changed(self) -> None:
        """The analyzer's models changed (a reloaded policy): record the new ones from now on."""
        self._models = self.analyzer.describe()

    # -- stage 1: I/O and decoding, any thread ------------------------------------------

    def previous(self, path: Path) -> LedgerRow | None:
        """The recorded decision that left a file at `path`, if any (the ledger's thread)."""
        if self.ledger is None or self.dry_run:
            return None
        row = self.ledger.last_done(_absolute(path))
        if row is None or not row.left_in_place:
            return None
        return None if self.rejudge is not None and self.rejudge(row) else row

    def prepare(self, path: Path, previous: LedgerRow | None = None) -> _Prepared | Outcome:
        """Read, hash and decode one file. Never raises: problems become outcomes."""
        try:
            return self._prepare(_absolute(path), previous)
        except Exception as error:  # noqa: BLE001 - one odd file must not end a scan
            return Outcome(_absolute(path), Status.ERROR, reason=f"{type(error).__name__}: {error}")

    def _prepare(self, path: Path, previous: LedgerRow | None) -> _Prepared | Outcome:
        started = time.perf_counter()
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return Outcome(path, Status.SKIPPED, reason="vanished before it was judged")
        except OSError as error:
            return Outcome(path, Status.ERROR, reason=f"cannot stat: {error.strerror}")
        if stat.S_ISLNK(info.st_mode):
            return Outcome(path, Status.SKIPPED, reason="symlink: never followed")
        if not stat.S_ISREG(info.st_mode):
            return Outcome(path, Status.SKIPPED, reason="not a regular file")
        if previous is not None and (previous.size, previous.mtime_ns) == (
            info.st_size,
            info.st_mtime_ns,
        ):
            return Outcome(path, Status.KNOWN, reason=f"already decided (ledger #{previous.id})")
        images = self.config.images
        try:
            raw = read_file(path, max_bytes=images.max_file_bytes)
        except ImageAccessError as error:
            return Outcome(path, Status.ERROR, reason=str(error))
        prepared = _Prepared(
            path=path,
            raw_size=raw.size,
            mtime_ns=raw.mtime_ns,
            mode=raw.mode,
            sha256=hashlib.sha256(raw.data).hexdigest(),
        )
        if previous is not None and previous.sha256 == prepared.sha256:
            return Outcome(path, Status.KNOWN, reason=f"content unchanged (ledger #{previous.id})")
        try:
            prepared.image = decode_image(
                raw.data, max_pixels=images.max_pixels, max_side=images.detect_max_side
            )
        except UnreadableImageError as error:
            prepared.unreadable_reason = str(error)
        prepared.prepare_ms = (time.perf_counter() - started) * 1000
        return prepared

    # -- stage 2: models, policy, action, ledger; the analyzer's thread -----------------

    def finish(self, prepared: _Prepared | Outcome, faces: Sequence[Face] | None = None) -> Outcome:
        """Decide, act and record one prepared file; `faces` if the models already ran."""
        if isinstance(prepared, Outcome):
            return self._report(prepared)
        path = prepared.path
        started = time.perf_counter()
        if prepared.image is None:
            decision, faces = unreadable(prepared.unreadable_reason or "cannot decode"), ()
        else:
            if faces is None:
                model_started = time.perf_counter()
                try:
                    faces = self.analyzer.analyze(prepared.image)
                except Exception as error:  # noqa: BLE001 - a model failure is never a verdict
                    reason = f"model error: {type(error).__name__}: {error}"
                    return self._report(Outcome(path, Status.ERROR, reason=reason))
                # A file judged alone (the daemon's usual case) pays for its own model call.
                prepared.model_ms = (time.perf_counter() - model_started) * 1000
                started = time.perf_counter()
            faces = tuple(faces)
            decision = decide(faces, self.config.policy)
        outcome = Outcome(
            path,
            Status.DECIDED,
            verdict=decision.verdict,
            reason=decision.reason,
            faces=tuple(faces),
            sha256=prepared.sha256,
            size=prepared.raw_size,
        )
        if self.folders is not None:
            outcome = self._act(prepared, outcome)
        elapsed = prepared.prepare_ms + prepared.model_ms + (time.perf_counter() - started) * 1000
        return self._report(_with(outcome, elapsed_ms=round(elapsed, 1)))

    def process(self, path: Path) -> Outcome:
        """Judge one file and, with folders set, act on it and record the decision."""
        return self.finish(self.prepare(path, self.previous(path)))

    def process_many(
        self,
        paths: Iterable[Path],
        *,
        batch: int = MAX_BATCH,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[Outcome]:
        """`process` over many files: the next files are read and decoded on a second
        thread while the models run, and equal-sized images share one detector call.

        `should_stop` is asked before each file is acted on; files read ahead but
        not yet acted on when it says yes are left untouched.
        """
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="facesieve-decode") as pool:
            ahead: deque[Future[_Prepared | Outcome]] = deque()
            remaining = iter(paths)

            def read_ahead() -> None:
                while len(ahead) < 2 * batch and not should_stop():
                    path = next(remaining, None)
                    if path is None:
                        return
                    ahead.append(pool.submit(self.prepare, path, self.previous(path)))

            read_ahead()
            while ahead and not should_stop():
                chunk = [ahead.popleft().result() for _ in range(min(batch, len(ahead)))]
                read_ahead()
                faces = self._analyze_chunk(chunk)
                for item in chunk:
                    if should_stop():
                        break
                    yield self.finish(item, faces.get(id(item)))
            for future in ahead:
                future.cancel()

    def _analyze_chunk(self, chunk: Sequence[_Prepared | Outcome]) -> dict[int, list[Face]]:
        ready = [p for p in chunk if isinstance(p, _Prepared) and p.image is not None]
        if len(ready) < 2:
            return {}  # finish() runs the models itself, one file at a time
        started = time.perf_counter()
        try:
            found = self.analyzer.analyze_many([p.image for p in ready if p.image is not None])
        except Exception as error:  # noqa: BLE001 - retried one by one: only a bad file errors
            self._log.warning(
                "batch_failed", files=len(ready), error=f"{type(error).__name__}: {error}"
            )
            return {}
        share = (time.perf_counter() - started) * 1000 / len(ready)
        for item in ready:
            item.model_ms = share
        return {id(item): faces for item, faces in zip(ready, found, strict=True)}

    def _act(self, prepared: _Prepared, outcome: Outcome) -> Outcome:
        assert self.folders is not None and outcome.verdict is not None
        verdict = outcome.verdict
        action, folder = plan(verdict, self.config.actions, self.folders)
        path = prepared.path
        destination = free_destination(path, self.folders.root, folder) if folder else None
        outcome = _with(outcome, action=action.value, destination=destination)
        if self.dry_run:
            return outcome
        try:
            info = os.lstat(path)
        except OSError:
            return _with(outcome, status=Status.SKIPPED, reason="vanished while judged")
        if (info.st_size, info.st_mtime_ns) != (prepared.raw_size, prepared.mtime_ns):
            return _with(
                outcome, status=Status.SKIPPED, reason="changed while judged; judged again later"
            )
        row_id = None
        if self.ledger is not None:
            row_id = self.ledger.begin(
                path=path,
                root=self.folders.root,
                size=prepared.raw_size,
                mtime_ns=prepared.mtime_ns,
                mode=prepared.mode,
                sha256=prepared.sha256,
                faces=[f.as_dict() for f in outcome.faces],
                verdict=verdict.value,
                reason=outcome.reason,
                action=action.value,
                destination=destination,
                models=self._models,
                elapsed_ms=round(prepared.prepare_ms + prepared.model_ms, 1),
                policy=policy_fingerprint(self.config.policy.model_dump()),
            )
        try:
            landed: Path | None = None
            if destination is not None:
                landed = move_file(path, destination)
            elif action is Action.DELETE:
                delete_file(path)
        except ActionError as error:
            if self.ledger is not None and row_id is not None:
                self.ledger.fail(row_id, str(error))
            return _with(outcome, status=Status.ERROR, reason=f"{outcome.reason}; {error}")
        if self.ledger is not None and row_id is not None:
            self.ledger.complete(row_id, landed)
        return _with(outcome, destination=landed)

    def recover(self) -> int:
        """Settle every action a crash left half-done; returns how many were pending.

        After it, each file is in exactly one place and its ledger row says which:
        a move that happened is completed (its source unlinked if it lingered), one
        that did not is marked failed so the file, still in the inbox, is judged again.
        """
        if self.ledger is None or self.folders is None:
            return 0
        for folder in self.folders.managed():
            for partial in remove_partials(folder):
                self._log.warning("partial_removed", path=str(partial))
        pending = self.ledger.pending()
        for row in pending:
            source = Path(row.path)
            if row.action == Action.DELETE:
                done = not os.path.lexists(source)
                landed = None
            elif row.destination is not None and row.destination != row.path:
                landed = resume_move(source, Path(row.destination), row.sha256)
                done = landed is not None
            else:
                done, landed = True, None
            if done:
                self.ledger.complete(row.id, landed)
            else:
                self.ledger.fail(row.id, "interrupted before the action; judged again")
            self._log.warning(
                "recovered",
                path=row.path,
                action=row.action,
                completed=done,
                destination=None if landed is None else str(landed),
            )
        return len(pending)

    def _report(self, outcome: Outcome) -> Outcome:
        fields: dict[str, Any] = {"path": str(outcome.path), "reason": outcome.reason}
        if outcome.status is Status.DECIDED:
            self._log.info(
                "decision",
                **fields,
                verdict=outcome.verdict,
                faces=[f.as_dict() for f in outcome.faces],
                action=outcome.action,
                destination=None if outcome.destination is None else str(outcome.destination),
                sha256=outcome.sha256,
                size=outcome.size,
                elapsed_ms=outcome.elapsed_ms,
                dry_run=self.dry_run,
                detector=self._models["detector"],
                gender_model=self._models["gender"],
            )
        elif outcome.status is Status.KNOWN:
            self._log.debug("known", **fields)
        elif outcome.status is Status.SKIPPED:
            self._log.info("skipped", **fields)
        else:
            self._log.warning("not_judged", **fields)
        return outcome


def _with(outcome: Outcome, **changes: Any) -> Outcome:
    return replace(outcome, **changes)


def iter_images(
    root: Path, extensions: Iterable[str], exclude: Iterable[Path] = ()
) -> Iterator[Path]:
    """Every file under `root` whose name ends in an image extension, in sorted order.

    Never follows a symlinked folder and never enters an excluded folder (where
    facesieve itself writes). Symlinks and other non-regular files named like images
    are yielded, so that the engine reports why it does not judge them.
    """
    wanted = tuple(e.lower() for e in extensions)
    excluded = {_absolute(p) for p in exclude}
    log = get_logger()
    stack = [_absolute(root)]
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
                if path not in excluded:
                    stack.append(path)
            elif entry.is_symlink() and entry.is_dir():
                log.info("skipped", path=str(path), reason="symlinked folder: never followed")
            elif entry.name.lower().endswith(wanted):
                files.append(path)
        yield from reversed(files)
