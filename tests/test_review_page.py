"""The review page in a real headless chromium, on a real `--require man` scan of FairFace photos.

Keys are pressed as a person presses them; the test then reads where each file
is and what the ledger says. Also: two pages deciding one file act on it once,
and no request passes without the token.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from facesieve.config import ResolvedFolders
from facesieve.ledger.store import Ledger, LedgerRow
from facesieve.people.desk import in_review

from .conftest import DATA, PROJECT, is_adult, labelled
from .review_util import browser, review_server, scan_for_review, wait_shown

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]

# Enough adults that several land in review under `require = man` (a third or so).
SAMPLE = 24


def _fairface_adults() -> list[Path]:
    rows = labelled("fairface")
    return [DATA / "fairface" / r["file"] for r in rows if is_adult("fairface", r)][:SAMPLE]


@pytest.fixture
def scanned(tmp_path: Path, analyzer: Any) -> ResolvedFolders:
    folders: ResolvedFolders = scan_for_review(tmp_path / "inbox", _fairface_adults(), analyzer)
    return folders


def waiting(folders: ResolvedFolders) -> list[LedgerRow]:
    with Ledger(folders.ledger) as ledger:
        return in_review(ledger)


def ledger_rows(folders: ResolvedFolders) -> dict[int, LedgerRow]:
    with Ledger(folders.ledger) as ledger:
        return {row.id: row for row in ledger.rows()}


def test_keys_decide_and_undo_puts_file_and_ledger_back(
    scanned: ResolvedFolders, tmp_path: Path
) -> None:
    queue = waiting(scanned)
    assert len(queue) >= 4, "the sample should put at least four photos in review"
    first, second, third, fourth = queue[:4]
    with review_server(str(scanned.root), "--who", "tester") as server, browser() as chromium:
        page = chromium.new_page(viewport={"width": 1280, "height": 800})
        page.goto(server.url)
        wait_shown(page, first.id)
        boxes = page.locator("#frame .box").count()
        assert boxes == len(first.faces)
        assert page.inner_text("#reason") == first.reason
        assert page.inner_text("#who") == "tester"

        shot = tmp_path / "review.png"
        page.screenshot(path=str(shot))
        if os.environ.get("FACESIEVE_UPDATE_DOCS"):
            from PIL import Image

            with Image.open(shot) as image:  # 256 colours: a small PNG for the repository
                image.convert("RGB").quantize(256).save(PROJECT / "docs" / "review.png")

        page.keyboard.press("k")
        wait_shown(page, second.id)
        page.keyboard.press("r")
        wait_shown(page, third.id)
        page.keyboard.press("n")
        wait_shown(page, fourth.id)

        rows = ledger_rows(scanned)
        humans = {r.ref: r for r in rows.values() if r.who is not None}
        assert {ref: (h.label, h.who, h.state) for ref, h in humans.items()} == {
            first.id: ("keep", "tester", "done"),
            second.id: ("reject", "tester", "done"),
            third.id: ("no_face", "tester", "done"),
        }
        assert Path(first.path).is_file()  # no accepted folder: back where it was judged
        for row in (second, third):
            assert (scanned.quarantine / Path(row.path).name).is_file()
        for row in (first, second, third):
            assert row.destination is not None and not Path(row.destination).exists()
            assert rows[row.id].settled_by == humans[row.id].id

        page.keyboard.press("u")  # the "no face" goes back to review
        wait_shown(page, third.id)
        page.keyboard.press("u")  # and the reject
        wait_shown(page, second.id)

        rows = ledger_rows(scanned)
        for row in (second, third):
            assert row.destination is not None and Path(row.destination).is_file()
            assert not (scanned.quarantine / Path(row.path).name).exists()
            assert rows[row.id].settled_by is None
            assert rows[humans[row.id].id].undone_by is not None
        assert rows[first.id].settled_by == humans[first.id].id
        assert Path(first.path).is_file()
        assert [r.id for r in waiting(scanned)] == [second.id, third.id, *[r.id for r in queue[3:]]]
        assert page.inner_text("#left") == str(len(queue) - 1)

    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 800)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 1000  # a photo, not a blank page


def test_two_pages_deciding_one_file_act_once(scanned: ResolvedFolders) -> None:
    queue = waiting(scanned)
    assert len(queue) >= 2
    first, second = queue[:2]
    with review_server(str(scanned.root)) as server, browser() as chromium:
        one, two = chromium.new_page(), chromium.new_context().new_page()
        for page in (one, two):
            page.goto(server.url)
            wait_shown(page, first.id)
        one.keyboard.press("k")
        wait_shown(one, second.id)
        two.keyboard.press("r")  # the same file, already kept by the first page
        wait_shown(two, second.id)
        assert "not applied" in two.inner_text("#message")

    rows = ledger_rows(scanned)
    humans = [r for r in rows.values() if r.ref == first.id and r.who is not None]
    assert [(h.label, h.state) for h in humans] == [("keep", "done")]
    assert Path(first.path).is_file()
    assert not (scanned.quarantine / Path(first.path).name).exists()


def _status(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> int:
    data = json.dumps({"id": 1, "label": "keep"}).encode() if method == "POST" else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_no_token_no_page_and_no_decision(scanned: ResolvedFolders) -> None:
    queue = waiting(scanned)
    before = ledger_rows(scanned)
    with review_server(str(scanned.root)) as server:
        base, token = server.base, server.token
        assert _status(server.url) == 200
        assert _status(base) == 200  # the bare page: no data, no token in it
        assert _status(f"{base}api/queue", headers={"X-Facesieve-Token": token}) == 200
        # Only the header: the token in the query string (or a cookie) opens nothing.
        assert _status(f"{base}api/queue?token={token}") == 403
        assert _status(f"{base}api/queue") == 403
        assert _status(f"{base}api/queue?token=wrong{token}") == 403
        assert _status(f"{base}image/{queue[0].id}") == 403
        assert _status(f"{base}image/{queue[0].id}?token={token}") == 403
        # A POST needs the token in its header: in the URL (a cross-site form) is not enough.
        assert _status(f"{base}api/decide?token={token}", "POST") == 403
        assert _status(f"{base}api/decide", "POST", {"X-Facesieve-Token": "x" * 43}) == 403
    assert ledger_rows(scanned) == before
    assert all(r.destination and Path(r.destination).is_file() for r in queue)
