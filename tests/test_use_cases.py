"""The three use cases end to end, with the real CLI, models and photos.

The photos are fixed picks from ../shared/data whose labels the models agree
with at high confidence (measured), so each file has one right place to end up.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from .cli_util import run_cli, tree
from .conftest import DATA, labelled

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]

MEN = {
    "fairface": ["fairface_0010.jpg", "fairface_0034.jpg"],
    "utkface": ["25_0_3_20170104214432805.jpg.chip.jpg", "26_0_0_20170105162452859.jpg.chip.jpg"],
}
WOMEN = {
    "fairface": ["fairface_0002.jpg", "fairface_0004.jpg"],
    "utkface": ["25_1_0_20170104234942017.jpg.chip.jpg", "25_1_4_20161221193646742.jpg.chip.jpg"],
}
CATS = {"noface": ["cat.4001.jpg", "cat.4003.jpg"]}


def build_inbox(root: Path) -> dict[str, str]:
    """A mixed folder: people at the top and nested, cats in a subfolder, one text file."""
    labelled("fairface")
    kinds = {}
    for kind, picks in (("man", MEN), ("woman", WOMEN), ("cat", CATS)):
        for folder, names in picks.items():
            for index, name in enumerate(names):
                relative = Path(name) if index == 0 else Path("nested", folder, name)
                if kind == "cat":
                    relative = Path("pets", name)
                target = root / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(DATA / folder / name, target)
                kinds[str(relative)] = kind
    # A JPEG's first bytes and then nothing decodable: unreadable (not `not_image`).
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 and then not an image")
    kinds["broken.jpg"] = "unreadable"
    return kinds


def expected_places(kinds: dict[str, str], require: str) -> dict[str, str]:
    wanted = {"face": {"man", "woman"}, "man": {"man"}, "woman": {"woman"}}[require]
    return {
        relative: ("" if kind in wanted else ".facesieve/quarantine/") + relative
        for relative, kind in kinds.items()
    }


@pytest.mark.parametrize("require", ["face", "man", "woman"])
def test_use_case(tmp_path: Path, deepface_home: Path, require: str) -> None:
    inbox = tmp_path / "inbox"
    kinds = build_inbox(inbox)
    before = tree(inbox)

    run = run_cli("scan", str(inbox), "--require", require, "--json")
    assert run.code == 0, run.stderr[-3000:]

    after = tree(inbox)
    places = expected_places(kinds, require)
    assert after == {places[rel]: sha for rel, sha in before.items()}
    assert len(run.records) == len(kinds)
    for record in run.records:
        assert Path(record["path"]).is_absolute()
        relative = str(Path(record["path"]).relative_to(inbox.resolve()))
        expected_kept = places[relative] == relative
        assert (record["verdict"] == "keep") == expected_kept, record
        assert record["action"] == ("keep" if expected_kept else "quarantine")

    ledger = sqlite3.connect(inbox / ".facesieve" / "ledger.sqlite3")
    rows = ledger.execute("SELECT path, verdict, state, sha256, faces, models FROM decisions")
    recorded = {str(Path(r[0]).relative_to(inbox.resolve())): r for r in rows}
    assert set(recorded) == set(kinds)
    assert all(r[2] == "done" for r in recorded.values())
    assert all(json.loads(r[5])["detector"] == "libfacedetection" for r in recorded.values())

    decisions = [e for e in run.events if e.get("event") == "decision"]
    assert len(decisions) == len(kinds)
    assert all("elapsed_ms" in e and "sha256" in e for e in decisions)

    again = run_cli("scan", str(inbox), "--require", require, "--json")
    assert again.code == 0
    assert again.records == []  # everything left in place is already decided
    assert tree(inbox) == after


def test_dry_run_touches_nothing(tmp_path: Path, deepface_home: Path) -> None:
    inbox = tmp_path / "inbox"
    kinds = build_inbox(inbox)
    before = {p: p.stat().st_mtime_ns for p in inbox.rglob("*")}

    run = run_cli("scan", str(inbox), "--require", "man", "--dry-run", "--json")
    assert run.code == 0, run.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in inbox.rglob("*")} == before
    assert not (inbox / ".facesieve").exists()
    actions = {str(Path(r["path"]).relative_to(inbox.resolve())): r["action"] for r in run.records}
    assert actions == {
        rel: "keep" if kind == "man" else "quarantine" for rel, kind in kinds.items()
    }


def test_delete_is_opt_in_and_accepted_folder(tmp_path: Path, deepface_home: Path) -> None:
    inbox = tmp_path / "inbox"
    kinds = build_inbox(inbox)
    config = tmp_path / "facesieve.toml"
    config.write_text(
        '[folders]\naccepted = "accepted"\n'
        '[actions]\nreject = "delete"\n'
        '[policy]\nrequire = "woman"\n'
    )
    run = run_cli("scan", str(inbox), "--config", str(config), "--json")
    assert run.code == 0, run.stderr[-3000:]
    women = {rel for rel, kind in kinds.items() if kind == "woman"}
    assert set(tree(tmp_path / "accepted")) == women
    remaining = set(tree(inbox))
    # Rejected files are gone; the unreadable one is quarantined, not deleted.
    assert remaining == {".facesieve/quarantine/broken.jpg"}


def test_check_prints_the_contract_and_changes_nothing(tmp_path: Path, deepface_home: Path) -> None:
    inbox = tmp_path / "inbox"
    build_inbox(inbox)
    before = tree(inbox)
    images = [inbox / "fairface_0010.jpg", inbox / "fairface_0002.jpg", inbox / "pets/cat.4001.jpg"]
    run = run_cli("check", *map(str, images), "--require", "man", "--json")
    assert run.code == 1, run.stderr[-3000:]  # two of three not kept
    assert tree(inbox) == before and not (inbox / ".facesieve").exists()
    assert [r["verdict"] for r in run.records] == ["keep", "reject", "reject"]
    for record in run.records:
        assert set(record) == {"path", "verdict", "reason", "faces"}
        assert Path(record["path"]).is_absolute()
        for face in record["faces"]:
            assert set(face) == {"box", "confidence", "gender", "gender_confidence"}
            assert len(face["box"]) == 4 and all(isinstance(v, int) for v in face["box"])
            assert 0 <= face["confidence"] <= 1
            assert face["gender"] in ("man", "woman")
            assert 0.5 <= face["gender_confidence"] <= 1
    assert run.records[0]["faces"][0]["gender"] == "man"


def test_check_writes_only_facesieves_own_lines_on_stderr(
    tmp_path: Path, deepface_home: Path
) -> None:
    import os
    import subprocess
    import sys

    labelled("fairface")
    photo = tmp_path / "photo.jpg"
    shutil.copy2(DATA / "fairface" / "fairface_0010.jpg", photo)
    # As a user or the unit runs it: no TF_CPP_MIN_LOG_LEVEL set by the caller.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    # MTCNN runs on TensorFlow, whose native runtime logs through absl.
    config = tmp_path / "mtcnn.toml"
    config.write_text('[models]\ndetector = "mtcnn"\n')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "facesieve",
            "check",
            str(photo),
            "--config",
            str(config),
            "--log-level",
            "debug",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("keep")
    lines = result.stderr.splitlines()
    # Every line is one of facesieve's JSON events (stderr is not a terminal here).
    events = [json.loads(line) for line in lines]
    assert {"models_loaded", "decision"} <= {e["event"] for e in events}
    # TensorFlow's native log lines, if it printed any, arrive as facesieve events.
    native = [e for e in events if e["event"] == "native_log"]
    assert all(e["message"] and e["source"] for e in native)
