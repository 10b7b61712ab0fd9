"""Ignored names are in progress, not invisible (issue 18).

`[watch] ignore` (`.*`, `*.part`, ...) kept `x.jpg.part`, `.x.jpg` and `..jpg` out of
every scan and watch for ever, with nothing logged or counted. Now a file with an
ignored name is judged like any other once it has been quiet for
`[watch] ignore_stale_seconds`; until then it is counted (scan summary, the reconcile
event, the `facesieve_ignored_files` gauge) and logged (each file at debug, their
number at info). `watch` looks again when one goes stale, without a restart.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from facesieve.config import Config
from facesieve.errors import ConfigError

from .cli_util import run_cli
from .conftest import DATA, labelled
from .daemon_util import Daemon, write_config
from .test_metrics import free_port, scrape

_IGNORED = ("x.jpg.part", ".x.jpg", "..jpg")
_CATS = ("cat.4001.jpg", "cat.4003.jpg")


def _put(folder: Path, names: tuple[str, ...]) -> None:
    """No-face photos under `names` (require=face rejects them once judged)."""
    labelled("noface")
    for index, name in enumerate(names):
        shutil.copyfile(DATA / "noface" / _CATS[index % len(_CATS)], folder / name)


def _wait_until_quiet(paths: list[Path], seconds: float) -> None:
    """Until each file's ctime is more than `seconds` old (a clock condition, polled)."""
    changed = max(p.lstat().st_ctime_ns for p in paths) / 1e9
    deadline = time.monotonic() + seconds + 30
    while time.time() < changed + seconds + 0.1:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    return next(e for e in events if e.get("event") == "scan_summary")


def test_ignore_stale_seconds_is_validated() -> None:
    assert Config().watch.ignore_stale_seconds == 600.0
    for bad in (-1.0, 3601.0, float("inf"), float("nan")):
        with pytest.raises((ConfigError, ValueError)):
            Config.model_validate({"watch": {"ignore_stale_seconds": bad}})


@pytest.mark.models
@pytest.mark.data
@pytest.mark.slow
def test_scan_counts_ignored_files_then_judges_them_once_stale(
    tmp_path: Path, deepface_home: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    _put(inbox, ("plain.jpg", *_IGNORED))
    # A writer can set mtime anywhere: one far in the future must not keep it in progress.
    future = time.time() + 100 * 365 * 86400
    os.utime(inbox / "..jpg", (future, future))

    # The defaults: an ignored name in progress is not judged, but counted and logged.
    first = run_cli("scan", str(inbox), "--json")
    assert first.code == 0, first.stderr[-3000:]
    assert [Path(r["path"]).name for r in first.records] == ["plain.jpg"]
    assert _summary(first.events)["ignored"] == 3
    assert "ignored 3" in first.stderr
    counted = [e for e in first.events if e.get("event") == "ignored_files"]
    assert [e["files"] for e in counted] == [3] and counted[0]["level"] == "info"
    for name in _IGNORED:
        assert (inbox / name).exists()

    # Quiet for ignore_stale_seconds: judged like any other, each first logged at debug.
    stale = 1.5
    config = write_config(
        tmp_path / "c.toml",
        inbox,
        watch={"ignore_stale_seconds": stale, "settle_seconds": 0.2},
        logging={"level": "debug"},
    )
    _wait_until_quiet([inbox / name for name in _IGNORED], stale)
    _put(inbox, ("fresh.jpg.part",))
    young = run_cli("scan", str(inbox), "--config", str(config), "--json")
    assert young.code == 0, young.stderr[-3000:]
    debug = {Path(e["path"]).name for e in young.events if e.get("event") == "ignored"}
    assert debug == {"fresh.jpg.part"}  # the others were already stale: judged
    by_name = {Path(r["path"]).name: r for r in young.records}
    assert set(by_name) == set(_IGNORED)
    for name, record in by_name.items():
        assert (record["verdict"], record["action"]) == ("reject", "quarantine"), name
        assert not (inbox / name).exists()
    assert _summary(young.events)["ignored"] == 1

    _wait_until_quiet([inbox / "fresh.jpg.part"], stale)
    last = run_cli("scan", str(inbox), "--config", str(config), "--json")
    assert [(Path(r["path"]).name, r["verdict"]) for r in last.records] == [
        ("fresh.jpg.part", "reject")
    ]
    assert _summary(last.events)["ignored"] == 0
    quarantine = inbox / ".facesieve" / "quarantine"
    assert sorted(p.name for p in quarantine.iterdir()) == sorted(
        ["plain.jpg", "fresh.jpg.part", *_IGNORED]
    )


@pytest.mark.models
@pytest.mark.data
@pytest.mark.slow
def test_scan_from_a_list_counts_an_ignored_name(tmp_path: Path, deepface_home: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    _put(inbox, ("plain.jpg", ".x.jpg"))
    manifest = tmp_path / "list"
    manifest.write_text("plain.jpg\n.x.jpg\n")
    run = run_cli("scan", str(inbox), "--from-list", str(manifest), "--json")
    assert run.code == 0, run.stderr[-3000:]
    assert [Path(r["path"]).name for r in run.records] == ["plain.jpg"]
    assert _summary(run.events)["ignored"] == 1


@pytest.mark.models
@pytest.mark.data
@pytest.mark.slow
def test_watch_judges_an_ignored_file_once_stale_without_a_restart(
    tmp_path: Path, deepface_home: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    stale = 3.0
    address = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path / "c.toml",
        inbox,
        # A timed pass far away: only going stale can bring these files to judgement.
        watch={"ignore_stale_seconds": stale, "settle_seconds": 0.2, "reconcile_interval": 3600},
        logging={"level": "debug"},
        metrics={"address": address},
    )
    daemon = Daemon(config, tmp_path / "log.jsonl").start()
    try:
        daemon.wait_for("ready")
        daemon.wait_for("metrics_serving")
        _put(inbox, (".x.jpg",))
        written = (inbox / ".x.jpg").lstat().st_ctime_ns / 1e9
        # Written later: still in progress when the first one goes stale.
        deadline = time.monotonic() + 30
        while time.time() < written + stale / 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        _put(inbox, ("x.jpg.part",))
        first = daemon.wait_for("decision", 1, timeout=60)
        # The gauge shows what the latest pass found in progress: the second file.
        passes = daemon.events("reconciled")
        gauge = scrape(address)["facesieve_ignored_files"]
        if daemon.events("reconciled") == passes:  # no pass ran in between
            assert gauge == passes[-1]["ignored"] == 1
        decisions = daemon.wait_for("decision", 2, timeout=60)
        assert scrape(address)["facesieve_ignored_files"] == 0
    finally:
        code = daemon.stop()
    assert code == 0
    assert Path(first[0]["path"]).name == ".x.jpg"
    by_name = {Path(e["path"]).name: e for e in decisions}
    assert set(by_name) == {".x.jpg", "x.jpg.part"}
    assert all(e["verdict"] == "reject" for e in decisions), decisions
    decided = datetime.fromisoformat(by_name[".x.jpg"]["timestamp"]).timestamp()
    assert decided >= written + stale - 0.05  # in progress until then
    reasons = [e["reason"] for e in daemon.events("reconcile_requested")]
    assert reasons.count("ignored file gone stale") >= 2
    assert any(e["ignored"] == 1 for e in daemon.events("reconciled"))
    assert max(daemon.decisions_by_path().values()) == 1
    quarantine = inbox / ".facesieve" / "quarantine"
    assert sorted(p.name for p in quarantine.iterdir()) == [".x.jpg", "x.jpg.part"]
