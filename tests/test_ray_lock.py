"""A Ray scan takes the plain ledger's writers' lock too: never beside a `watch` or a
local `scan` of the same tree (exit 5, naming the holder), while shard owners still
share a tree (the lock is shared among Ray scans; see test_engines' two owners)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from facesieve.config import Config
from facesieve.errors import ExitCode, LedgerBusyError
from facesieve.ledger.store import Ledger

from .cli_util import tree
from .conftest import DATA, labelled
from .test_engines import _scan, ray_address  # noqa: F401 - the session's cluster


def test_shared_writers_lock_refuses_a_plain_writer_and_is_refused_beside_one(
    tmp_path: Path,
) -> None:
    from facesieve.ledger.store import writer_lock

    ledger = Config().resolve_folders(tmp_path).ledger
    first = writer_lock(ledger, shared=True)
    second = writer_lock(ledger, shared=True)  # two shard owners share a tree
    try:
        with pytest.raises(LedgerBusyError, match=f"pid {os.getpid()}"):
            Ledger(ledger, exclusive=True)
    finally:
        os.close(first)
        os.close(second)
    with Ledger(ledger, exclusive=True), pytest.raises(LedgerBusyError):
        writer_lock(ledger, shared=True)


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.ray
def test_a_ray_scan_beside_a_plain_writer_exits_5_untouched(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    address = request.getfixturevalue("ray_address")
    labelled("noface")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for path in sorted((DATA / "noface").glob("*.jpg"))[:3]:
        shutil.copy2(path, inbox / path.name)
    snapshot = tree(inbox)
    folders = Config().resolve_folders(inbox)
    # The plain ledger's writer, as `watch` or a local `scan` holds it.
    with Ledger(folders.ledger, exclusive=True):
        run = _scan(str(inbox), "--engine", "ray", "--address", address, "--json")
    assert run.returncode == ExitCode.LEDGER == 5, run.stderr[-3000:]
    assert f"pid {os.getpid()}" in run.stderr
    assert run.stdout == ""
    assert tree(inbox) == snapshot
    assert not list((inbox / ".facesieve").glob("ledger-*.sqlite3"))
