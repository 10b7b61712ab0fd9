"""One identity value (inode, size, mtime, ctime) from the read to the ledger and back.

The read, the judgement, the ledger row and what the prefilter is told (`Seen`) carry
the same `Identity`, not five loose fields each: one value compared one way.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from facesieve.config import Config
from facesieve.engines.local import Engine
from facesieve.intake.safefs import Identity
from facesieve.judging.judge import Judgement, Read, Seen, Status, judge, read
from facesieve.ledger.store import Ledger

from .conftest import DATA, labelled

pytestmark = [pytest.mark.data, pytest.mark.models]


def test_read_judgement_row_and_seen_carry_one_identity(tmp_path: Path, analyzer: Any) -> None:
    labelled("fairface")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    photo = inbox / "photo.jpg"
    shutil.copy2(DATA / "fairface" / "fairface_0001.jpg", photo)
    expected = Identity.of(os.stat(photo))
    config = Config()

    item = read(photo, config.images)
    assert isinstance(item, Read) and item.identity == expected
    result = judge(photo, analyzer, config.policy, config.images)
    assert isinstance(result, Judgement) and result.identity == expected

    folders = config.resolve_folders(inbox)
    with Ledger(folders.ledger, exclusive=True) as ledger:
        engine = Engine(config, analyzer, folders=folders, ledger=ledger)
        try:
            assert engine.process(photo).status is Status.DECIDED
            row = ledger.last_done(photo)
            assert row is not None and row.identity == expected
            seen = engine.applier.seen(photo)
        finally:
            engine.close()
    assert seen == Seen.of_row(row) and seen.identity == expected
    assert seen.same_stat(expected)
    # A row from before inodes were recorded has no identity: never "same stat".
    legacy = Seen(row.size, row.mtime_ns, row.sha256, "ledger #1")
    assert legacy.identity is None and not legacy.same_stat(expected)
