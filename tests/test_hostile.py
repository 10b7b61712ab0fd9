"""A hostile inbox of 50 entries made here: every file a verdict within the budget,
no crash, nothing lost."""

from __future__ import annotations

import base64
import hashlib
import os
from collections import Counter
from pathlib import Path

import pytest

from .cli_util import run_cli
from .conftest import DATA, labelled
from .images_util import hostile_set

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]

DECODE_TIMEOUT = 10.0


def exact_name(record: dict[str, object], root: Path) -> str:
    raw = record.get("path_bytes")
    path = os.fsdecode(base64.b64decode(str(raw))) if raw else str(record["path"])
    return str(Path(path).relative_to(root))


def contents(root: Path) -> Counter[str]:
    found: Counter[str] = Counter()
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink() and "ledger" not in name:
                found[hashlib.sha256(path.read_bytes()).hexdigest()] += 1
    return found


def test_every_hostile_file_gets_a_verdict_within_the_budget(
    tmp_path: Path, deepface_home: Path
) -> None:
    labelled("fairface")
    inbox = tmp_path / "inbox"
    expect = hostile_set(inbox, DATA / "fairface" / "fairface_0010.jpg")
    (inbox / "too-large.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(5_000_000))
    expect["too-large.jpg"] = "unreadable"
    assert len(expect) >= 48
    config = tmp_path / "c.toml"
    config.write_text(
        f"[images]\ndecode_timeout = {DECODE_TIMEOUT}\nmax_file_bytes = 4000000\n"
        "max_jpeg_scans = 100\n"
    )
    before = contents(inbox)

    run = run_cli("scan", str(inbox), "--config", str(config), "--json")

    assert run.code == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    got = {exact_name(r, inbox): r for r in run.records}
    for name, wanted in expect.items():
        if wanted == "skipped":
            assert name not in got
            continue
        assert name in got, f"{name!r} got no verdict"
        verdict = got[name]["verdict"]
        if wanted == "judged":
            assert verdict in ("keep", "reject", "review"), (name, got[name])
        elif wanted == "verdict":
            assert verdict in ("keep", "reject", "review", "unreadable"), (name, got[name])
        else:
            assert verdict == wanted, (name, got[name])
    assert "too large" in str(got["too-large.jpg"]["reason"])
    assert set(got) == {n for n, w in expect.items() if w != "skipped"}
    summary = next(e for e in run.events if e.get("event") == "scan_summary")
    assert summary["error"] == 0 and summary["skipped"] == 1  # the FIFO
    assert summary["not_image"] == sum(w == "not_image" for w in expect.values())
    slowest = max(e["elapsed_ms"] for e in run.events if e.get("event") == "decision")
    assert slowest < (DECODE_TIMEOUT + 20) * 1000
    assert contents(inbox) == before  # nothing lost: every file in the inbox or moved within it
