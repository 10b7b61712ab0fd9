"""A sample is the unit of action (issue 17): the image's verdict carries its members.

Plumbing: a stand-in model (`NoFaces`: every image "no face found") over real
photos; what a verdict is for real models is tests/test_scrapers_samples.py's.
The kill -9 test kills a real process at every step of a sample's move.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import structlog

from facesieve.cli.main import main
from facesieve.config import Config
from facesieve.engines.local import Engine
from facesieve.ledger.store import Ledger
from facesieve.people.desk import Label, give_verdict
from facesieve.testing import NoFaces, Unsure
from tests.cli_util import run_cli
from tests.conftest import DATA, copy_images

PHOTO = "fairface_0001.jpg"
NOFACE = sorted(p.name for p in (DATA / "noface").glob("*.jpg"))[0]


@pytest.fixture(autouse=True)
def _plain_logging() -> Any:
    """The CLI configures logging for its stdout; each test starts from the defaults."""
    yield
    structlog.reset_defaults()


def _sample(inbox: Path, key: str = "000000000") -> list[Path]:
    (image,) = copy_images(inbox / "00000", {"fairface": [PHOTO]})
    image = image.rename(inbox / "00000" / f"{key}.jpg")
    caption = inbox / "00000" / f"{key}.txt"
    caption.write_text("a caption")
    meta = inbox / "00000" / f"{key}.json"
    meta.write_text(json.dumps({"key": key}))
    return [image, caption, meta]


def _engine(inbox: Path, analyzer: Any = None, **actions: str) -> tuple[Engine, Ledger]:
    config = Config.model_validate({"actions": actions})
    folders = config.resolve_folders(inbox)
    ledger = Ledger(folders.ledger)
    model = NoFaces() if analyzer is None else analyzer
    return Engine(config, model, folders=folders, ledger=ledger), ledger


def test_a_rejected_sample_goes_whole_and_an_orphan_is_not_image(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    sample = _sample(inbox)
    orphan = inbox / "00000" / "lonely.txt"
    orphan.write_text("nobody's")
    engine, ledger = _engine(inbox)
    from facesieve.intake.inbox import Inbox

    walked = list(Inbox.of(engine.config, engine.applier.folders).walk())  # type: ignore[arg-type]
    assert sorted(p.name for p in walked) == ["000000000.jpg", "lonely.txt"]
    outcomes = {o.path.name: o for o in engine.process_many(walked)}
    quarantine = inbox / ".facesieve" / "quarantine" / "00000"
    assert outcomes["000000000.jpg"].action == "quarantine"
    assert sorted(p.name for p in outcomes["000000000.jpg"].members) == [
        "000000000.json",
        "000000000.txt",
    ]
    assert outcomes["lonely.txt"].verdict is not None
    assert outcomes["lonely.txt"].verdict.value == "not_image"
    assert not any(p.exists() for p in sample)
    assert sorted(p.name for p in quarantine.iterdir()) == [
        "000000000.jpg",
        "000000000.json",
        "000000000.txt",
        "lonely.txt",
    ]
    (decision,) = [r for r in ledger.rows() if r.path.endswith(".jpg")]
    members = ledger.members(decision.id)
    assert [Path(m.path).name for m in members] == ["000000000.json", "000000000.txt"]
    assert all(m.landed == str(quarantine / Path(m.path).name) for m in members)
    engine.close()
    ledger.close()


@pytest.mark.models
def test_a_kept_sample_keeps_its_members_and_the_ledger_records_them(
    tmp_path: Path, analyzer: Any
) -> None:
    inbox = tmp_path / "inbox"
    sample = _sample(inbox)  # a FairFace adult: a face, kept under require = "face"
    engine, ledger = _engine(inbox, analyzer)
    (outcome,) = engine.process_many([sample[0]])
    assert outcome.action == "keep", outcome.reason
    assert all(p.exists() for p in sample)
    assert sorted(outcome.members) == sorted(sample[1:])
    (decision,) = ledger.rows()
    assert [(Path(m.path), m.landed) for m in ledger.members(decision.id)] == [
        (sample[2], None),
        (sample[1], None),
    ]
    engine.close()
    ledger.close()


def test_a_deleted_sample_goes_whole(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    sample = _sample(inbox)
    engine, ledger = _engine(inbox, reject="delete")
    (outcome,) = engine.process_many([sample[0]])
    assert outcome.action == "delete"
    assert not any(p.exists() for p in sample)
    (decision,) = ledger.rows()
    assert len(ledger.members(decision.id)) == 2
    engine.close()
    ledger.close()


# -- kill -9 at every step of a sample's move -------------------------------------------

_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from facesieve.config import Config
    from facesieve.engines.local import Engine
    from facesieve.ledger.store import Ledger
    from facesieve.testing import NoFaces, Unsure

    inbox, reject, count_file = Path(sys.argv[1]), sys.argv[2], sys.argv[4]
    kill_at = int(sys.argv[3])
    config = Config.model_validate({"actions": {"reject": reject}})
    folders = config.resolve_folders(inbox)
    ledger = Ledger(folders.ledger, exclusive=True)
    engine = Engine(config, NoFaces(), folders=folders, ledger=ledger)
    engine.recover()
    if kill_at == -2:
        sys.exit(0)  # recovery only
    steps = 0

    def step(name, real):
        def hooked(*args, **kwargs):
            global steps
            if steps == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            steps += 1
            return real(*args, **kwargs)
        return hooked

    # Every change a move makes on disk: a link, an unlink, a rename, an fsync,
    # and the ledger's intent and completion.
    for name in ("link", "unlink", "rename", "fsync"):
        setattr(os, name, step(name, getattr(os, name)))
    Ledger.begin = step("begin", Ledger.begin)
    Ledger.complete = step("complete", Ledger.complete)
    image = inbox / "00000" / "000000000.jpg"
    (outcome,) = engine.process_many([image])
    Path(count_file).write_text(str(steps))
    print(outcome.action, outcome.destination)
    """
)


def _run_child(inbox: Path, reject: str, kill_at: int, count: Path) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(inbox), reject, str(kill_at), str(count)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode in (0, -signal.SIGKILL), done.stderr
    return done.returncode


def _where(inbox: Path) -> dict[str, list[str]]:
    """Every sample file's places: in the inbox, in quarantine."""
    quarantine = inbox / ".facesieve" / "quarantine" / "00000"
    names = ("000000000.jpg", "000000000.txt", "000000000.json")
    found: dict[str, list[str]] = {}
    for name in names:
        found[name] = [
            place
            for place, folder in (("inbox", inbox / "00000"), ("quarantine", quarantine))
            if (folder / name).exists()
        ]
    return found


@pytest.mark.slow
@pytest.mark.parametrize("reject", ["quarantine", "delete"])
def test_a_sample_killed_at_every_step_is_never_split_and_never_loses_a_member(
    tmp_path: Path, reject: str
) -> None:
    # One clean run counts the steps; then a kill -9 before each of them in turn.
    clean = tmp_path / "clean"
    _sample(clean)
    count = tmp_path / "steps"
    assert _run_child(clean, reject, -1, count) == 0
    steps = int(count.read_text())
    assert steps >= 6  # intent, the image's and two members' moves, completion
    rounds = 0
    for kill_at in range(steps):
        inbox = tmp_path / f"round{kill_at}"
        _sample(inbox)
        assert _run_child(inbox, reject, kill_at, count) == -signal.SIGKILL
        if reject == "quarantine":  # right after the kill: nothing lost
            assert all(_where(inbox).values()), (kill_at, _where(inbox))
        # Recovery: every file in one place, and all of them in the same one.
        assert _run_child(inbox, reject, -2, count) == 0
        places = _where(inbox)
        assert len({tuple(where) for where in places.values()}) == 1, (kill_at, places)
        assert all(len(where) <= 1 for where in places.values()), (kill_at, places)
        if reject == "quarantine":
            assert all(places.values()), (kill_at, places)
        # The next start judges what is left: the sample ends whole where it belongs.
        assert _run_child(inbox, reject, -1, count) == 0
        places = _where(inbox)
        wanted = [] if reject == "delete" else ["quarantine"]
        assert all(where == wanted for where in places.values()), (kill_at, places)
        with Ledger(inbox / ".facesieve" / "ledger.sqlite3") as ledger:
            assert not ledger.pending()
        rounds += 1
    assert rounds == steps
    print(f"{reject}: {rounds} kill -9 rounds, one per step")


# -- restore, approve, reject: the sample comes back whole -------------------------------


def test_restore_brings_the_whole_sample_back(tmp_path: Path, capsys: Any) -> None:
    inbox = tmp_path / "inbox"
    sample = _sample(inbox)
    engine, ledger = _engine(inbox)
    (outcome,) = engine.process_many([sample[0]])
    engine.close()
    ledger.close()
    assert outcome.action == "quarantine" and not any(p.exists() for p in sample)
    assert main(["restore", str(inbox), "--all", "--json"]) == 0
    assert all(p.exists() for p in sample)
    assert sample[1].read_text() == "a caption"
    assert not any((inbox / ".facesieve" / "quarantine" / "00000").iterdir())


@pytest.mark.parametrize("label", [Label.KEEP, Label.REJECT])
def test_approve_and_reject_move_the_whole_sample(tmp_path: Path, label: Label) -> None:
    inbox = tmp_path / "inbox"
    sample = _sample(inbox)
    # A review band: the default detector's two thresholds are one.
    config = Config.model_validate(
        {"policy": {"min_face_confidence": 0.5, "sure_face_confidence": 0.9}}
    )
    folders = config.resolve_folders(inbox)
    ledger = Ledger(folders.ledger)
    engine = Engine(config, Unsure(), folders=folders, ledger=ledger)
    (outcome,) = engine.process_many([sample[0]])
    assert outcome.action == "review", outcome.reason
    assert sorted(p.name for p in (folders.review / "00000").iterdir()) == [
        "000000000.jpg",
        "000000000.json",
        "000000000.txt",
    ]
    (decision,) = ledger.rows()
    give_verdict(ledger, config, decision.id, label, "ana")
    if label is Label.KEEP:
        assert all(p.exists() for p in sample)
    else:
        assert sorted(p.name for p in (folders.quarantine / "00000").iterdir()) == [
            "000000000.jpg",
            "000000000.json",
            "000000000.txt",
        ]
    assert not any((folders.review / "00000").iterdir())
    engine.close()
    ledger.close()


def test_a_member_arriving_after_its_image_was_quarantined_follows_it(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    image, caption, meta = _sample(inbox)
    caption.unlink()
    engine, ledger = _engine(inbox, not_image="keep")
    engine.process_many([image]).__next__()
    quarantine = inbox / ".facesieve" / "quarantine" / "00000"
    assert (quarantine / image.name).exists() and (quarantine / meta.name).exists()
    caption.write_text("late")  # written after its image was judged and moved
    (outcome,) = engine.process_many([caption])
    assert outcome.action == "quarantine" and outcome.destination == quarantine / caption.name
    assert "follows it" in outcome.reason
    assert (quarantine / caption.name).read_text() == "late" and not caption.exists()
    (decision,) = [r for r in ledger.rows() if r.path == str(image)]
    assert sorted(Path(m.path).name for m in ledger.members(decision.id)) == [
        "000000000.json",
        "000000000.txt",
    ]
    # A file of no image keeps not_image's action (here: keep).
    lonely = inbox / "00000" / "lonely.txt"
    lonely.write_text("nobody's")
    (outcome,) = engine.process_many([lonely])
    assert outcome.action == "keep" and lonely.exists()
    engine.close()
    ledger.close()


def test_purge_deletes_the_whole_quarantined_sample(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    sample = _sample(inbox)
    engine, ledger = _engine(inbox)
    engine.process_many([sample[0]]).__next__()
    (decision,) = ledger.rows()
    engine.close()
    ledger.close()
    quarantine = inbox / ".facesieve" / "quarantine" / "00000"
    assert len(list(quarantine.iterdir())) == 3
    with sqlite3.connect(inbox / ".facesieve" / "ledger.sqlite3") as db:
        db.execute("UPDATE decisions SET completed_at = '2000-01-01T00:00:00+00:00'")
    assert main(["purge", str(inbox), "--older-than", "30d"]) == 0
    assert list(quarantine.iterdir()) == []
    assert ledger_rows_purged(inbox) == [decision.id]


def ledger_rows_purged(inbox: Path) -> list[int]:
    with Ledger(inbox / ".facesieve" / "ledger.sqlite3") as ledger:
        return [row.id for row in ledger.rows() if row.purged_at is not None]


@pytest.mark.models
@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_every_engine_moves_samples_alike(tmp_path: Path, workers: str) -> None:
    """The local engine and the pool (real models in its workers): the same applier."""
    inbox = tmp_path / "inbox"
    kept = _sample(inbox, "000000000")
    (cat,) = copy_images(inbox / "00000", {"noface": [NOFACE]})
    cat = cat.rename(inbox / "00000" / "000000001.jpg")
    (inbox / "00000" / "000000001.txt").write_text("a cat")
    run = run_cli("scan", str(inbox), "--require", "face", "--workers", workers, "--json")
    assert run.code == 0, run.stderr
    by_name = {Path(r["path"]).name: r for r in run.records}
    assert sorted(by_name) == ["000000000.jpg", "000000001.jpg"]  # members are not judged
    assert by_name["000000000.jpg"]["action"] == "keep" and all(p.exists() for p in kept)
    quarantine = inbox / ".facesieve" / "quarantine" / "00000"
    assert sorted(p.name for p in quarantine.iterdir()) == ["000000001.jpg", "000000001.txt"]
    assert by_name["000000001.jpg"]["members"] == [str(quarantine / "000000001.txt")]


def test_a_version_4_ledger_gets_the_members_table_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as ledger:
        ledger.begin(
            path=tmp_path / "a.jpg",
            root=tmp_path,
            size=1,
            mtime_ns=0,
            mode=0o100644,
            sha256="0" * 64,
            faces=[],
            verdict="keep",
            reason="1 face found",
            action="keep",
            destination=None,
            models={},
            elapsed_ms=1.0,
        )
    with sqlite3.connect(path) as db:  # as facesieve before issue 17 left it
        db.execute("DROP TABLE members")
        db.execute("PRAGMA user_version=4")
    with Ledger(path) as ledger:
        (row,) = ledger.rows()
        assert ledger.members(row.id) == []
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 5
