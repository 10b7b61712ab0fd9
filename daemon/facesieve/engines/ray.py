"""`facesieve scan DIR --engine ray`: judging on a Ray cluster, acting by shard.

The driver (this process) lists the files, settles those the ledger already
decided (the same identity: `base.prefilter`) without starting anything, and sends the rest
as paths, never bytes, to a Ray Data pipeline whose only stage is an actor pool of
judges. Each actor loads the configured models once and reads with facesieve's own
reader (no symlink followed, size capped); an actor only judges, so Ray's retries
after an actor dies cannot act twice. Results come back to the driver, which hands
each to the owner of the file's shard (`shards.py`): that owner holds the shard's
lock, ran crash recovery on the shard's ledger before anything else, and is the one
that moves, deletes and records.

Paths travel as `os.fsencode` bytes, so names that are not UTF-8 survive. Results
travel pickled, so a `Judgement`, a `NotJudged` or an error arrives intact; a model
that cannot load in an actor does not kill the actor (Ray would restart it forever)
but answers every batch with the load error, which the driver raises: exit 4.

Ray needs `pip install 'facesieve[ray]'`. Without `--address` the driver starts a
local cluster and stops it when done; a reaper process (`reaper.py`) stops its
processes even if the driver is killed outright.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..acting.apply import Applier, Outcome
from ..config import ActionsConfig, Config, ResolvedFolders
from ..errors import ConfigError, LedgerError, WorkerError
from ..judging.judge import Judgement, NotJudged, Seen, Status
from ..ledger.shards import ShardLock, id_base, shard_of, shard_path
from ..ledger.store import Ledger, writer_lock
from ..logs import configure_logging, get_logger
from .base import Dispatch, JudgingEngine, applier_for, held_lstat, run
from .pool import default_workers, load_judge, not_judged, portable_error
from .reaper import stop_stale

__all__ = ["RayOptions", "scan_on_ray"]

_BATCH = 8  # files per actor call
_BLOCK = 32  # files per Ray task: what an actor that dies takes down with it
_MAX_RESTARTS = 3  # an actor killed more often than this ends the run


@dataclass(frozen=True, slots=True)
class RayOptions:
    address: str | None = None  # None: start a local cluster for this run
    actors: int | None = None  # None: one per CPU of the cluster
    shards: int = 8
    own_shards: frozenset[int] | None = None  # None: every shard whose lock is free


@dataclass(frozen=True, slots=True)
class _LoadFailed:
    """An actor's answer when its models did not load: the error, for the driver."""

    error: BaseException


class RayJudge:
    """A Ray Data actor: loads the models once, then judges batches of paths.

    Never raises: a load failure is kept and returned for every batch (the driver
    stops the run on the first), and a judge failure is a `NotJudged` per file.
    """

    def __init__(self, config: Config) -> None:
        os.dup2(2, 1)  # whatever a library prints is a log line, not a result
        configure_logging(level="warning", format="json", stream=sys.stderr)
        # Ray Data calls an actor from threads of its own; the models must stay on
        # the one thread that loaded them, so every model call goes through this one.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facesieve-judge")
        self._error: BaseException | None = None
        self._judge: Callable[[Sequence[tuple[Path, Seen | None]]], list[Any]] | None = None
        try:
            self._judge = self._thread.submit(load_judge, config).result()
        except BaseException as error:  # noqa: BLE001 - sent to the driver, which stops
            self._error = portable_error(error)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[bytes]]:
        raw_paths = [bytes(p) for p in batch["path"]]
        judge = self._judge
        if self._error is not None or judge is None:
            failed = pickle.dumps(_LoadFailed(self._error or WorkerError("models not loaded")))
            return {"path": raw_paths, "result": [failed] * len(raw_paths)}
        items = [
            (Path(os.fsdecode(raw)), pickle.loads(bytes(seen)) if len(seen) else None)  # noqa: S301
            for raw, seen in zip(raw_paths, batch["seen"], strict=True)
        ]
        try:
            results: list[Any] = self._thread.submit(judge, items).result()
        except Exception as error:  # noqa: BLE001 - never a verdict; the files stay put
            reason = f"judge failed: {type(error).__name__}: {error}"
            results = [not_judged(path, reason) for path, _ in items]
        return {"path": raw_paths, "result": [pickle.dumps(r) for r in results]}


@dataclass
class _Owner:
    """The owner of one shard in this run: its lock, its ledger, its applier."""

    index: int
    applier: Applier
    ledger: Ledger | None
    lock: ShardLock | None

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
        if self.lock is not None:
            self.lock.release()


def _take_shards(
    config: Config, folders: ResolvedFolders, options: RayOptions, *, dry_run: bool
) -> dict[int, _Owner]:
    """Lock, open and recover every shard this run may own; others are left alone."""
    log = get_logger()
    owners: dict[int, _Owner] = {}
    wanted = range(options.shards)
    try:
        for index in wanted:
            if options.own_shards is not None and index not in options.own_shards:
                continue
            if dry_run:
                applier = applier_for(config, folders, None, dry_run=True)
                owners[index] = _Owner(index, applier, None, None)
                continue
            file = shard_path(folders.ledger, index)
            lock = ShardLock(file)
            if not lock.acquire():
                log.warning("shard_busy", shard=index, holder=lock.holder())
                continue
            try:
                ledger = Ledger(file, id_base=id_base(folders.ledger, file))
            except LedgerError:
                lock.release()
                raise
            owner = _Owner(index, applier_for(config, folders, ledger), ledger, lock)
            owners[index] = owner
            recovered = owner.applier.recover()
            if recovered:
                log.warning("shard_recovered", shard=index, pending=recovered)
    except BaseException:
        for owner in owners.values():
            owner.close()
        raise
    return owners


class _Cluster:
    """Ray, connected (to `address`) or started (locally) for one run, and stopped after."""

    def __init__(self, address: str | None, state: Path) -> None:
        self.address = address
        self.state = state
        self.cpus = 0.0
        self.started_seconds = 0.0
        self._reaper: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _Cluster:
        try:
            import ray
            import ray.data
        except ImportError as error:
            raise ConfigError(
                "--engine", "ray is not installed: pip install 'facesieve[ray]'"
            ) from error
        started = time.perf_counter()
        log = get_logger()
        common: dict[str, Any] = {
            "log_to_driver": False,  # actors' output stays in Ray's log files
            "logging_level": logging.WARNING,
            "include_dashboard": False,
        }
        if self.address is None:
            self.state.mkdir(parents=True, exist_ok=True)
            for stale in sorted(self.state.glob("ray-cluster-*.json")):
                stopped = stop_stale(stale)
                if stopped:
                    log.warning("stale_ray_stopped", state=str(stale), pids=stopped)
            self._reaper = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "facesieve.engines.reaper",
                    str(os.getpid()),
                    str(self.state / f"ray-cluster-{os.getpid()}.json"),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a signal to our process group must not stop it
            )
            # address="local": a cluster of our own even if RAY_ADDRESS names another.
            ray.init(address="local", num_cpus=default_workers(), **common)
        else:
            common.pop("include_dashboard")
            ray.init(address=self.address, **common)
        try:
            self.cpus = float(ray.cluster_resources().get("CPU", 1.0))  # type: ignore[no-untyped-call]
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False
            context.max_consecutive_actor_init_deaths = 2
        except BaseException:
            self.__exit__()
            raise
        self.started_seconds = round(time.perf_counter() - started, 2)
        log.info("ray_started", address=self.address, cpus=self.cpus, seconds=self.started_seconds)
        return self

    def __exit__(self, *exc: object) -> None:
        import ray

        try:
            ray.shutdown()
        finally:
            if self._reaper is not None:
                assert self._reaper.stdin is not None
                self._reaper.stdin.close()  # the reaper stops whatever shutdown left
                try:
                    self._reaper.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self._reaper.kill()
                    self._reaper.wait()
                self._reaper = None


class _ShardOwners:
    """The owners of this run's shards, as one `base.Owner`: each file's decisions are
    looked up, and its judgement applied, in the shard that owns it."""

    def __init__(self, owners: dict[int, _Owner], plain: Ledger | None, shards: int) -> None:
        self._owners = owners
        self._plain = plain
        self._shards = shards

    def owned(self, paths: Iterable[Path]) -> Iterator[Path]:
        """The files of this run's shards; another owner's are its business."""
        others = 0
        for path in paths:
            absolute = Path(os.path.abspath(path))
            if shard_of(absolute, self._shards) in self._owners:
                yield absolute
            else:
                others += 1
        if others:
            get_logger().warning("files_of_other_owners", files=others)

    def lstat(self) -> Callable[[Path], os.stat_result | None]:
        first = next(iter(self._owners.values()), None)
        return held_lstat(first.applier) if first is not None else lambda _: None

    def seen(self, path: Path) -> Seen | None:
        """The latest decision that left the file in place, in its shard or in the plain
        ledger of earlier local scans of the tree."""
        owner = self._owners[shard_of(path, self._shards)]
        rows = [
            row
            for ledger in (owner.ledger, self._plain)
            if ledger is not None and (row := ledger.last_done(path)) is not None
        ]
        if not rows:
            return None
        row = max(rows, key=lambda r: (r.decided_at, r.id))
        return Seen.of_row(row) if row.left_in_place else None

    def apply(self, result: Judgement | NotJudged, actions: ActionsConfig) -> Outcome:
        return self._owners[shard_of(result.path, self._shards)].applier.apply(result, actions)


class RayEngine(JudgingEngine):
    """The engine contract on a Ray cluster: paths out to an actor pool, judgements back.

    The cluster is started (or joined) on the first round that has work, and serves
    every retry round of the run; `close` stops a cluster it started.
    """

    def __init__(self, config: Config, options: RayOptions, state: Path) -> None:
        self._config = config
        self._options = options
        self._state = state
        self._cluster: _Cluster | None = None

    def judge(
        self, items: Iterable[Dispatch], should_stop: Callable[[], bool]
    ) -> Iterator[Judgement | NotJudged]:
        pending = [
            {"path": os.fsencode(path), "seen": b"" if seen is None else pickle.dumps(seen)}
            for path, seen in items
        ]
        if not pending or should_stop():
            return
        if self._cluster is None:
            self._cluster = _Cluster(self._options.address, self._state).__enter__()
        returned: set[bytes] = set()
        for result in _judged(self._config, pending, self._cluster, self._options):
            key = os.fsencode(result.path)
            if key in returned:
                # Ray re-ran a batch whose first results had already arrived: judged
                # twice, acted on once.
                get_logger().warning("duplicate_result", path=str(result.path))
                yield NotJudged(result.path, Status.KNOWN, "judged twice; acted on once")
                continue
            returned.add(key)
            yield result

    def close(self) -> None:
        if self._cluster is not None:
            cluster, self._cluster = self._cluster, None
            cluster.__exit__()


def scan_on_ray(
    config: Config,
    folders: ResolvedFolders,
    paths: Iterable[Path],
    options: RayOptions,
    *,
    dry_run: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
) -> Generator[Outcome, None, None]:
    """Judge `paths` on Ray and act on each in the shard that owns it; yields outcomes.

    Raises `ModelLoadError` (exit 4) when an actor cannot load its models, before
    acting on anything, if no actor could.
    """
    # Every writer takes the plain ledger's lock: shared here, so that shard owners
    # share a tree, while a `watch` or a local `scan` (exclusive) is refused beside
    # this run, and this run beside them (LedgerBusyError: exit 5).
    plain_lock = None if dry_run else writer_lock(folders.ledger, shared=True)
    try:
        owners = _take_shards(config, folders, options, dry_run=dry_run)
    except BaseException:
        if plain_lock is not None:
            os.close(plain_lock)
        raise
    # Files a local scan of this tree decided are known to a Ray scan too.
    plain = None if dry_run or not folders.ledger.is_file() else Ledger(folders.ledger)
    shards = _ShardOwners(owners, plain, options.shards)
    engine = RayEngine(config, options, folders.state)
    try:
        yield from run(
            engine,
            shards,
            shards.owned(paths),
            config.actions,
            lstat=shards.lstat(),
            should_stop=should_stop,
        )
    finally:
        engine.close()
        for owner in owners.values():
            owner.close()
        if plain is not None:
            plain.close()
        if plain_lock is not None:
            os.close(plain_lock)


def _judged(
    config: Config, pending: list[dict[str, bytes]], cluster: _Cluster, options: RayOptions
) -> Generator[Judgement | NotJudged, None, None]:
    import ray
    import ray.data

    actors = options.actors or max(1, int(cluster.cpus))
    # Fractional CPUs: on 2 CPUs, two 1-CPU actors plus Ray Data's own tasks deadlock.
    per_actor = max(0.1, min(1.0, (cluster.cpus - 0.5) / actors))
    blocks = max(1, math.ceil(len(pending) / _BLOCK))
    with warnings.catch_warnings():
        # Retries of actor tasks have no named parameter yet; the generic ones warn.
        warnings.simplefilter("ignore", DeprecationWarning)
        dataset = ray.data.from_items(pending, override_num_blocks=blocks).map_batches(
            RayJudge,
            fn_constructor_args=(config,),
            batch_size=_BATCH,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=per_actor,
            max_restarts=_MAX_RESTARTS,
            max_task_retries=_MAX_RESTARTS,
        )
    get_logger().info("ray_judging", files=len(pending), actors=actors, cpus_per_actor=per_actor)
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for raw in batch["result"]:
            result = pickle.loads(bytes(raw))  # noqa: S301 - our actors' own output
            if isinstance(result, _LoadFailed):
                raise result.error
            yield result
