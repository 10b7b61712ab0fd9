"""The in-process engine, and the one-shot composition of judge and apply.

`scan --workers 1` judges through it (`judge`, the engine contract of `base`);
`check` and `eval` use `process` and `process_many`: one file in, one recorded
decision out. The daemon's worker composes the same two steps itself
(`worker.py`), so that it can swap the policy between batches.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..acting.apply import Outcome
from ..config import Config, ResolvedFolders
from ..judging.analyzer import MAX_BATCH, FaceModel
from ..judging.judge import Judgement, NotJudged, Seen, judge, judge_many
from ..ledger.store import Ledger, LedgerRow
from .base import Dispatch, JudgingEngine, applier_for

__all__ = ["Engine"]


class Engine(JudgingEngine):
    """Judges files with one analyzer and, unless `folders` is None, acts on them.

    Like the analyzer and the ledger it holds, an engine belongs to one thread.
    """

    def __init__(
        self,
        config: Config,
        analyzer: FaceModel,
        *,
        folders: ResolvedFolders | None = None,
        ledger: Ledger | None = None,
        dry_run: bool = False,
        rejudge: Callable[[LedgerRow], bool] | None = None,
    ) -> None:
        self.config = config
        self.analyzer = analyzer
        self.applier = applier_for(config, folders, ledger, dry_run=dry_run, rejudge=rejudge)

    def close(self) -> None:
        self.applier.close()

    def judge(
        self, items: Iterable[Dispatch], should_stop: Callable[[], bool]
    ) -> Iterator[Judgement | NotJudged]:
        """The engine contract: judged here, read ahead and batched, on this thread."""
        # What the ledger saw, as the items say, until judge_many asks (once a file,
        # as it reads ahead): nothing stays behind per file, however many there are.
        seen: dict[Path, Seen | None] = {}

        def paths() -> Iterator[Path]:
            for path, known in items:
                seen[path] = known
                yield path

        def told(path: Path) -> Seen | None:
            return seen.pop(path, None)

        config = self.config
        return judge_many(
            paths(),
            self.analyzer,
            config.policy,
            config.images,
            should_stop=should_stop,
            seen=told,
        )

    def process(self, path: Path) -> Outcome:
        """Judge one file and, with folders set, act on it and record the decision."""
        seen = self.applier.seen(Path(os.path.abspath(path)))
        result = judge(path, self.analyzer, self.config.policy, self.config.images, seen=seen)
        return self.applier.apply(result, self.config.actions)

    def process_many(
        self,
        paths: Iterable[Path],
        *,
        batch: int = MAX_BATCH,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[Outcome]:
        """`process` over many files, read ahead and batched (see `judge.judge_many`).

        `should_stop` is asked before each file is acted on; files read ahead but
        not yet acted on when it says yes are left untouched.
        """
        config = self.config
        for result in judge_many(
            paths,
            self.analyzer,
            config.policy,
            config.images,
            batch=batch,
            should_stop=should_stop,
            seen=self.applier.seen,
        ):
            yield self.applier.apply(result, config.actions)

    def recover(self) -> int:
        """Settle what a crash left half-done (`Applier.recover`)."""
        return self.applier.recover()
