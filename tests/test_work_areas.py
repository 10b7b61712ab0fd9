"""A writer's work folder is in progress, not invisible (intake/inbox).

img2dataset's `_tmp/` was never entered under its profile (set, or picked by `auto`
from a `00000.parquet`): any uploader could keep an unjudged photo by writing it
there. Now a file in a work folder is judged once quiet for
`[watch] ignore_stale_seconds`, counted and logged as in progress until then, as an
ignored name is (tests/test_ignored_names.py), in scan, reconciliation and watch.
Real models, real no-face photos.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from .cli_util import run_cli
from .conftest import DATA, labelled
from .daemon_util import Daemon, write_config

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]

_CAT = "cat.4001.jpg"


def _plant(inbox: Path, relative: str) -> Path:
    """A no-face photo at `relative` (require = face rejects it once judged)."""
    labelled("noface")
    path = inbox / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DATA / "noface" / _CAT, path)
    return path


def _wait_until_quiet(path: Path, seconds: float) -> None:
    """Until the file's ctime is more than `seconds` old (a clock condition, polled)."""
    changed = path.lstat().st_ctime_ns / 1e9
    deadline = time.monotonic() + seconds + 30
    while time.time() < changed + seconds + 0.1:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _config(path: Path, inbox: Path, layout: str, **watch: float) -> Path:
    written = write_config(path, inbox, watch=watch)
    # `inbox` is write_config's own argument: the [inbox] section is added here.
    written.write_text(written.read_text() + f'[inbox]\nlayout = "{layout}"\n')
    return written


def _summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    return next(e for e in events if e.get("event") == "scan_summary")


def test_scan_counts_a_file_in_tmp_then_judges_it_once_stale(
    tmp_path: Path, deepface_home: Path
) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "00000").mkdir(parents=True)
    (inbox / "00000.parquet").write_bytes(b"PAR1")  # img2dataset's mark: auto picks it
    planted = _plant(inbox, "_tmp/planted.jpg")

    first = run_cli("scan", str(inbox), "--json")  # the defaults: 600 s
    assert first.code == 0, first.stderr[-3000:]
    assert "layout img2dataset" in first.stderr
    assert first.records == []
    assert _summary(first.events)["ignored"] == 1
    counted = [e for e in first.events if e.get("event") == "ignored_files"]
    assert [e["files"] for e in counted] == [1]
    assert planted.exists()

    stale = 1.5
    config = _config(
        tmp_path / "c.toml", inbox, "auto", ignore_stale_seconds=stale, settle_seconds=0.2
    )
    _wait_until_quiet(planted, stale)
    again = run_cli("scan", str(inbox), "--config", str(config), "--json")
    assert again.code == 0, again.stderr[-3000:]
    assert [(Path(r["path"]).name, r["verdict"], r["action"]) for r in again.records] == [
        ("planted.jpg", "reject", "quarantine")
    ]
    assert _summary(again.events)["ignored"] == 0
    assert not planted.exists()
    assert (inbox / ".facesieve" / "quarantine" / "_tmp" / "planted.jpg").is_file()


def test_watch_judges_a_file_in_tmp_once_stale(tmp_path: Path, deepface_home: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    stale = 3.0
    config = _config(
        tmp_path / "c.toml",
        inbox,
        "img2dataset",
        ignore_stale_seconds=stale,
        settle_seconds=0.2,
        reconcile_interval=3600,  # a timed pass far away: only going stale brings it
    )
    daemon = Daemon(config, tmp_path / "log.jsonl").start()
    try:
        daemon.wait_for("ready")
        planted = _plant(inbox, "_tmp/planted.jpg")
        written = planted.lstat().st_ctime_ns / 1e9
        (decision,) = daemon.wait_for("decision", 1, timeout=60)
    finally:
        code = daemon.stop()
    assert code == 0
    assert Path(decision["path"]) == planted
    assert (decision["verdict"], decision["action"]) == ("reject", "quarantine"), decision
    decided = datetime.fromisoformat(decision["timestamp"]).timestamp()
    assert decided >= written + stale - 0.05  # in progress until then
    reasons = [e["reason"] for e in daemon.events("reconcile_requested")]
    assert "ignored file gone stale" in reasons
    assert not planted.exists()
