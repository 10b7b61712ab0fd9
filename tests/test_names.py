"""File names that are not UTF-8: judged, recorded, restored and shown without loss."""

from __future__ import annotations

import base64
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from facesieve.ledger.store import Ledger
from facesieve.paths import json_safe, readable

from .cli_util import run_cli
from .conftest import DATA, labelled

BAD = os.fsdecode(b"bad\xff\xfename.jpg")  # not UTF-8: Python holds it surrogate-escaped


def test_the_ledger_stores_and_finds_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / BAD
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        row_id = ledger.begin(
            path=path,
            root=tmp_path,
            size=1,
            mtime_ns=1,
            mode=0o100644,
            sha256="0" * 64,
            faces=[],
            verdict="reject",
            reason=f"cannot move {path}",
            action="quarantine",
            destination=tmp_path / "q" / BAD,
            models={},
            elapsed_ms=1.0,
        )
        ledger.complete(row_id, tmp_path / "q" / BAD)
        ledger.complete(ledger.begin_restore(ledger.decisions()[0]), path)
        assert ledger.last_done(path) is not None
        row = ledger.get(row_id)
        assert row is not None
        assert row.path == str(path) and row.destination == str(tmp_path / "q" / BAD)
        assert os.fsencode(row.path).endswith(b"bad\xff\xfename.jpg")
    db = sqlite3.connect(tmp_path / "l.sqlite3")
    stored = db.execute("SELECT path FROM decisions").fetchone()
    assert stored[0] == os.fsencode(path)  # the exact bytes, as a BLOB


def test_json_shows_a_readable_form_and_the_exact_bytes() -> None:
    record = json_safe({"path": f"/in/{BAD}", "fine": "/in/фото.jpg", "faces": []})
    assert record["path"] == "/in/bad\\xff\\xfename.jpg"
    assert base64.b64decode(record["path_bytes"]) == b"/in/bad\xff\xfename.jpg"
    assert record["fine"] == "/in/фото.jpg" and "fine_bytes" not in record
    assert readable("/in/фото.jpg") == "/in/фото.jpg"


@pytest.mark.models
@pytest.mark.data
@pytest.mark.slow
def test_scan_check_stats_report_restore_with_a_name_that_is_not_utf8(
    tmp_path: Path, deepface_home: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cat = DATA / "noface" / labelled("noface")[0]["file"]
    shutil.copy2(cat, inbox / BAD)
    shutil.copy2(cat, inbox / "plain.jpg")
    exact = os.fsencode(inbox / BAD)

    check = run_cli("check", str(inbox / BAD), "--json")
    assert check.code == 1, check.stderr[-3000:]
    assert base64.b64decode(check.records[0]["path_bytes"]) == exact
    assert "bad\\xff\\xfename.jpg" in check.records[0]["path"]

    scan = run_cli("scan", str(inbox), "--json")
    assert scan.code == 0, scan.stderr[-3000:]
    assert sorted(r["verdict"] for r in scan.records) == ["reject", "reject"]
    quarantined = inbox / ".facesieve" / "quarantine" / BAD
    assert quarantined.is_file() and not (inbox / BAD).exists()
    decided = [e for e in scan.events if e.get("event") == "decision"]
    assert any(base64.b64decode(e.get("path_bytes", "")) == exact for e in decided)

    again = run_cli("scan", str(inbox))  # the ledger still opens and reads
    assert again.code == 0, again.stderr[-3000:]

    stats = run_cli("stats", str(inbox))
    assert stats.code == 0, stats.stderr[-3000:]
    page = tmp_path / "report.html"
    report = run_cli("report", str(inbox), "--html", str(page))
    assert report.code == 0, report.stderr[-3000:]
    assert "bad\\xff\\xfename.jpg" in page.read_text(encoding="utf-8")

    restore = run_cli("restore", str(inbox), "--all", "--json")
    assert restore.code == 0, restore.stderr[-3000:]
    assert (inbox / BAD).read_bytes() == cat.read_bytes()
    assert exact in [base64.b64decode(r.get("to_bytes", "")) for r in restore.records]
