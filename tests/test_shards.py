"""Sharded ledgers: which shard a file is in, disjoint ids, one lock per shard, one union."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from facesieve.errors import LedgerError
from facesieve.ledger.shards import (
    ID_SPAN,
    LedgerUnion,
    ShardLock,
    id_base,
    ledger_files,
    shard_of,
    shard_path,
)
from facesieve.ledger.store import Ledger


def _decide(ledger: Ledger, path: str, verdict: str = "reject") -> int:
    row = ledger.begin(
        path=Path(path),
        root=Path("/inbox"),
        size=1,
        mtime_ns=1,
        mode=0o100644,
        sha256="0" * 64,
        faces=[],
        verdict=verdict,
        reason="r",
        action="quarantine",
        destination=Path("/q") / Path(path).name,
        models={"detector": "x"},
        elapsed_ms=1.0,
    )
    ledger.complete(row, Path("/q") / Path(path).name)
    return row


def test_a_file_shard_is_its_folder_hash_and_the_same_in_every_process(tmp_path: Path) -> None:
    folder = tmp_path / os.fsdecode(b"r\xe9pertoire")  # not UTF-8
    assert shard_of(folder / "a.jpg", 8) == shard_of(folder / "b.png", 8)
    assert len({shard_of(tmp_path / f"d{n}" / "x.jpg", 8) for n in range(64)}) == 8
    here = [shard_of(tmp_path / f"d{n}" / "x.jpg", 8) for n in range(16)]
    script = (
        "import sys; from pathlib import Path; from facesieve.ledger.shards import shard_of; "
        "print([shard_of(Path(sys.argv[1]) / f'd{n}' / 'x.jpg', 8) for n in range(16)])"
    )
    # Another interpreter (another hash seed) puts every folder in the same shard.
    other = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONHASHSEED="123"),
    )
    assert other.stdout.strip() == str(here)


def test_shards_take_disjoint_id_ranges_and_the_union_reads_them_as_one(tmp_path: Path) -> None:
    plain = tmp_path / "ledger.sqlite3"
    with Ledger(plain) as ledger:
        first = _decide(ledger, "/inbox/old.jpg")
    ids = {first: "/inbox/old.jpg"}
    for k in (0, 3):
        file = shard_path(plain, k)
        assert file.name == f"ledger-{k}.sqlite3"
        with Ledger(file, id_base=id_base(plain, file)) as shard:
            for n in range(2):
                ids[_decide(shard, f"/inbox/s{k}/{n}.jpg")] = f"/inbox/s{k}/{n}.jpg"
    assert len(ids) == 5
    assert sorted(ids)[1:] == [ID_SPAN + 1, ID_SPAN + 2, 4 * ID_SPAN + 1, 4 * ID_SPAN + 2]
    assert ledger_files(plain) == [plain, shard_path(plain, 0), shard_path(plain, 3)]

    with LedgerUnion.open_existing(plain) as union:
        assert {row.id: row.path for row in union.decisions()} == ids
        assert union.count() == 5
        some = union.get(4 * ID_SPAN + 2)
        assert some is not None and some.path == "/inbox/s3/1.jpg"
        assert union.get(7 * ID_SPAN + 1) is None
        # A restore is recorded in the file that holds its decision, with an id of its range.
        restore = union.begin_restore(some)
        union.complete(restore, Path(some.path))
        assert 4 * ID_SPAN < restore <= 5 * ID_SPAN
        assert set(union.restores()) == {some.id}
        union.mark_purged(ID_SPAN + 1)
        purged = union.get(ID_SPAN + 1)
        assert purged is not None and purged.purged_at is not None


def test_no_ledger_file_at_all_is_a_ledger_error(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="nothing was scanned"):
        LedgerUnion.open_existing(tmp_path / "ledger.sqlite3")


def test_a_shard_has_one_owner_at_a_time_and_a_dead_owner_frees_it(tmp_path: Path) -> None:
    file = shard_path(tmp_path / "ledger.sqlite3", 2)
    first, second = ShardLock(file), ShardLock(file)
    assert first.acquire()
    assert not second.acquire()
    assert second.holder() == str(os.getpid())
    first.release()
    assert second.acquire()
    second.release()

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            "from facesieve.ledger.shards import ShardLock;"
            "assert ShardLock(Path(sys.argv[1])).acquire(); print('held', flush=True);"
            "time.sleep(60)",
            str(file),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert not ShardLock(file).acquire()
        holder.kill()
        holder.wait()
        again = ShardLock(file)
        assert again.acquire()  # the kernel dropped the dead owner's lock
        again.release()
    finally:
        holder.kill()
        holder.communicate(timeout=30)  # also closes its stdout pipe (no ResourceWarning)
