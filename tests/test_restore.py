"""`restore` and `purge`: files back byte for byte, never over another file; retention kept.

The first tests build ledgers by hand, the way the engine writes them, to reach
every case quickly; the last ones scan a real mixed folder with the real models.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from facesieve.acting.moves import free_destination, move_file, plan
from facesieve.cli.arguments import parse_duration, parse_since
from facesieve.cli.main import main
from facesieve.config import Config, ResolvedFolders
from facesieve.engines.local import Engine
from facesieve.judging.judge import Status
from facesieve.judging.policy import Verdict
from facesieve.ledger import store as ledger_module
from facesieve.ledger.store import Ledger, LedgerRow
from facesieve.testing import NoModels

from .cli_util import run_cli, tree

MTIME_NS = 1_600_000_000_123_456_789


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """`main` points the logs at this test's captured stderr, which closes after it."""
    yield
    structlog.reset_defaults()


def judged(
    ledger: Ledger,
    folders: ResolvedFolders,
    relative: str,
    verdict: str = "reject",
    *,
    content: bytes | None = None,
    mode: int = 0o640,
    config: Config | None = None,
) -> LedgerRow:
    """A file written under the root, then decided and acted on as the engine does."""
    path = folders.root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content if content is not None else f"bytes of {relative}".encode()
    path.write_bytes(data)
    path.chmod(mode)
    os.utime(path, ns=(MTIME_NS, MTIME_NS))
    action, folder = plan(Verdict(verdict), (config or Config()).actions, folders)
    destination = free_destination(path, folders.root, folder) if folder else None
    info = path.stat()
    row_id = ledger.begin(
        path=path,
        root=folders.root,
        size=info.st_size,
        mtime_ns=info.st_mtime_ns,
        mode=info.st_mode,
        sha256=hashlib.sha256(data).hexdigest(),
        faces=[],
        verdict=verdict,
        reason=f"{verdict} for the test",
        action=action.value,
        destination=destination,
        models={"detector": "none", "gender": "none"},
        elapsed_ms=10.0,
    )
    landed = move_file(path, destination) if destination is not None else None
    ledger.complete(row_id, landed)
    row = ledger.get(row_id)
    assert row is not None
    return row


def setup(tmp_path: Path) -> tuple[ResolvedFolders, Ledger]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    folders = Config().resolve_folders(inbox)
    return folders, Ledger(folders.ledger)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]]]:
    """The real CLI in this process; returns the exit code and the --json lines."""
    code = main(list(args))
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def set_moved_at(ledger_path: Path, row_id: int, moment: datetime) -> None:
    """Pretend a decision (and its move) happened at `moment`."""
    stamp = moment.isoformat(timespec="milliseconds")
    with sqlite3.connect(ledger_path) as db:
        db.execute(
            "UPDATE decisions SET decided_at = ?, completed_at = ? WHERE id = ?",
            (stamp, stamp, row_id),
        )


# -- durations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("2w", timedelta(weeks=2)),
        ("45s", timedelta(seconds=45)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1.5h", timedelta(minutes=90)),
        (" 7D ", timedelta(days=7)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d", "30x", "-1d", "0d", "30 days", "1d junk"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_since_takes_a_duration_or_a_date() -> None:
    now = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
    assert parse_since("2h", now) == datetime(2024, 5, 10, 10, 0, tzinfo=UTC)
    assert parse_since("2024-05-01", now) == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_since("2024-05-01T08:00+02:00", now) == datetime(2024, 5, 1, 6, tzinfo=UTC)
    with pytest.raises(ValueError, match="neither"):
        parse_since("yesterday", now)


def test_a_bad_duration_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["purge", str(tmp_path), "--older-than", "soon"])
    assert stopped.value.code == 2
    assert "not a duration" in capsys.readouterr().err


# -- restore, on ledgers built by hand ---------------------------------------------


def test_restore_all_puts_files_back_and_the_engine_knows_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folders, ledger = setup(tmp_path)
    kept = judged(ledger, folders, "kept.jpg", "keep")
    rejected = judged(ledger, folders, "a/b/rejected.jpg", "reject", mode=0o604)
    review = judged(ledger, folders, "review.png", "review")
    unreadable = judged(ledger, folders, "broken.jpg", "unreadable")
    ledger.close()
    shutil.rmtree(folders.root / "a")  # the folders it came from are gone too

    code, results = cli(capsys, "restore", str(folders.root), "--all", "--json")

    assert code == 0
    assert [(r["id"], r["result"]) for r in results] == [
        (rejected.id, "restored"),
        (review.id, "restored"),
        (unreadable.id, "restored"),
    ]
    restored = folders.root / "a/b/rejected.jpg"
    assert restored.read_bytes() == b"bytes of a/b/rejected.jpg"
    assert restored.stat().st_mode & 0o7777 == 0o604
    assert restored.stat().st_mtime_ns == MTIME_NS
    assert not (folders.quarantine / "a/b/rejected.jpg").exists()
    assert not (folders.review / "review.png").exists()
    with Ledger(folders.ledger) as ledger:
        rows = list(ledger.rows())
        restores = [r for r in rows if r.action == "restore"]
        assert [(r.ref, r.state, r.path, r.destination) for r in restores] == [
            (d.id, "done", d.path, d.path) for d in (rejected, review, unreadable)
        ]
        assert all(
            r.verdict == d.verdict
            for r, d in zip(restores, (rejected, review, unreadable), strict=True)
        )
        # Each file back in place is known: a scan or the daemon leaves it alone.
        # No grace for unreadable bytes: this test rewrites a file and judges it at once.
        config = Config.model_validate({"images": {"unreadable_grace_seconds": 0}})
        engine = Engine(config, NoModels(), folders=folders, ledger=ledger)
        for path in (kept.path, rejected.path, review.path, unreadable.path):
            assert engine.process(Path(path)).status is Status.KNOWN
        # ...until its content changes.
        restored.write_bytes(b"new content, not an image")
        again = engine.process(restored)
        assert (again.status, again.verdict) == (Status.DECIDED, Verdict.NOT_IMAGE)

    # The changed file was judged and quarantined anew: that decision is the one left.
    code, results = cli(capsys, "restore", str(folders.root), "--all", "--json")
    assert (code, [(r["verdict"], r["result"]) for r in results]) == (
        0,
        [("not_image", "restored")],
    )
    assert restored.read_bytes() == b"new content, not an image"
    assert cli(capsys, "restore", str(folders.root), "--all", "--json") == (0, [])


def test_a_conflict_is_reported_and_nothing_is_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folders, ledger = setup(tmp_path)
    first = judged(ledger, folders, "one.jpg")
    second = judged(ledger, folders, "two.jpg")
    ledger.close()
    (folders.root / "one.jpg").write_bytes(b"a new file that took the name")

    code, results = cli(capsys, "restore", str(folders.root), "--all", "--json")

    assert code == 1
    assert [(r["id"], r["result"]) for r in results] == [
        (first.id, "conflict"),
        (second.id, "restored"),
    ]
    assert (folders.root / "one.jpg").read_bytes() == b"a new file that took the name"
    assert (folders.quarantine / "one.jpg").read_bytes() == b"bytes of one.jpg"
    assert not list(folders.root.glob("one~*"))  # never renamed aside either
    with Ledger(folders.ledger) as ledger:
        failed = [r for r in ledger.rows() if r.action == "restore" and r.state == "failed"]
        assert [r.ref for r in failed] == [first.id]
        assert failed[0].error is not None and "exists" in failed[0].error

    # Once the name is free again, the same file can be restored by id.
    (folders.root / "one.jpg").unlink()
    code, results = cli(capsys, "restore", str(folders.root), "--id", str(first.id), "--json")
    assert code == 0 and results[0]["result"] == "restored"
    assert (folders.root / "one.jpg").read_bytes() == b"bytes of one.jpg"


def test_restore_by_path_id_and_filters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folders, ledger = setup(tmp_path)
    old = judged(ledger, folders, "old.jpg", "reject")
    new = judged(ledger, folders, "new.jpg", "reject")
    review = judged(ledger, folders, "unsure.jpg", "review")
    kept = judged(ledger, folders, "kept.jpg", "keep")
    set_moved_at(folders.ledger, old.id, datetime.now(UTC) - timedelta(days=3))
    ledger.close()
    root = str(folders.root)

    code, results = cli(capsys, "restore", root, "--all", "--dry-run", "--json")
    assert code == 0
    assert [r["result"] for r in results] == ["would restore"] * 3
    assert (folders.quarantine / "old.jpg").exists()

    code, results = cli(capsys, "restore", root, "--all", "--verdict", "review", "--json")
    assert [(r["id"], r["result"]) for r in results] == [(review.id, "restored")]

    code, results = cli(capsys, "restore", root, "--all", "--since", "1d", "--json")
    assert [(r["id"], r["result"]) for r in results] == [(new.id, "restored")]

    # By path, either where it was judged or where it lies now; filters still say why.
    code, results = cli(
        capsys, "restore", root, "--path", str(folders.quarantine / "old.jpg"), "--since", "1h"
    )
    assert code == 1
    code, results = cli(capsys, "restore", root, "--path", str(folders.root / "old.jpg"), "--json")
    assert code == 0 and [(r["id"], r["result"]) for r in results] == [(old.id, "restored")]

    code, results = cli(
        capsys, "restore", root, "--id", str(kept.id), "--id", "999", "--id", str(old.id), "--json"
    )
    assert code == 1
    assert [r["result"] for r in results] == ["not restorable"] * 3
    messages = " | ".join(r["message"] for r in results)
    assert "left in place" in messages and "no such ledger id" in messages
    assert "restored" in messages

    assert main(["restore", root]) == 2  # nothing named


def test_the_ledger_is_found_from_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folders, ledger = setup(tmp_path)
    rejected = judged(ledger, folders, "x.jpg")
    ledger.close()
    config = tmp_path / "c.toml"
    config.write_text(f'[folders]\ninbox = "{folders.root}"\n')
    code, results = cli(capsys, "restore", "--config", str(config), "--all", "--json")
    assert code == 0 and results[0]["id"] == rejected.id

    assert main(["stats"]) == 3  # no folder, no config: which ledger?
    assert "DIR" in capsys.readouterr().err
    assert main(["stats", str(tmp_path / "never-scanned")]) == 5
    assert not (tmp_path / "never-scanned").exists()  # reading never creates a ledger


def test_an_interrupted_restore_is_settled(tmp_path: Path) -> None:
    folders, ledger = setup(tmp_path)
    linked = judged(ledger, folders, "linked.jpg")
    untouched = judged(ledger, folders, "untouched.jpg")
    # Killed after the link into place, before the unlink and the ledger update...
    linked_restore = ledger.begin_restore(linked)
    os.link(folders.quarantine / "linked.jpg", folders.root / "linked.jpg")
    # ...and killed before the move.
    untouched_restore = ledger.begin_restore(untouched)
    for row_id in (linked_restore, untouched_restore):  # long enough ago to be no mover's
        set_moved_at(folders.ledger, row_id, datetime.now(UTC) - timedelta(minutes=2))

    engine = Engine(Config(), NoModels(), folders=folders, ledger=ledger)
    assert engine.recover() == 2

    assert (folders.root / "linked.jpg").read_bytes() == b"bytes of linked.jpg"
    assert not (folders.quarantine / "linked.jpg").exists()
    assert (folders.quarantine / "untouched.jpg").exists()
    assert not (folders.root / "untouched.jpg").exists()
    settled = {r.id: r for r in ledger.rows()}
    assert settled[linked_restore].state == "done"
    assert settled[linked_restore].destination == linked.path
    assert settled[untouched_restore].state == "failed"
    assert engine.process(folders.root / "linked.jpg").status is Status.KNOWN
    ledger.close()


def test_a_version_1_ledger_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            """CREATE TABLE decisions (id INTEGER PRIMARY KEY, path TEXT NOT NULL,
                root TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                mode INTEGER NOT NULL, sha256 TEXT NOT NULL, faces TEXT NOT NULL,
                verdict TEXT NOT NULL, reason TEXT NOT NULL, action TEXT NOT NULL,
                destination TEXT,
                state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
                error TEXT, models TEXT NOT NULL, elapsed_ms REAL, decided_at TEXT NOT NULL,
                completed_at TEXT);
            INSERT INTO decisions VALUES (1, '/in/a.jpg', '/in', 3, 5, 33188, 'ab', '[]',
                'reject', 'no face found', 'quarantine', '/q/a.jpg', 'done', NULL, '{}', 1.0,
                '2024-01-01T00:00:00.000+00:00', '2024-01-01T00:00:01.000+00:00');
            PRAGMA user_version=1;"""
        )
    with Ledger(path) as ledger:
        (row,) = ledger.rows()
        assert (row.path, row.ref, row.purged_at) == ("/in/a.jpg", None, None)
        ledger.mark_purged(row.id)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == ledger_module._SCHEMA_VERSION
        assert db.execute("SELECT purged_at IS NOT NULL FROM decisions").fetchone()[0] == 1


# -- purge -------------------------------------------------------------------------


def test_purge_honours_retention(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folders, ledger = setup(tmp_path)
    now = datetime.now(UTC)
    ages = {"40d.jpg": timedelta(days=40), "29d.jpg": timedelta(days=29)}
    ages |= {"13h.jpg": timedelta(hours=13), "100m.jpg": timedelta(minutes=100)}
    rows = {name: judged(ledger, folders, name) for name in ages}
    old_review = judged(ledger, folders, "review.jpg", "review")
    old_restored = judged(ledger, folders, "restored.jpg")
    old_changed = judged(ledger, folders, "changed.jpg")
    ledger.close()
    for name, age in ages.items():
        set_moved_at(folders.ledger, rows[name].id, now - age)
    for row in (old_review, old_restored, old_changed):
        set_moved_at(folders.ledger, row.id, now - timedelta(days=100))
    root = str(folders.root)
    assert cli(capsys, "restore", root, "--id", str(old_restored.id))[0] == 0
    (folders.quarantine / "changed.jpg").write_bytes(b"someone put other bytes here")

    def present() -> set[str]:
        return {p.name for p in folders.quarantine.iterdir()}

    code, results = cli(capsys, "purge", root, "--older-than", "30d", "--dry-run", "--json")
    assert {r["result"] for r in results} == {"would purge"}
    assert {Path(r["path"]).name for r in results} == {"40d.jpg", "changed.jpg"}
    assert present() == {"40d.jpg", "29d.jpg", "13h.jpg", "100m.jpg", "changed.jpg"}

    code, results = cli(capsys, "purge", root, "--older-than", "30d", "--json")
    assert code == 1  # the changed file is an error: left alone, and said so
    assert {(Path(r["path"]).name, r["result"]) for r in results} == {
        ("40d.jpg", "purged"),
        ("changed.jpg", "error"),
    }
    assert present() == {"29d.jpg", "13h.jpg", "100m.jpg", "changed.jpg"}

    code, results = cli(capsys, "purge", root, "--older-than", "2w", "--json")
    assert [Path(r["path"]).name for r in results if r["result"] == "purged"] == ["29d.jpg"]
    code, results = cli(capsys, "purge", root, "--older-than", "12h", "--json")
    assert [Path(r["path"]).name for r in results if r["result"] == "purged"] == ["13h.jpg"]
    code, results = cli(capsys, "purge", root, "--older-than", "90m", "--json")
    assert [Path(r["path"]).name for r in results if r["result"] == "purged"] == ["100m.jpg"]
    assert present() == {"changed.jpg"}
    assert (folders.review / "review.jpg").exists()  # review is for a person, never purged
    assert (folders.root / "restored.jpg").exists()

    with Ledger(folders.ledger) as ledger:
        by_name = {Path(r.path).name: r for r in ledger.decisions()}
    assert len(by_name) == 7  # the records stay
    assert {n for n, r in by_name.items() if r.purged_at} == set(ages)
    assert by_name["40d.jpg"].verdict == "reject" and by_name["40d.jpg"].sha256

    code, results = cli(capsys, "restore", root, "--id", str(rows["40d.jpg"].id), "--json")
    assert code == 1 and "purged" in results[0]["message"]


# -- for real: a mixed folder, the real models -------------------------------------


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """Relative path -> (sha256, mode, mtime_ns) of every file outside .facesieve."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] == ".facesieve" or not path.is_file():
            continue
        info = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        found[str(relative)] = (digest, info.st_mode, info.st_mtime_ns)
    return found


def mixed_copy(tmp_path: Path) -> tuple[Path, Path]:
    """The use-case folder with varied modes and mtimes, and a working copy of it."""
    from .test_use_cases import build_inbox

    original = tmp_path / "original"
    build_inbox(original)
    for index, path in enumerate(sorted(p for p in original.rglob("*") if p.is_file())):
        path.chmod((0o644, 0o600, 0o640, 0o444)[index % 4])
        os.utime(path, ns=(MTIME_NS, MTIME_NS + index * 1_000_003))
    inbox = tmp_path / "inbox"
    shutil.copytree(original, inbox)  # copy2: modes and mtimes too
    assert snapshot(inbox) == snapshot(original)
    return original, inbox


@pytest.mark.models
@pytest.mark.data
@pytest.mark.slow
def test_restore_all_after_a_real_scan(tmp_path: Path, deepface_home: Path) -> None:
    original, inbox = mixed_copy(tmp_path)
    scan = run_cli("scan", str(inbox), "--require", "man", "--json")
    assert scan.code == 0, scan.stderr[-3000:]
    moved = [r for r in scan.records if r["destination"]]
    assert len(moved) == 7  # 4 women, 2 cats, 1 unreadable
    assert snapshot(inbox) != snapshot(original)

    restore = run_cli("restore", str(inbox), "--all", "--json")

    assert restore.code == 0, restore.stderr[-3000:]
    assert sorted(r["to"] for r in restore.records) == sorted(r["path"] for r in moved)
    assert {r["result"] for r in restore.records} == {"restored"}
    assert snapshot(inbox) == snapshot(original)  # bytes, modes and mtimes
    assert tree(inbox / ".facesieve" / "quarantine") == {}

    again = run_cli("scan", str(inbox), "--require", "man", "--json")
    assert again.code == 0
    assert again.records == []  # restored files are not judged again
    assert snapshot(inbox) == snapshot(original)


@pytest.mark.models
@pytest.mark.data
@pytest.mark.slow
def test_a_conflicting_file_survives_a_real_restore(tmp_path: Path, deepface_home: Path) -> None:
    original, inbox = mixed_copy(tmp_path)
    scan = run_cli("scan", str(inbox), "--require", "woman", "--json")
    assert scan.code == 0, scan.stderr[-3000:]
    cat = next(r for r in scan.records if r["path"].endswith("cat.4001.jpg"))
    assert cat["verdict"] == "reject"
    Path(cat["path"]).write_bytes(b"a different file, written after the scan")

    restore = run_cli("restore", str(inbox), "--all", "--json")

    assert restore.code == 1
    results = {r["to"]: r for r in restore.records}
    assert results[cat["path"]]["result"] == "conflict"
    assert Path(cat["path"]).read_bytes() == b"a different file, written after the scan"
    quarantined = Path(cat["destination"]).read_bytes()
    assert quarantined == (original / "pets/cat.4001.jpg").read_bytes()
    others = {k: v for k, v in snapshot(inbox).items() if k != "pets/cat.4001.jpg"}
    assert others == {k: v for k, v in snapshot(original).items() if k != "pets/cat.4001.jpg"}

    Path(cat["path"]).unlink()
    by_id = run_cli("restore", str(inbox), "--id", str(results[cat["path"]]["id"]))
    assert by_id.code == 0, by_id.stderr[-2000:]
    assert snapshot(inbox) == snapshot(original)
