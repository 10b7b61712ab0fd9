"""`stats`: counts per verdict and per day, throughput and the latest decisions."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog

from facesieve.cli.main import main

from .test_restore import judged, set_moved_at, setup


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def build(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """Seven decisions over three days with known processing times, one restored."""
    folders, ledger = setup(tmp_path)
    now = datetime.now(UTC)
    plan = [
        ("a.jpg", "keep", timedelta(days=2, hours=1), 10.0),
        ("b.jpg", "reject", timedelta(days=2), 20.0),
        ("c.jpg", "reject", timedelta(days=1), 30.0),
        ("d.jpg", "unreadable", timedelta(days=1), 40.0),
        ("e.jpg", "review", timedelta(hours=3), 50.0),
        ("f.jpg", "keep", timedelta(minutes=30), 60.0),
        ("g.jpg", "reject", timedelta(minutes=5), 1000.0),
    ]
    ids = {}
    for name, verdict, age, elapsed in plan:
        row = judged(ledger, folders, name, verdict)
        ids[name] = row.id
        set_moved_at(folders.ledger, row.id, now - age)
        with sqlite3.connect(folders.ledger) as db:
            db.execute("UPDATE decisions SET elapsed_ms = ? WHERE id = ?", (elapsed, row.id))
    ledger.close()
    assert main(["restore", str(folders.root), "--id", str(ids["c.jpg"])]) == 0
    return folders.root, ids


def day(age: timedelta) -> str:
    return (datetime.now(UTC) - age).date().isoformat()


def test_stats_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, ids = build(tmp_path)
    capsys.readouterr()

    assert main(["stats", str(root), "--json", "--latest", "3"]) == 0

    figures = json.loads(capsys.readouterr().out)
    assert figures["ledger"] == str(root / ".facesieve" / "ledger.sqlite3")
    assert figures["decisions"] == 7  # the restore is not a decision
    assert figures["verdicts"] == {
        "keep": 2,
        "reject": 3,
        "review": 1,
        "unreadable": 1,
        "not_image": 0,
    }
    now = {k: v for k, v in figures["now"].items() if v}
    assert now == {"left in place": 2, "quarantined": 3, "in review": 1, "restored": 1}
    assert figures["not_done"] == {"pending": 0, "failed": 0}

    per_day: dict[str, dict[str, int]] = {}
    for row in figures["per_day"]:
        per_day[row.pop("day")] = row
    expected: dict[str, dict[str, int]] = {}
    for age, verdict in [
        (timedelta(days=2, hours=1), "keep"),
        (timedelta(days=2), "reject"),
        (timedelta(days=1), "reject"),
        (timedelta(days=1), "unreadable"),
        (timedelta(hours=3), "review"),
        (timedelta(minutes=30), "keep"),
        (timedelta(minutes=5), "reject"),
    ]:
        counts = expected.setdefault(
            day(age),
            {"keep": 0, "reject": 0, "review": 0, "unreadable": 0, "not_image": 0, "total": 0},
        )
        counts[verdict] += 1
        counts["total"] += 1
    assert per_day == expected
    assert list(per_day) == sorted(per_day, reverse=True)  # newest day first

    speed = figures["throughput"]
    assert speed["processing_ms"] == {"mean": 172.9, "p50": 40.0, "p95": 1000.0, "max": 1000.0}
    assert speed["images_per_second"] == round(1000 / (1210 / 7), 1)
    assert (speed["last_hour"], speed["last_24h"], speed["last_7d"]) == (2, 3, 7)

    latest = figures["latest"]
    assert [item["id"] for item in latest] == [ids["g.jpg"], ids["f.jpg"], ids["e.jpg"]]
    assert latest[0]["verdict"] == "reject" and latest[0]["now"] == "quarantined"
    assert latest[0]["where"] == str(root / ".facesieve" / "quarantine" / "g.jpg")


def test_stats_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, ids = build(tmp_path)
    capsys.readouterr()

    assert main(["stats", str(root), "--days", "1"]) == 0

    out = capsys.readouterr().out
    assert "decisions  7: keep 2, reject 3, review 1, unreadable 1" in out
    assert "restored 1" in out
    assert "172.9 ms per image (p50 40.0, p95 1000.0, max 1000.0): 5.8 images/s" in out
    assert "2 in the last hour, 3 in 24 h, 7 in 7 days" in out
    days = [line for line in out.splitlines() if line[:4].isdigit()]
    assert days == [f"{day(timedelta(0))}" + "".join(f"{n:>11}" for n in (1, 1, 1, 0, 3))] or (
        len(days) == 1  # just after midnight UTC, "today" holds fewer
    )
    assert f"#{ids['g.jpg']:<6}" in out and "'" + str(root / "g.jpg") + "'" in out


def test_stats_on_an_empty_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folders, ledger = setup(tmp_path)
    ledger.close()
    assert main(["stats", str(folders.root), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["decisions"] == 0 and figures["per_day"] == [] and figures["latest"] == []
    assert figures["throughput"]["processing_ms"] is None
    assert main(["stats", str(folders.root)]) == 0
    assert "decisions  0" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("count", "p50", "p95"),
    [
        # Nearest rank: the ceil(share * n)-th smallest value.
        (10, 50.0, 100.0),  # p50: the 5th of 10 (5 * 10 ms); p95: the 10th (ceil 9.5)
        (20, 100.0, 190.0),  # p50: the 10th of 20; p95: the 19th (0.95 * 20 = 19 exactly)
        (1, 10.0, 10.0),
    ],
)
def test_percentiles_are_nearest_rank(tmp_path: Path, count: int, p50: float, p95: float) -> None:
    from facesieve.people.stats import collect

    folders, ledger = setup(tmp_path)
    for index in range(count):
        row = judged(ledger, folders, f"{index:02d}.jpg", "keep")
        with sqlite3.connect(folders.ledger) as db:
            db.execute(
                "UPDATE decisions SET elapsed_ms = ? WHERE id = ?", (10.0 * (index + 1), row.id)
            )
    figures = collect(ledger)
    ledger.close()
    timing = figures["throughput"]["processing_ms"]
    assert (timing["p50"], timing["p95"], timing["max"]) == (p50, p95, 10.0 * count)
