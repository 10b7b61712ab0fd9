"""Ledger rules live in `ledger/`: one reader over the plain ledger and its shards, the
helpers every command shares, and locks that never follow a planted link."""

from __future__ import annotations

import ast
import csv
import fnmatch
import os
import shutil
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import structlog

from facesieve.config import Config, ResolvedFolders
from facesieve.engines.local import Engine
from facesieve.errors import UnsafeFolderError
from facesieve.evaluation.human_eval import ledger_as_labelled_folder
from facesieve.intake.inbox import Inbox
from facesieve.judging.judge import Status
from facesieve.ledger.shards import ID_SPAN, LedgerUnion, ShardLock, id_base, shard_path
from facesieve.ledger.store import Ledger, policy_fingerprint
from facesieve.people.desk import Label, give_verdict, in_review
from facesieve.people.page import TOKEN_HEADER, create_app

from .conftest import DATA, PROJECT, is_adult, labelled
from .review_util import review_server
from .test_restore import judged, setup

PACKAGE = PROJECT / "daemon" / "facesieve"
LEDGER_HELPERS = {"Fate", "fate", "open_ledger", "restorable", "purgeable"}


def test_the_daemon_loads_no_command_module_for_ledger_helpers() -> None:
    script = (
        "import sys, facesieve.daemon.guard, facesieve.daemon.worker; "
        "print(sorted(m for m in sys.modules if m.startswith('facesieve.people.restore')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert loaded.stdout.strip() == "[]"


def test_ledger_helpers_are_imported_from_ledger_not_from_the_restore_command() -> None:
    wrong = []
    for module in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(module.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("restore"):
                names = {alias.name for alias in node.names} & LEDGER_HELPERS
                if names:
                    wrong.append(f"{module.relative_to(PACKAGE)}: {sorted(names)}")
    assert wrong == []


# -- one reader: the page and `learn --ledger` see what a Ray scan recorded ------------

# Enough FairFace adults that a few land in review under `require = man` at 0.97.
SAMPLE = 12
SHARD = 3


def _scan_into_shard(inbox: Path, analyzer: Any) -> tuple[Config, ResolvedFolders]:
    """A real `require = man` scan recorded as a Ray shard owner records it: the shard's
    ledger (`ledger-3.sqlite3`, ids above its id_base) and the applier acting on it.

    The plain ledger exists and is empty, as an earlier `watch` of the folder leaves it.
    """
    rows = labelled("fairface")
    adults = [DATA / "fairface" / r["file"] for r in rows if is_adult("fairface", r)][:SAMPLE]
    inbox.mkdir(parents=True)
    for image in adults:
        shutil.copy2(image, inbox / image.name)
    config = Config.model_validate({"policy": {"require": "man", "min_gender_confidence": 0.97}})
    folders = config.resolve_folders(inbox)
    Ledger(folders.ledger).close()
    file = shard_path(folders.ledger, SHARD)
    with Ledger(file, id_base=id_base(folders.ledger, file)) as shard:
        engine = Engine(config, analyzer, folders=folders, ledger=shard)
        outcomes = list(engine.process_many(Inbox.of(config, folders).walk()))
    assert all(o.status is Status.DECIDED for o in outcomes), outcomes
    return config, folders


@pytest.mark.models
@pytest.mark.data
def test_the_page_and_learn_ledger_see_files_a_ray_scan_put_in_review(
    tmp_path: Path, analyzer: Any
) -> None:
    config, folders = _scan_into_shard(tmp_path / "inbox", analyzer)
    with LedgerUnion.open_existing(folders.ledger) as union:
        waiting = [d.id for d in in_review(union)]
    assert len(waiting) >= 2, "the sample should put at least two photos in review"
    assert all(row_id > (SHARD + 1) * ID_SPAN for row_id in waiting)

    # `facesieve review` counts them on start ...
    with review_server(str(folders.root), "--who", "tester") as server:
        assert server.process.stderr is not None
        line = ""
        while "review page for" not in line:
            line = server.process.stderr.readline()
            assert line, "facesieve review ended without its start-up line"
        assert f"({len(waiting)} files in review" in line

    # ... and the page lists them, shows them and settles them.
    token = "t" * 40
    client = create_app(config, folders, token, "tester").test_client()
    queue = client.get("/api/queue", headers={TOKEN_HEADER: token})
    assert [item["id"] for item in queue.get_json()["items"]] == waiting
    assert client.get(f"/image/{waiting[0]}", headers={TOKEN_HEADER: token}).status_code == 200
    for row_id, label in zip(waiting[:2], ("keep", "reject"), strict=True):
        decided = client.post(
            "/api/decide", json={"id": row_id, "label": label}, headers={TOKEN_HEADER: token}
        )
        assert decided.status_code == 200, decided.get_json()

    # `learn --ledger` labels the images people settled in the shard.
    with ledger_as_labelled_folder(config, [folders.root]) as labelled_folder:
        labels = list(csv.DictReader((labelled_folder / "labels.csv").read_text().splitlines()))
    assert sorted(row["gender"] for row in labels) == ["female", "male"]


# -- locks never opened through a planted link ----------------------------------------


def _outside(tmp_path: Path) -> Path:
    target = tmp_path / "elsewhere" / "precious.txt"
    target.parent.mkdir()
    target.write_text("not facesieve's\n")
    return target


def _lock_shard(ledger_file: Path) -> None:
    ShardLock(ledger_file).acquire()


def _lock_plain(ledger_file: Path) -> None:
    Ledger(ledger_file, exclusive=True).close()


LOCKERS = {"shard": _lock_shard, "plain": _lock_plain}


def _ledger_file(tmp_path: Path, which: str) -> Path:
    state = tmp_path / "inbox" / ".facesieve"
    state.mkdir(parents=True)
    plain = state / "ledger.sqlite3"
    return shard_path(plain, 2) if which == "shard" else plain


@pytest.mark.parametrize("which", sorted(LOCKERS))
def test_a_lock_planted_as_a_symlink_is_refused_and_its_target_untouched(
    tmp_path: Path, which: str
) -> None:
    ledger_file = _ledger_file(tmp_path, which)
    target = _outside(tmp_path)
    lock = ledger_file.with_name(ledger_file.name + ".lock")
    lock.symlink_to(target)
    with pytest.raises(UnsafeFolderError, match="symlink"):
        LOCKERS[which](ledger_file)
    assert target.read_text() == "not facesieve's\n"

    # A dangling link: its target is not created either.
    lock.unlink()
    missing = target.with_name("created.txt")
    lock.symlink_to(missing)
    with pytest.raises(UnsafeFolderError, match="symlink"):
        LOCKERS[which](ledger_file)
    assert not missing.exists()


@pytest.mark.parametrize("which", sorted(LOCKERS))
def test_a_lock_planted_as_a_hard_link_is_refused_and_its_file_not_truncated(
    tmp_path: Path, which: str
) -> None:
    ledger_file = _ledger_file(tmp_path, which)
    target = _outside(tmp_path)
    os.link(target, ledger_file.with_name(ledger_file.name + ".lock"))
    with pytest.raises(UnsafeFolderError, match="one name"):
        LOCKERS[which](ledger_file)
    assert target.read_text() == "not facesieve's\n"


def test_a_shard_lock_in_a_symlinked_state_folder_is_refused(tmp_path: Path) -> None:
    elsewhere = _outside(tmp_path).parent
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / ".facesieve").symlink_to(elsewhere, target_is_directory=True)
    plain = tmp_path / "inbox" / ".facesieve" / "ledger.sqlite3"
    with pytest.raises(UnsafeFolderError, match="symlink"):
        ShardLock(shard_path(plain, 2)).acquire()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["precious.txt"]


# -- learn --ledger labels a verdict by the policy it was settled under ------------------


def _decided_under(ledger_path: Path, row_id: int, config: Config) -> None:
    """Record that a decision was made under `config`'s policy, as the engine records it."""
    with sqlite3.connect(ledger_path) as db:
        db.execute(
            "UPDATE decisions SET policy_fingerprint = ? WHERE id = ?",
            (policy_fingerprint(config.policy.model_dump()), row_id),
        )


def test_learn_ledger_labels_verdicts_by_the_policy_they_were_decided_under(
    tmp_path: Path,
) -> None:
    folders, ledger = setup(tmp_path)
    man = Config.model_validate({"policy": {"require": "man"}})
    stricter = Config.model_validate({"policy": {"require": "man", "min_gender_confidence": 0.97}})
    settled = {}
    with ledger:
        for name, judged_under, settled_with, label in (
            # judged under man, approved by a person whose config says nothing of gender
            ("kept.jpg", man, Config(), Label.KEEP),
            ("rejected.jpg", man, man, Label.REJECT),
            ("other-policy.jpg", stricter, stricter, Label.KEEP),
            ("no-face.jpg", stricter, stricter, Label.NO_FACE),
        ):
            decision = judged(ledger, folders, name, "review")
            _decided_under(folders.ledger, decision.id, judged_under)
            done = give_verdict(ledger, settled_with, decision.id, label, "tester")
            settled[name] = done.verdict_id

    # The config now says woman: a keep under man is still a man.
    woman = Config.model_validate({"policy": {"require": "woman"}})
    with (
        structlog.testing.capture_logs() as logs,
        ledger_as_labelled_folder(woman, [folders.root]) as labelled_folder,
    ):
        labels = list(csv.DictReader((labelled_folder / "labels.csv").read_text().splitlines()))
    by_id = {int(row["file"].split(".")[0]): (row["gender"], row["label"]) for row in labels}
    assert by_id == {
        settled["kept.jpg"]: ("male", ""),
        settled["rejected.jpg"]: ("female", ""),
        settled["no-face.jpg"]: ("", "no_face"),  # no human face, under any policy
    }
    # Decided under thresholds this config does not have: left out, and counted.
    left_out = [e for e in logs if e["event"] == "learn_left_out"]
    assert [e["id"] for e in left_out] == [settled["other-policy.jpg"]]
    summary = [e for e in logs if e["event"] == "learn_policy_unknown"]
    assert len(summary) == 1 and summary[0]["unknown_policy"] == 1


# -- the review page's HTML, CSS and JS are package data --------------------------------

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
    "img-src blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def test_the_review_page_is_served_from_its_package_data_files(tmp_path: Path) -> None:
    static = PACKAGE / "people" / "static"
    html, css, js = (static / f"review.{kind}" for kind in ("html", "css", "js"))
    # No page text left in the module: it is in the files, which the wheel ships.
    source = (PACKAGE / "people" / "page.py").read_text(encoding="utf-8")
    assert "<!DOCTYPE" not in source and "addEventListener" not in source
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))
    shipped = project["tool"]["setuptools"]["package-data"]["facesieve.people"]
    for file in (html, css, js):
        assert any(fnmatch.fnmatch(f"static/{file.name}", pattern) for pattern in shipped)

    folders, ledger = setup(tmp_path)
    ledger.close()
    token = "t" * 40
    client = create_app(Config(), folders, token, "tester").test_client()
    page = client.get("/")
    assert page.headers["Content-Security-Policy"] == CSP
    expected = html.read_text().replace("{{STYLE}}", css.read_text())
    assert page.get_data(as_text=True) == expected
    assert token not in page.get_data(as_text=True)
    script = client.get("/app.js")
    assert script.headers["Content-Security-Policy"] == CSP
    assert script.mimetype == "text/javascript"
    assert script.get_data(as_text=True) == js.read_text()


# -- ledger ids beyond SQLite's integers are "no such id", never a 500 ------------------


def test_review_ids_beyond_sqlite_integers_are_not_found_or_refused(tmp_path: Path) -> None:
    folders, ledger = setup(tmp_path)
    with ledger:
        decision = judged(ledger, folders, "waiting.jpg", "review")
    token = "t" * 40
    client = create_app(Config(), folders, token, "tester").test_client()
    for huge in (2**63, 2**64, 10**30):
        assert client.get(f"/image/{huge}", headers={TOKEN_HEADER: token}).status_code == 404
    assert client.get(f"/image/{2**63 - 1}", headers={TOKEN_HEADER: token}).status_code == 404

    def post(path: str, body: dict[str, Any] | str) -> int:
        if isinstance(body, str):  # JSON as Python's parser reads it: Infinity is a number
            sent = client.post(
                path, data=body, content_type="application/json", headers={TOKEN_HEADER: token}
            )
        else:
            sent = client.post(path, json=body, headers={TOKEN_HEADER: token})
        assert sent.is_json and "error" in sent.get_json()
        return sent.status_code

    for bad in (2**63, 2**64, -(2**70), 0):
        assert post("/api/decide", {"id": bad, "label": "keep"}) == 400
        assert post("/api/undo", {"verdict_id": bad}) == 400
    assert post("/api/decide", '{"id": Infinity, "label": "keep"}') == 400
    # An id in range that no ledger file holds: nothing to settle (409), as any unknown id.
    assert post("/api/decide", {"id": 50 * ID_SPAN + 1, "label": "keep"}) == 409
    assert post("/api/undo", {"verdict_id": 50 * ID_SPAN + 1}) == 409
    # The file in review is untouched by all of it.
    assert decision.destination is not None and Path(decision.destination).is_file()
    with Ledger(folders.ledger) as ledger:
        assert ledger.get(2**64) is None
        assert [row.id for row in ledger.rows()] == [decision.id]
