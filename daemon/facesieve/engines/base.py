"""The one contract every engine honours, and the rules that live here once for all of them.

An engine only carries files to judges and judgements back (`JudgingEngine.judge`):
in this process (`local`), to a pool of processes (`pool`), or to Ray actors (`ray`).
Everything else a scan guarantees is decided here, the same way whichever engine
judges (as Celery's `concurrency/base.py` gives its pools one contract):

- before a file is sent anywhere, `prefilter` settles what needs no judge: a symlink,
  a file that is not regular, and a file the ledger decided and left in place whose
  `Identity` (inode, size, mtime and ctime) is the one recorded. Size and mtime alone
  are never enough: whoever can write the inbox can forge both, not the ctime;
- whatever goes out carries what the ledger saw (`Seen`), so that the judge can
  still call it known by its content;
- each judgement is applied by the files' owner (an `Applier`, or Ray's shard owners),
  in the order the judgements come;
- a deferred file (changed while judged, or unreadable while young) is looked at
  again once its `retry_in` has passed (`run`), and only its last outcome counts.
"""

from __future__ import annotations

import os
import stat
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..errors import LedgerError
from ..intake.safefs import Identity

if TYPE_CHECKING:
    # Imported where used: the pool's workers import this module, and must start
    # light (they load the models, and with them the judge, themselves).
    from ..acting.apply import Applier, Outcome
    from ..config import ActionsConfig, Config, ResolvedFolders
    from ..judging.judge import Judgement, NotJudged, Seen
    from ..ledger.store import Ledger, LedgerRow

__all__ = [
    "Dispatch",
    "JudgingEngine",
    "Owner",
    "applier_for",
    "held_lstat",
    "prefilter",
    "retrying",
    "run",
]

# (path, what the ledger saw of the file now at that path): what travels to a judge.
Dispatch = tuple[Path, "Seen | None"]


class JudgingEngine(ABC):
    """Carries files to judges and judgements back; never acts, never records.

    `judge` may be called more than once in a run (once per retry round); an engine
    starts what it needs (workers, a cluster) on the first call that has work, and
    stops it in `close`.
    """

    @abstractmethod
    def judge(
        self, items: Iterable[Dispatch], should_stop: Callable[[], bool]
    ) -> Iterator[Judgement | NotJudged]:
        """One result per item, in the items' order; nothing more once `should_stop`."""

    def close(self) -> None:  # noqa: B027 - an engine with nothing to stop needs no close
        """Stop whatever `judge` started."""

    def __enter__(self) -> JudgingEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Owner(Protocol):
    """Whoever owns the files and the ledger: says what was decided, and acts."""

    def seen(self, path: Path) -> Seen | None: ...

    def apply(self, result: Judgement | NotJudged, actions: ActionsConfig) -> Outcome: ...


def applier_for(
    config: Config,
    folders: ResolvedFolders | None,
    ledger: Ledger | None,
    *,
    dry_run: bool = False,
    rejudge: Callable[[LedgerRow], bool] | None = None,
) -> Applier:
    """The applier of judgements, whichever engine judges: one set of rules for all
    (`folders` None: judge and report only, as `check` does)."""
    from ..acting.apply import Applier

    return Applier(
        folders=folders,
        ledger=ledger,
        dry_run=dry_run,
        rejudge=rejudge,
        unreadable_grace=config.images.unreadable_grace_seconds,
        mode=config.actions.mode,
        layout=config.inbox.layout,
        images=config.images,
    )


def held_lstat(applier: Applier) -> Callable[[Path], os.stat_result | None]:
    """A file's own stat, reached from the applier's held root without following a
    symlink on the way (None: gone, outside, or behind a symlinked folder)."""
    if applier.places is None:
        return _lstat
    return applier.places.root.lstat


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def prefilter(
    path: Path,
    seen: Callable[[Path], Seen | None],
    lstat: Callable[[Path], os.stat_result | None],
) -> Dispatch | NotJudged:
    """The owner's look at a file before it is sent anywhere to be judged.

    Settled here, without a trip: a symlink, a file that is not regular, and a file
    the ledger decided and left in place whose identity is still the one recorded.
    Any other file goes out with what the ledger saw; a file that cannot be looked
    at goes out too, and its judge says why.
    """
    from ..judging.judge import NotJudged, Status

    absolute = Path(os.path.abspath(path))
    try:
        known = seen(absolute)
    except LedgerError:
        raise  # no ledger: nothing could be recorded; the run stops
    except Exception as error:  # noqa: BLE001 - one odd file must not end a scan
        return NotJudged(absolute, Status.ERROR, f"{type(error).__name__}: {error}")
    info = lstat(absolute)
    if info is None:
        return (absolute, known)
    if stat.S_ISLNK(info.st_mode):
        return NotJudged(absolute, Status.SKIPPED, "symlink: never followed")
    if not stat.S_ISREG(info.st_mode):
        return NotJudged(absolute, Status.SKIPPED, "not a regular file")
    if known is not None and known.same_stat(Identity.of(info)):
        return NotJudged(absolute, Status.KNOWN, f"already decided ({known.source})")
    return (absolute, known)


def run(
    engine: JudgingEngine,
    owner: Owner,
    paths: Iterable[Path],
    actions: ActionsConfig,
    *,
    lstat: Callable[[Path], os.stat_result | None],
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[Outcome]:
    """Every file of `paths` judged by `engine` and acted on by `owner`, deferred ones
    looked at again when their time comes. The one scan loop of every engine."""
    return retrying(
        lambda batch: _once(engine, owner, batch, actions, lstat, should_stop), paths, should_stop
    )


def _once(
    engine: JudgingEngine,
    owner: Owner,
    paths: Iterable[Path],
    actions: ActionsConfig,
    lstat: Callable[[Path], os.stat_result | None],
    should_stop: Callable[[], bool],
) -> Iterator[Outcome]:
    remaining = iter(paths)
    # Files the prefilter settles need no judge: a rescan of a folder already decided
    # starts no worker and no cluster.
    first = yield from _settle_until_judged(owner, remaining, actions, lstat, should_stop)
    if first is None:
        return
    settled: deque[NotJudged] = deque()
    to_judge = _to_judge(first, remaining, owner, lstat, settled)
    for result in engine.judge(to_judge, should_stop):
        while settled:
            yield owner.apply(settled.popleft(), actions)
        if should_stop():
            return
        yield owner.apply(result, actions)
    while settled and not should_stop():
        yield owner.apply(settled.popleft(), actions)


def _settle_until_judged(
    owner: Owner,
    remaining: Iterator[Path],
    actions: ActionsConfig,
    lstat: Callable[[Path], os.stat_result | None],
    should_stop: Callable[[], bool],
) -> Generator[Outcome, None, Dispatch | None]:
    """Act on the files the prefilter settles, up to the first one to judge, which it
    returns; None once `remaining` is done or `should_stop` says yes."""
    for path in remaining:
        item = prefilter(path, owner.seen, lstat)
        if isinstance(item, tuple):
            return item
        yield owner.apply(item, actions)
        if should_stop():
            return None
    return None


def _to_judge(
    first: Dispatch,
    remaining: Iterator[Path],
    owner: Owner,
    lstat: Callable[[Path], os.stat_result | None],
    settled: deque[NotJudged],
) -> Iterator[Dispatch]:
    """`first`, then every file of `remaining` to judge; the ones the prefilter settles
    go to `settled` instead, for the caller to act on between results."""
    yield first
    for path in remaining:
        item = prefilter(path, owner.seen, lstat)
        if isinstance(item, tuple):
            yield item
        else:
            settled.append(item)


# A file deferred this many times in one scan (still changing, or unreadable while
# young) is left for the next scan, and counted "deferred".
_ROUNDS = 10
_WAIT_LIMIT = 30.0  # seconds, at most, between two looks


def retrying(
    once: Callable[[Iterable[Path]], Iterator[Outcome]],
    paths: Iterable[Path],
    should_stop: Callable[[], bool],
) -> Iterator[Outcome]:
    """`once(paths)`, then `once` again on the files it deferred, once their time has come.

    A deferred file was not acted on: it changed while judged, or it is unreadable
    but changed moments ago (maybe an upload written in pieces). Only its last
    outcome is handed out.
    """
    from ..judging.judge import Status

    for round_ in range(_ROUNDS):
        deferred: dict[Path, float] = {}
        for outcome in once(paths):
            if outcome.status is Status.DEFERRED and round_ + 1 < _ROUNDS:
                deferred[outcome.path] = outcome.retry_in or 0.5
                continue
            yield outcome
        if not deferred:
            return
        deadline = time.monotonic() + min(max(deferred.values()), _WAIT_LIMIT)
        while time.monotonic() < deadline and not should_stop():
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        if should_stop():
            return
        paths = list(deferred)
