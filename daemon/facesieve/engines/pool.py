"""Judging on every core: a pool of worker processes that only judge.

Each worker is a fresh interpreter (the spawn start method: TensorFlow, onnxruntime
and their threads do not survive a fork) that loads its own models once and then
judges batches of paths it is sent. Workers have no side effects: they read, decode
and run the models, never move, delete or record. The parent, the one owner of the
files and the ledger, applies each judgement as it comes back, in input order.

Why each part is the way it is:
- One pipe per worker, not a shared queue: a worker killed while holding a shared
  queue's lock would wedge every other worker; with its own pipe, its death is a
  closed pipe and a fired sentinel, and the parent knows exactly which batches it held.
- Bounded work in flight (`workers * depth` batches of `batch` paths): only paths
  travel, never decoded images, and no more than that are read ahead.
- A worker that dies is replaced and its batches re-sent, split into single files;
  a file that kills a worker twice is reported through `on_crash` (not judged, so
  it stays where it is). Judging has no side effects, so a retry is harmless.
- Every worker must report its models loaded before the first result is yielded: a
  model that cannot load anywhere stops the run before anything is touched.
- Workers ignore SIGINT (the parent decides when to stop, on its own signal flag)
  and exit when the parent's end of their pipe closes, so a parent killed outright
  leaves no worker behind.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..errors import WorkerError
from ..logs import configure_logging, get_logger
from .base import Dispatch, JudgingEngine

__all__ = ["JudgeFactory", "JudgePool", "PoolEngine", "default_workers", "portable_error"]

R = TypeVar("R")

# Loads the models in a worker, once, and returns the function that judges a batch of
# (path, hint) pairs (the hint: what the parent knows of the file, e.g. its ledger
# entry). Must be picklable by reference (a module-level function), as spawn requires.
JudgeFactory = Callable[[Any], Callable[[Sequence[tuple[Path, Any]]], Sequence[Any]]]

_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)
_LOAD_TIMEOUT = 600.0  # seconds a worker may take to load its models
_STOP_GRACE = 5.0  # seconds workers get to exit after SIGTERM before SIGKILL


def default_workers() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def portable_error(error: BaseException) -> BaseException:
    """`error` itself if it survives pickling, else a `WorkerError` that says what it was.

    An exception whose `__init__` takes other arguments than its message does not
    survive the trip between processes; the driver must still see what went wrong.
    """
    try:
        pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes, just made
        return error
    except Exception:  # noqa: BLE001 - any pickling failure means: send a description
        return WorkerError(f"{type(error).__name__}: {error}")


# -- the worker process ------------------------------------------------------------------


def _worker_main(
    conn: Connection, factory: JudgeFactory, config: Any, log_level: str, threads: int
) -> None:  # pragma: no cover - runs in the child; covered by the pool's tests
    # Each worker's share of the cores: N workers whose libraries each start a thread
    # per core would fight over them. Set before any of those libraries is imported.
    for name in _THREAD_VARIABLES:
        os.environ.setdefault(name, str(threads))
    # The parent owns SIGINT (a terminal sends it to the whole process group).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # stdout is the parent's --json stream: nothing a library prints may land there.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    configure_logging(level=log_level, format="json", stream=sys.stderr)
    try:
        judge = factory(config)
    except BaseException as error:  # noqa: BLE001 - reported, then this worker ends
        _send(conn, ("load_failed", portable_error(error)))
        return
    if not _send(conn, ("ready", os.getpid())):
        return
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if message is None:
            return
        batch_id, items = message
        # Paths travel as bytes: a name that is not UTF-8 must arrive as it was.
        batch = [(Path(os.fsdecode(raw)), hint) for raw, hint in items]
        try:
            reply: tuple[Any, ...] = ("done", batch_id, list(judge(batch)))
        except Exception as error:  # noqa: BLE001 - a judge bug is reported, not fatal here
            reply = ("crashed", batch_id, f"{type(error).__name__}: {error}")
        if not _send(conn, reply):
            return


def _send(conn: Connection, message: tuple[Any, ...]) -> bool:
    try:
        conn.send(message)
        return True
    except (BrokenPipeError, EOFError, OSError):
        return False


# -- the parent's side -------------------------------------------------------------------


@dataclass
class _Batch:
    id: int
    items: list[tuple[Path, Any]]
    attempts: int = 0
    results: Sequence[Any] | None = None


class _Feed:
    """The (path, hint) input cut into numbered batches, read only as far as asked."""

    def __init__(self, items: Iterable[tuple[Path, Any]], size: int) -> None:
        self._source = iter(items)
        self._size = size
        self._next_id = 0
        self.exhausted = False

    def next_batch(self) -> _Batch | None:
        """The next batch, or None once the input is done (`exhausted` from then on)."""
        if self.exhausted:
            return None
        chunk = [p for _, p in zip(range(self._size), self._source, strict=False)]
        if not chunk:
            self.exhausted = True
            return None
        batch = _Batch(self._next_id, chunk)
        self._next_id += 1
        return batch


def _finished_at_head(order: deque[_Batch]) -> Iterator[tuple[Path, Any]]:
    """The results of the finished batches at the head of `order`, each batch taken off
    as it is reached, in input order."""
    while order and order[0].results is not None:
        done = order.popleft()
        assert done.results is not None
        for (path, _), result in zip(done.items, done.results, strict=True):
            yield path, result


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    ready: bool = False
    held: dict[int, _Batch] = field(default_factory=dict)


class JudgePool(Generic[R]):
    """N worker processes that judge; results come back to the parent in input order.

    Use as a context manager: entering starts the workers and waits until every
    one has loaded its models (raising what a failed load raised); leaving stops
    them (SIGTERM, then SIGKILL after a grace period) and reaps them.
    """

    def __init__(
        self,
        factory: JudgeFactory,
        config: Any,
        *,
        workers: int,
        on_crash: Callable[[Path, str], R],
        batch: int = 4,
        depth: int = 2,
        log_level: str = "warning",
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._factory = factory
        self._config = config
        self._count = workers
        self._on_crash = on_crash
        self._batch = max(1, batch)
        self._depth = max(1, depth)
        self._log_level = log_level
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._log = get_logger()
        self.load_seconds = 0.0
        self._split_ids = 0  # negative ids for batches split after a worker died

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def __enter__(self) -> JudgePool[R]:
        started = time.perf_counter()
        try:
            for _ in range(self._count):
                self._workers.append(self._start_worker())
            self._await_ready()
        except BaseException:
            self.close()
            raise
        self.load_seconds = round(time.perf_counter() - started, 2)
        self._log.info("workers_ready", workers=self._count, seconds=self.load_seconds)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start_worker(self) -> _Worker:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_worker_main,
            args=(
                child_end,
                self._factory,
                self._config,
                self._log_level,
                max(1, default_workers() // self._count),
            ),
            name="facesieve-judge",
            daemon=True,
        )
        process.start()
        child_end.close()  # the child's end lives only in the child: its death closes the pipe
        return _Worker(process=process, conn=parent_end)

    def _await_ready(self, workers: Sequence[_Worker] | None = None) -> None:
        waiting = list(workers if workers is not None else self._workers)
        deadline = time.monotonic() + _LOAD_TIMEOUT
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerError(f"a worker did not load its models in {_LOAD_TIMEOUT:.0f} s")
            handles: list[Any] = [w.conn for w in waiting] + [w.process.sentinel for w in waiting]
            for handle in wait(handles, timeout=left):
                worker = next(w for w in waiting if handle in (w.conn, w.process.sentinel))
                message = self._receive(worker)
                if message is None:
                    code = worker.process.exitcode
                    raise WorkerError(f"a worker exited while loading its models (exit {code})")
                if message[0] == "load_failed":
                    error = message[1]
                    raise error if isinstance(error, BaseException) else WorkerError(str(error))
                if message[0] == "ready":
                    worker.ready = True
                    if worker in waiting:
                        waiting.remove(worker)

    @staticmethod
    def _receive(worker: _Worker) -> tuple[Any, ...] | None:
        try:
            if worker.conn.poll():
                message: tuple[Any, ...] = worker.conn.recv()
                return message
        except (EOFError, OSError):
            return None
        worker.process.join(timeout=5)
        return None if not worker.process.is_alive() else ("idle",)

    def judge(
        self, paths: Iterable[Path], *, should_stop: Callable[[], bool] = lambda: False
    ) -> Iterator[tuple[Path, R]]:
        """`judge_with` for paths alone (no hint)."""
        return self.judge_with(((p, None) for p in paths), should_stop=should_stop)

    def judge_with(
        self,
        items: Iterable[tuple[Path, Any]],
        *,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[tuple[Path, R]]:
        """Judge every (path, hint); yields `(path, result)` in the order the paths came.

        `should_stop` is asked between results: once it says yes, nothing more is
        sent and the iteration ends (results still in flight are dropped, their
        files untouched).
        """
        if not self._workers:
            raise RuntimeError("JudgePool.judge() outside its `with` block")
        feed = _Feed(items, self._batch)
        order: deque[_Batch] = deque()  # every batch not yet yielded, in input order
        retry: deque[_Batch] = deque()  # batches of a dead worker, to send again
        limit = self._count * self._depth

        while True:
            if should_stop():
                return
            self._send(feed, order, retry, limit)
            # Yield whatever is finished at the head, in order.
            for path, result in _finished_at_head(order):
                yield path, result
                if should_stop():
                    return
            if not order:
                if feed.exhausted:
                    return
                continue
            self._collect(retry, order)

    def _send(self, feed: _Feed, order: deque[_Batch], retry: deque[_Batch], limit: int) -> None:
        """Send work while fewer than `limit` batches are unfinished or unyielded; a dead
        worker's batches first."""
        while len(order) < limit or retry:
            worker = self._least_busy()
            if worker is None:
                break
            if retry:
                batch = retry.popleft()
            else:
                fresh = feed.next_batch()
                if fresh is None:
                    break
                batch = fresh
                order.append(batch)
            if not self._dispatch(worker, batch):
                retry.appendleft(batch)  # that worker is dead; _collect replaces it

    def _least_busy(self) -> _Worker | None:
        ready = [w for w in self._workers if w.ready and len(w.held) < self._depth]
        return min(ready, key=lambda w: len(w.held)) if ready else None

    def _dispatch(self, worker: _Worker, batch: _Batch) -> bool:
        try:
            worker.conn.send((batch.id, [(os.fsencode(p), hint) for p, hint in batch.items]))
        except (BrokenPipeError, EOFError, OSError):
            worker.ready = False  # never chosen again; its sentinel has fired or will
            return False
        batch.attempts += 1
        worker.held[batch.id] = batch
        return True

    def _collect(self, retry: deque[_Batch], order: deque[_Batch]) -> None:
        """Wait for a result or a worker's death, and account for it."""
        workers = list(self._workers)
        # Every worker's sentinel, busy or not: an idle worker that died must be replaced too.
        handles: list[Any] = [w.conn for w in workers if w.held] + [
            w.process.sentinel for w in workers
        ]
        for handle in wait(handles, timeout=1.0):
            worker = next((w for w in workers if handle in (w.conn, w.process.sentinel)), None)
            if worker is None or worker not in self._workers:
                continue
            try:
                message: tuple[Any, ...] | None = worker.conn.recv()
            except (EOFError, OSError):
                message = None
            if message is None:
                self._replace(worker, retry, order)
                continue
            kind, batch_id, payload = message
            batch = worker.held.pop(batch_id)
            if kind == "done":
                batch.results = payload
            else:
                self._log.warning("batch_crashed", files=len(batch.items), error=payload)
                batch.results = [
                    self._on_crash(p, f"judge failed: {payload}") for p, _ in batch.items
                ]

    def _replace(self, dead: _Worker, retry: deque[_Batch], order: deque[_Batch]) -> None:
        """A worker died: start another, and send its batches again, one file at a time."""
        dead.process.join(timeout=5)
        code = dead.process.exitcode
        self._log.warning("worker_died", pid=dead.process.pid, exitcode=code, held=len(dead.held))
        dead.conn.close()
        self._workers.remove(dead)
        for position, batch in enumerate(dead.held.values()):
            if position > 0:
                # A worker judges its batches in the order sent: only the first one was
                # being judged when it died; the others never started and are not to blame.
                batch.attempts -= 1
                retry.append(batch)
            elif len(batch.items) == 1 and batch.attempts >= 2:
                reason = f"the judging process died twice on it (exit {code})"
                batch.results = [self._on_crash(p, reason) for p, _ in batch.items]
            elif len(batch.items) == 1:
                retry.append(batch)
            else:
                # Split, so that one poisonous file does not take its neighbours down.
                index = order.index(batch)
                del order[index]
                for offset, item in enumerate(batch.items):
                    self._split_ids -= 1
                    single = _Batch(id=self._split_ids, items=[item], attempts=1)
                    order.insert(index + offset, single)
                    retry.append(single)
        replacement = self._start_worker()
        self._workers.append(replacement)
        self._await_ready([replacement])

    def close(self) -> None:
        """Stop every worker and reap it; idempotent."""
        for worker in self._workers:
            with contextlib.suppress(BrokenPipeError, EOFError, OSError):
                worker.conn.send(None)
        deadline = time.monotonic() + _STOP_GRACE
        for worker in self._workers:
            worker.process.join(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
            if worker.process.is_alive():
                worker.process.terminate()
        for worker in self._workers:
            worker.process.join(timeout=max(0.1, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
            worker.conn.close()
        self._workers.clear()


# -- facesieve's own judge, for the pool and for Ray actors -------------------------------

if TYPE_CHECKING:
    from ..config import Config
    from ..judging.judge import Judgement, NotJudged, Seen


def load_judge(
    config: Config,
) -> Callable[[Sequence[tuple[Path, Seen | None]]], list[Judgement | NotJudged]]:
    """Load the configured models (raising `ModelLoadError` if they cannot load) and
    return the function that judges a batch of (path, what the ledger saw) pairs."""
    from ..judging.analyzer import load_analyzer
    from ..judging.judge import judge_many

    analyzer = load_analyzer(config)

    def judge_batch(items: Sequence[tuple[Path, Seen | None]]) -> list[Judgement | NotJudged]:
        seen = dict(items)
        return list(
            judge_many(
                [path for path, _ in items],
                analyzer,
                config.policy,
                config.images,
                batch=len(items),
                seen=seen.get,
            )
        )

    return judge_batch


def not_judged(path: Path, reason: str) -> NotJudged:
    """What a file is when its judge crashed: an error, never a verdict; it stays put."""
    from ..judging.judge import NotJudged, Status

    return NotJudged(path, Status.ERROR, reason)


class PoolEngine(JudgingEngine):
    """The engine contract on `workers` processes: paths out, judgements back, in order.

    The pool starts on the first batch that has work (a rescan of a folder already
    decided starts none) and serves every retry round of the run; `close` stops it.
    Raises what a worker's model load raised (`ModelLoadError`) before any result.
    """

    def __init__(self, config: Config, *, workers: int, log_level: str = "warning") -> None:
        self._config = config
        self._workers = workers
        self._log_level = log_level
        self._pool: JudgePool[Judgement | NotJudged] | None = None

    def judge(
        self, items: Iterable[Dispatch], should_stop: Callable[[], bool]
    ) -> Iterator[Judgement | NotJudged]:
        for _, result in self._started().judge_with(items, should_stop=should_stop):
            yield result

    def _started(self) -> JudgePool[Judgement | NotJudged]:
        if self._pool is None:
            from ..judging.analyzer import MAX_BATCH

            pool: JudgePool[Judgement | NotJudged] = JudgePool(
                load_judge,
                self._config,
                workers=self._workers,
                on_crash=not_judged,
                batch=MAX_BATCH,
                log_level=self._log_level,
            )
            self._pool = pool.__enter__()
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
