"""`report --html`: exactly the ledger's non-kept files, self-contained, checked in a real browser.

A real scan of a mixed folder feeds the page; headless Chromium (Debian's
`chromium`) loads it from disk, runs its script, and the test reads back the DOM
it rendered and a screenshot.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
import structlog

from facesieve.cli.main import main

from .cli_util import run_cli
from .conftest import DATA
from .test_restore import judged, set_moved_at, setup
from .tools_util import require_tool

ODD_NAME = "<b>&\"quote'\nnew line.jpg"


@dataclass
class Scanned:
    inbox: Path
    page: Path
    html: str


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory, deepface_home: Path) -> Scanned:
    """One real scan (`require = "man"`) of the use-case folder plus an oddly named cat."""
    from .test_use_cases import build_inbox

    inbox = tmp_path_factory.mktemp("report") / "inbox"
    build_inbox(inbox)
    shutil.copyfile(DATA / "noface" / "cat.4003.jpg", inbox / "pets" / ODD_NAME)
    scan = run_cli("scan", str(inbox), "--require", "man", "--json")
    assert scan.code == 0, scan.stderr[-3000:]
    page = inbox.parent / "report.html"
    report = run_cli("report", str(inbox), "--html", str(page))
    assert report.code == 0, report.stderr[-3000:]
    return Scanned(inbox, page, page.read_text(encoding="utf-8"))


class _Items(HTMLParser):
    """Every item of the page: its attributes, face boxes, restore command and texts."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[dict[str, object]] = []
        self._code = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        classes = (found.get("class") or "").split()
        if tag == "article" and "item" in classes:
            self.items.append({**found, "boxes": 0, "restore": None, "text": []})
        elif self.items and tag == "div" and "box" in classes:
            self.items[-1]["boxes"] += 1  # type: ignore[operator]
        elif self.items and tag == "code" and "restore" in classes:
            self._code = True

    def handle_endtag(self, tag: str) -> None:
        self._code = False

    def handle_data(self, data: str) -> None:
        if self.items:
            if self._code:
                self.items[-1]["restore"] = data
            self.items[-1]["text"].append(data)  # type: ignore[union-attr]


def items_of(html: str) -> list[dict[str, object]]:
    parser = _Items()
    parser.feed(html)
    return parser.items


def not_kept(inbox: Path) -> dict[int, tuple[str, int]]:
    """Ledger id -> (verdict, number of faces) of every decision that was not `keep`."""
    with sqlite3.connect(inbox / ".facesieve" / "ledger.sqlite3") as db:
        rows = db.execute(
            "SELECT id, verdict, faces FROM decisions WHERE state = 'done' "
            "AND action != 'restore' AND verdict != 'keep'"
        )
        return {r[0]: (r[1], len(json.loads(r[2]))) for r in rows}


@pytest.mark.models
@pytest.mark.data
@pytest.mark.slow
def test_the_report_lists_exactly_the_non_kept_files(scanned: Scanned) -> None:
    expected = not_kept(scanned.inbox)
    assert len(expected) == 8  # 4 women, 3 cats, 1 unreadable
    items = items_of(scanned.html)
    assert {int(str(i["id"])[1:]): i["data-verdict"] for i in items} == {
        k: verdict for k, (verdict, _) in expected.items()
    }
    assert len(items) == len(expected)  # each once
    for item in items:
        row_id = int(str(item["id"])[1:])
        verdict, faces = expected[row_id]
        assert item["restore"] == f"facesieve restore {scanned.inbox} --id {row_id}"
        assert item["data-fate"] == "quarantined"
        assert item["boxes"] == faces  # a box drawn for every face found
        if verdict == "reject" and faces:
            assert "woman" in "".join(item["text"])  # type: ignore[arg-type]
    women = [i for i in items if i["boxes"]]
    assert len(women) == 4


@pytest.mark.models
@pytest.mark.data
@pytest.mark.slow
def test_the_report_is_self_contained_and_escapes_names(scanned: Scanned) -> None:
    html = scanned.html
    assert not re.search(r"https?:", html, re.IGNORECASE)
    assert not re.search(r"<(link|iframe|object|embed)\b", html, re.IGNORECASE)
    sources = re.findall(r"""\bsrc\s*=\s*["']?([^"'\s>]*)""", html)
    assert sources and all(s.startswith("data:image/jpeg;base64,") for s in sources)
    assert "default-src 'none'" in html  # the browser itself refuses any fetch
    assert "<b>&" not in html
    assert "&lt;b&gt;&amp;&quot;quote&#x27;\nnew line.jpg" in html
    odd = [i for i in items_of(html) if ODD_NAME in "".join(i["text"])]  # type: ignore[arg-type]
    assert len(odd) == 1 and odd[0]["boxes"] == 0


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium as root, with a fresh profile and nothing that phones home."""
    executable = require_tool("chromium", "chromium")
    with tempfile.TemporaryDirectory(prefix="facesieve-chromium-") as profile:
        return subprocess.run(
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def rendered(page: Path, fragment: str = "") -> str:
    result = chromium("--dump-dom", page.as_uri() + fragment)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'data-ready="yes"' in result.stdout, "the page's script did not run"
    return result.stdout


@pytest.mark.models
@pytest.mark.data
@pytest.mark.slow
def test_the_report_renders_in_headless_chromium(scanned: Scanned, tmp_path: Path) -> None:
    expected = not_kept(scanned.inbox)
    dom = rendered(scanned.page)
    items = items_of(dom)
    assert len(items) == len(expected)
    assert not any("hidden" in item for item in items)
    assert f'<output id="shown">{len(expected)}</output>' in dom
    summary = re.search(r'<table id="summary">.*?</table>', dom, re.DOTALL)
    assert summary is not None
    assert re.search(r'<tfoot>.*<td class="n total">12</td>', summary.group(0), re.DOTALL)
    assert '<td class="n reject">7</td>' in summary.group(0)

    # The verdict filter, run by the page's own script.
    dom = rendered(scanned.page, "#verdict=unreadable")
    items = items_of(dom)
    visible = [i for i in items if "hidden" not in i]
    assert [i["data-verdict"] for i in visible] == ["unreadable"]
    assert '<output id="shown">1</output>' in dom

    shot = tmp_path / "report.png"
    result = chromium(f"--screenshot={shot}", "--window-size=1280,1600", scanned.page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 1600)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 1000  # photos, not a blank page


# -- on a ledger built by hand: what became of each file -----------------------------


@pytest.fixture
def _fresh_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("_fresh_logging")
def test_the_report_says_what_became_of_each_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime, timedelta

    folders, ledger = setup(tmp_path)
    judged(ledger, folders, "kept.jpg", "keep")
    restored = judged(ledger, folders, "restored.jpg")
    purged = judged(ledger, folders, "purged.jpg")
    waiting = judged(ledger, folders, "unsure.jpg", "review")
    old = judged(ledger, folders, "old.jpg")
    ledger.close()
    set_moved_at(folders.ledger, purged.id, datetime.now(UTC) - timedelta(days=60))
    set_moved_at(folders.ledger, old.id, datetime.now(UTC) - timedelta(days=90))
    root = str(folders.root)
    assert main(["restore", root, "--id", str(restored.id)]) == 0
    assert main(["purge", root, "--older-than", "70d"]) == 0  # only old.jpg
    assert main(["purge", root, "--older-than", "30d"]) == 0  # and now purged.jpg
    page = tmp_path / "out" / "report.html"

    assert main(["report", root, "--html", str(page)]) == 0

    items = {int(str(i["id"])[1:]): i for i in items_of(page.read_text())}
    assert {k: i["data-fate"] for k, i in items.items()} == {
        restored.id: "restored",
        purged.id: "purged",
        waiting.id: "in review",
        old.id: "purged",
    }
    # A file in review: the question is keep or reject, not restore.
    assert all(i["restore"] is None for i in items.values())
    html = page.read_text()
    assert f'href="http://127.0.0.1:8750/#id={waiting.id}"' in html
    for verb in ("approve", "reject"):
        assert f'<code class="settle">facesieve {verb} {root} --id {waiting.id}</code>' in html

    assert main(["report", root, "--html", str(page), "--since", "30d"]) == 0
    assert set(int(str(i["id"])[1:]) for i in items_of(page.read_text())) == {
        restored.id,
        waiting.id,
    }
    capsys.readouterr()
