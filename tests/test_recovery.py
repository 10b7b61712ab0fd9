"""Crash recovery in isolation: each state a kill -9 can leave an action in.

The real daemon is killed for real in test_watch.py; here each window of a move
is recreated exactly, since a random kill rarely lands inside one.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from facesieve.acting.moves import PARTIAL_SUFFIX
from facesieve.config import Config
from facesieve.engines.local import Engine
from facesieve.ledger.store import Ledger
from facesieve.testing import NoModels

QUARANTINED = "inbox/.facesieve/quarantine/a.jpg"
QUARANTINED_1 = "inbox/.facesieve/quarantine/a~1.jpg"


def on_disk(tmp_path: Path) -> dict[str, bytes]:
    """Every file under the test's folder but the ledger's own, with its bytes: a file
    recovered must be in exactly one place, whole, and no partial copy may be left."""
    found = {}
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file() and not path.name.startswith("ledger.sqlite3"):
            found[path.relative_to(tmp_path).as_posix()] = path.read_bytes()
    return found


def setup(tmp_path: Path) -> tuple[Engine, Ledger, Path, Path]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    folders = Config().resolve_folders(inbox)
    ledger = Ledger(folders.ledger)
    engine = Engine(Config(), NoModels(), folders=folders, ledger=ledger)
    return engine, ledger, inbox, folders.quarantine


def intend(ledger: Ledger, source: Path, destination: Path | None, data: bytes, action: str) -> int:
    return ledger.begin(
        path=source,
        root=source.parent,
        size=len(data),
        mtime_ns=0,
        mode=0o100644,
        sha256=hashlib.sha256(data).hexdigest(),
        faces=[],
        verdict="reject",
        reason="no face found",
        action=action,
        destination=destination,
        models={"detector": "none", "gender": "none"},
        elapsed_ms=1.0,
    )


def state(ledger: Ledger) -> list[tuple[str, Any]]:
    return [(r.state, r.destination) for r in ledger.rows()]


def test_killed_before_the_link(tmp_path: Path) -> None:
    engine, ledger, inbox, quarantine = setup(tmp_path)
    (inbox / "a.jpg").write_bytes(b"A")
    intend(ledger, inbox / "a.jpg", quarantine / "a.jpg", b"A", "quarantine")
    assert engine.recover() == 1
    assert on_disk(tmp_path) == {"inbox/a.jpg": b"A"}
    assert state(ledger) == [("failed", str(quarantine / "a.jpg"))]
    assert engine.applier.seen(inbox / "a.jpg") is None  # so it is judged again


def test_killed_between_link_and_unlink(tmp_path: Path) -> None:
    engine, ledger, inbox, quarantine = setup(tmp_path)
    (inbox / "a.jpg").write_bytes(b"A")
    quarantine.mkdir(parents=True)
    os.link(inbox / "a.jpg", quarantine / "a.jpg")
    intend(ledger, inbox / "a.jpg", quarantine / "a.jpg", b"A", "quarantine")
    engine.recover()
    assert on_disk(tmp_path) == {QUARANTINED: b"A"}
    assert state(ledger) == [("done", str(quarantine / "a.jpg"))]


def test_killed_after_the_unlink(tmp_path: Path) -> None:
    engine, ledger, inbox, quarantine = setup(tmp_path)
    quarantine.mkdir(parents=True)
    (quarantine / "a.jpg").write_bytes(b"A")
    intend(ledger, inbox / "a.jpg", quarantine / "a.jpg", b"A", "quarantine")
    engine.recover()
    assert on_disk(tmp_path) == {QUARANTINED: b"A"}
    assert state(ledger) == [("done", str(quarantine / "a.jpg"))]


def test_killed_mid_copy_across_filesystems(tmp_path: Path) -> None:
    engine, ledger, inbox, quarantine = setup(tmp_path)
    (inbox / "a.jpg").write_bytes(b"AAAA")
    quarantine.mkdir(parents=True)
    (quarantine / ("a.jpg" + PARTIAL_SUFFIX)).write_bytes(b"AA")
    intend(ledger, inbox / "a.jpg", quarantine / "a.jpg", b"AAAA", "quarantine")
    engine.recover()
    assert on_disk(tmp_path) == {"inbox/a.jpg": b"AAAA"}
    assert list(quarantine.iterdir()) == []
    assert state(ledger)[0][0] == "failed"


def test_collision_renamed_destination_is_followed(tmp_path: Path) -> None:
    engine, ledger, inbox, quarantine = setup(tmp_path)
    quarantine.mkdir(parents=True)
    (quarantine / "a.jpg").write_bytes(b"someone else")
    (quarantine / "a~1.jpg").write_bytes(b"A")
    intend(ledger, inbox / "a.jpg", quarantine / "a.jpg", b"A", "quarantine")
    engine.recover()
    assert state(ledger) == [("done", str(quarantine / "a~1.jpg"))]
    assert on_disk(tmp_path) == {QUARANTINED: b"someone else", QUARANTINED_1: b"A"}


def test_interrupted_delete(tmp_path: Path) -> None:
    engine, ledger, inbox, _ = setup(tmp_path)
    (inbox / "gone.jpg").write_bytes(b"G")
    intend(ledger, inbox / "gone.jpg", None, b"G", "delete")
    (inbox / "gone.jpg").unlink()
    (inbox / "kept.jpg").write_bytes(b"K")
    intend(ledger, inbox / "kept.jpg", None, b"K", "delete")
    engine.recover()
    assert [r.state for r in ledger.rows()] == ["done", "failed"]
    assert on_disk(tmp_path) == {"inbox/kept.jpg": b"K"}
