"""Which engine judges a `scan`, and what it is given: one process, a pool, or Ray.

- in-process (`--workers 1`, or a scan of fewer than 64 files): `local.Engine`;
- a pool of judging processes (`--workers N`, default the machine's cores):
  `pool.PoolEngine`, this process applying and recording;
- a Ray cluster (`--engine ray`): `ray.RayEngine`, acting by shard.

Every engine honours one contract (`base`): the same prefilter, the same applier
rules, the same retry of deferred files, and it yields the same `Outcome`s, which
`cli` prints and counts.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TextIO

from ..errors import ConfigError
from ..logs import get_logger

if TYPE_CHECKING:
    from collections import Counter

    from ..acting.apply import Outcome
    from ..config import Config, ResolvedFolders
    from ..intake.inbox import Inbox
    from .base import JudgingEngine

__all__ = ["ScanArguments", "candidates", "outcomes", "records_stream"]

# Below this many files, a scan judges in its own process unless --workers says
# otherwise: starting workers, each loading its own models, costs more than a
# second core saves on a few files.
POOL_MIN_FILES = 64


class ScanArguments(Protocol):
    """What a scan's command line chose (`facesieve scan`'s arguments, see `cli.scan`)."""

    engine: str  # local or ray
    workers: int | None
    rejudge: Literal["kept", "all"] | None
    dry_run: bool
    log_level: str | None
    from_list: Path | None
    address: str | None  # with --engine ray
    actors: int | None
    shards: int
    own_shards: frozenset[int] | None


def outcomes(
    args: ScanArguments,
    config: Config,
    folders: ResolvedFolders,
    paths: Iterator[Path],
    should_stop: Callable[[], bool],
) -> Generator[Outcome, None, None]:
    """The outcomes of a scan, from the engine the arguments choose.

    Models load (in whichever process judges) before anything is touched; closing
    the generator stops workers, actors and a Ray cluster it started, and closes
    the ledgers.
    """
    if args.engine == "ray":
        yield from _on_ray(args, config, folders, paths, should_stop)
        return
    from ..judging.analyzer import load_analyzer
    from ..ledger.store import Ledger
    from .base import applier_for, held_lstat, run
    from .local import Engine
    from .pool import PoolEngine, default_workers

    workers = args.workers if args.workers is not None else default_workers()
    head: list[Path] = []
    if args.rejudge is not None:
        # Which decisions are stale depends on the loaded models' description, and
        # --rejudge all brings files back into the folder before it is walked.
        if workers > 1:
            get_logger().info("rejudge_in_process", workers=workers)
        workers = 1
    elif args.workers is None:
        head = list(itertools.islice(paths, POOL_MIN_FILES))
        if len(head) < POOL_MIN_FILES:
            workers = 1
    everything = itertools.chain(head, paths)
    analyzer = load_analyzer(config) if workers == 1 else None  # before anything is touched
    # One writer per ledger: a second scan, or a scan beside watch, is refused.
    ledger = None if args.dry_run else Ledger(folders.ledger, exclusive=True)
    try:
        engine: JudgingEngine
        if analyzer is not None:
            rejudge = _rejudge(args, config, analyzer, folders)
            engine = Engine(
                config,
                analyzer,
                folders=folders,
                ledger=ledger,
                dry_run=args.dry_run,
                rejudge=rejudge,
            )
            applier = engine.applier
        else:
            applier = applier_for(config, folders, ledger, dry_run=args.dry_run)
            engine = PoolEngine(
                config, workers=workers, log_level=args.log_level or config.logging.level
            )
        try:
            # A crash left moves half-done: settle them before judging anything again.
            applier.recover()
            yield from run(
                engine,
                applier,
                everything,
                config.actions,
                lstat=held_lstat(applier),
                should_stop=should_stop,
            )
        finally:
            engine.close()
            applier.close()  # the local engine's own, closed twice: harmless
    finally:
        if ledger is not None:
            ledger.close()


def _rejudge(args: ScanArguments, config: Config, analyzer: Any, folders: ResolvedFolders) -> Any:
    """Say how many files were decided under another policy; with --rejudge, pick them."""
    from ..ledger.store import Ledger
    from ..people.rejudge import prepare_rejudge

    if not folders.ledger.is_file():
        return None
    with Ledger(folders.ledger) as ledger:
        stale, rejudge = prepare_rejudge(
            ledger, config, analyzer.describe(), folders.root, args.rejudge, dry_run=args.dry_run
        )
    if stale.count and args.rejudge is None:
        print(
            f"facesieve: warning: {stale.count} files were decided under another policy or "
            f"other models ({len(stale.kept)} kept, {len(stale.moved)} in review or "
            "quarantine) and are not judged again; --rejudge judges the kept ones again, "
            "--rejudge all every one",
            file=sys.stderr,
        )
    return rejudge


def _on_ray(
    args: ScanArguments,
    config: Config,
    folders: ResolvedFolders,
    paths: Iterator[Path],
    should_stop: Callable[[], bool],
) -> Generator[Outcome, None, None]:
    from .ray import RayOptions, scan_on_ray

    if args.rejudge is not None:
        raise ConfigError("--rejudge", "not with --engine ray: run it with the local engine")
    if args.own_shards is not None and max(args.own_shards) >= args.shards:
        raise ConfigError("--own-shards", f"there are only shards 0-{args.shards - 1}")
    options = RayOptions(
        address=args.address,
        actors=args.actors,
        shards=args.shards,
        own_shards=args.own_shards,
    )
    yield from scan_on_ray(
        config, folders, paths, options, dry_run=args.dry_run, should_stop=should_stop
    )


def candidates(
    args: ScanArguments,
    config: Config,
    folders: ResolvedFolders,
    should_stop: Callable[[], bool] = lambda: False,
    counts: Counter[str] | None = None,
) -> Iterator[Path]:
    """The files a scan judges: the folder walked, or the lines of `--from-list`.

    Files left out as in progress (an ignored name, not yet stale) are counted in
    `counts["ignored"]`.
    """
    from ..intake.inbox import Inbox

    inbox = Inbox.of(config, folders)
    found: Iterator[Path]
    if args.from_list is None:
        found = inbox.walk(counts=counts)
    else:
        found = _listed(args.from_list, inbox, counts)
    # A file is judged only once it has been quiet for settle_seconds: one being
    # written is not an upload yet.
    return inbox.settled(found, config.watch.settle_seconds, should_stop)


def _listed(manifest: Path, inbox: Inbox, counts: Counter[str] | None = None) -> Iterator[Path]:
    """Paths from a manifest, one a line; relative ones are below the folder scanned.

    Read as bytes, so a name that is not UTF-8 survives. A path outside the folder,
    in facesieve's own folders or with an ignored name is not judged, as a walk
    would not have found it.
    """
    log = get_logger()
    try:
        data = manifest.read_bytes()
    except OSError as error:
        raise ConfigError("--from-list", f"cannot read {manifest}: {error.strerror}") from error
    for line in data.split(b"\n"):
        line = line.rstrip(b"\r")
        if not line.strip():
            continue
        path = Path(os.path.abspath(os.path.join(inbox.root, os.fsdecode(line))))
        if inbox.accepts(path):
            yield path
        elif inbox.ignored(path.name):
            if counts is not None:
                counts["ignored"] += 1  # in progress: `accepts` logged it
        else:
            log.info("skipped", path=str(path), reason="listed, but not a candidate under DIR")


@contextlib.contextmanager
def records_stream(engine: str) -> Iterator[TextIO]:
    """Where a scan prints its results: stdout, kept clean of anything else.

    With Ray, libraries print to file descriptor 1 from C++ and from threads; so
    the results get a private copy of stdout and descriptor 1 points at stderr.
    """
    if engine != "ray":
        yield sys.stdout
        return
    sys.stdout.flush()
    saved = os.dup(1)
    records = os.fdopen(os.dup(saved), "w", encoding="utf-8", errors="surrogateescape")
    os.dup2(2, 1)
    try:
        yield records
    finally:
        records.flush()
        records.close()
        os.dup2(saved, 1)
        os.close(saved)
