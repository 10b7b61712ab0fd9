"""A scan keeps no state per file (issue 18): the in-process engine handed each file's
`Seen` to the judge through a dict that kept every path of the scan."""

from __future__ import annotations

import itertools
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

from facesieve.config import Config
from facesieve.engines.base import Dispatch
from facesieve.engines.local import Engine
from facesieve.judging.judge import Status
from facesieve.testing import NoFaces


def test_the_local_engine_keeps_nothing_of_the_files_it_has_judged(tmp_path: Path) -> None:
    engine = Engine(Config(), NoFaces())

    def items(count: int, round_: int) -> Iterator[Dispatch]:
        for index in range(count):
            # Gone: nothing to read, judged without a decoder.
            yield (tmp_path / f"gone-{round_}-{index:06d}-{'x' * 40}.jpg", None)

    # A first round grows what any process would once (the interpreter's table of
    # interned names, which pathlib fills); the second shows what stays per file.
    assert sum(1 for _ in engine.judge(items(20_000, 0), lambda: False)) == 20_000
    tracemalloc.start()
    try:
        results = engine.judge(items(20_000, 1), lambda: False)
        first = next(results)
        assert first.status is Status.SKIPPED
        before, _ = tracemalloc.get_traced_memory()
        judged = 1 + sum(1 for _ in itertools.islice(results, 19_000))
        after, _ = tracemalloc.get_traced_memory()  # still judging: its state is alive
        judged += sum(1 for _ in results)
    finally:
        tracemalloc.stop()
        engine.close()
    assert judged == 20_000
    grown = after - before
    # Before: ~500 bytes a file (its path, its Seen, a dict slot), 10 MB for these.
    assert grown < 1_000_000, f"{grown / 20_000:.0f} bytes kept a file"
