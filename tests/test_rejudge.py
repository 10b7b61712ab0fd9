"""After a policy change, `scan` warns and `scan --rejudge` judges exactly the files decided under
the old policy; a person's verdict is never judged again. Real models, real photos, the real CLI.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from .cli_util import run_cli
from .conftest import DATA, labelled

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]

PEOPLE = [
    "fairface_0010.jpg",
    "fairface_0034.jpg",
    "fairface_0002.jpg",
    "fairface_0004.jpg",
    "fairface_0016.jpg",
    "fairface_0022.jpg",
]
CAT = "cat.4001.jpg"


def decided_rows(ledger: Path) -> list[tuple[int, str, str, str | None]]:
    with sqlite3.connect(ledger) as db:
        return list(
            db.execute(
                "SELECT id, path, verdict, policy_fingerprint FROM decisions "
                "WHERE state = 'done' AND action NOT IN ('restore', 'undo') ORDER BY id"
            )
        )


def test_rejudge_judges_exactly_the_files_decided_under_the_old_policy(tmp_path: Path) -> None:
    labelled("fairface")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in PEOPLE:
        shutil.copy2(DATA / "fairface" / name, inbox / name)
    shutil.copy2(DATA / "noface" / CAT, inbox / CAT)
    ledger = inbox / ".facesieve" / "ledger.sqlite3"

    first = run_cli("scan", str(inbox), "--require", "face", "--json")
    assert first.code == 0, first.stderr[-3000:]
    kept = {r["path"] for r in first.records if r["verdict"] == "keep"}
    moved = {r["path"] for r in first.records if r["action"] in ("quarantine", "review")}
    assert kept == {str(inbox / n) for n in PEOPLE} and moved == {str(inbox / CAT)}

    same = run_cli("scan", str(inbox), "--require", "face", "--json")
    assert (same.code, same.records) == (0, [])
    assert "another policy" not in same.stderr

    changed = run_cli("scan", str(inbox), "--require", "man", "--json")
    assert (changed.code, changed.records) == (0, [])
    assert f"warning: {len(PEOPLE) + 1} files were decided under another policy" in changed.stderr
    assert f"({len(PEOPLE)} kept, 1 in review or quarantine)" in changed.stderr

    rejudged = run_cli("scan", str(inbox), "--require", "man", "--rejudge", "--json")
    assert rejudged.code == 0, rejudged.stderr[-3000:]
    assert sorted(r["path"] for r in rejudged.records) == sorted(kept)
    women = {r["path"] for r in rejudged.records if r["verdict"] != "keep"}
    assert women and all(not Path(p).exists() for p in women)  # moved away under `man`

    # Now only the cat in quarantine is from the old policy; `all` brings it back and judges it.
    again = run_cli("scan", str(inbox), "--require", "man", "--json")
    assert again.records == []
    assert "warning: 1 files were decided under another policy" in again.stderr
    everything = run_cli("scan", str(inbox), "--require", "man", "--rejudge", "all", "--json")
    assert [(r["path"], r["verdict"]) for r in everything.records] == [(str(inbox / CAT), "reject")]
    last = run_cli("scan", str(inbox), "--require", "man", "--json")
    assert last.records == [] and "another policy" not in last.stderr

    rows = decided_rows(ledger)
    fingerprints = {fp for _, _, _, fp in rows}
    assert len(fingerprints) == 2  # the `face` policy and the `man` one
    assert len(rows) == 2 * (len(PEOPLE) + 1)  # each file judged once under each
