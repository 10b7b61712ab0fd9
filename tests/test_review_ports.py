"""The review page's credentials never reach another port of the host.

A browser sends a host's cookies to every port of it, so a local user's server
on another loopback port, visited by the reviewer's browser, received the page's
cookie, which was the whole token: the same token then decided files. Here a
second server on another loopback port records everything the browser (a real
headless chromium, after opening the review page) sends it; every value is then
replayed against the review server, as every credential the page could take,
and nothing reads an image or decides. Besides: every route but the bare page
(and its script) refuses a request without the header, whatever else it carries.
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from facesieve.config import Config, ResolvedFolders
from facesieve.ledger.store import Ledger, LedgerRow
from facesieve.people.page import TOKEN_HEADER, create_app

from .conftest import DATA, is_adult, labelled
from .review_util import browser, review_server, wait_shown
from .test_restore import judged, setup

pytestmark = [pytest.mark.data]

REFUSED = {401, 403}


def _photos(count: int) -> list[Path]:
    rows = [r for r in labelled("fairface") if is_adult("fairface", r)][:count]
    return [DATA / "fairface" / r["file"] for r in rows]


def _in_review(tmp_path: Path, count: int = 2) -> tuple[ResolvedFolders, list[LedgerRow]]:
    """Real FairFace photos waiting in review, as the engine leaves them."""
    folders, ledger = setup(tmp_path)
    with ledger:
        rows = [
            judged(ledger, folders, photo.name, "review", content=photo.read_bytes())
            for photo in _photos(count)
        ]
    assert all(r.destination is not None and Path(r.destination).is_file() for r in rows)
    return folders, rows


def _still_waiting(folders: ResolvedFolders, rows: list[LedgerRow]) -> None:
    with Ledger(folders.ledger) as ledger:
        humans = [r for r in ledger.rows() if r.who is not None]
        assert humans == [], [(h.ref, h.label) for h in humans]
        for row in rows:
            now = ledger.get(row.id)
            assert now is not None and now.settled_by is None
    assert all(r.destination is not None and Path(r.destination).is_file() for r in rows)


# -- another local user's server, on another loopback port -------------------------------


@dataclass
class Spy:
    url: str
    received: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    results: dict[str, str] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)


def _spy_page(review_base: str, decision_id: int) -> bytes:
    """What the local user serves: it also tries, from the reviewer's browser, to load an
    image of the review server and to decide a file there (no-cors: no preflight)."""
    return f"""<!DOCTYPE html><html><head><title>spy</title></head><body><script>
var review = {json.dumps(review_base)}, id = {decision_id};
function report(what) {{ fetch('/result?' + what).catch(function () {{}}); }}
var img = new Image();
img.onload = function () {{ report('image=loaded'); }};
img.onerror = function () {{ report('image=refused'); }};
img.src = review + 'image/' + id;
fetch(review + 'api/decide', {{method: 'POST', mode: 'no-cors', credentials: 'include',
  headers: {{'Content-Type': 'text/plain'}}, body: JSON.stringify({{id: id, label: 'reject'}})}})
  .then(function () {{ report('decide=sent'); }}, function () {{ report('decide=failed'); }});
</script></body></html>""".encode()


@contextmanager
def spy_server(review_base: str, decision_id: int) -> Iterator[Spy]:
    """An http server on another loopback port that records every request's headers."""
    page = _spy_page(review_base, decision_id)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            spy.received.append((self.path, list(self.headers.items())))
            if self.path.startswith("/result?"):
                for key, values in urllib.parse.parse_qs(self.path.split("?", 1)[1]).items():
                    spy.results[key] = values[0]
                if {"image", "decide"} <= spy.results.keys():
                    spy.done.set()
            body = page if self.path.startswith("/visit") else b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    spy = Spy(f"http://127.0.0.1:{server.server_address[1]}/")
    thread = threading.Thread(target=server.serve_forever, name="spy-server", daemon=True)
    thread.start()
    try:
        yield spy
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


def _call(
    url: str, method: str = "GET", headers: dict[str, str] | None = None, body: Any = None
) -> int:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _values(received: list[tuple[str, list[tuple[str, str]]]]) -> set[str]:
    """Every value the spy got: each header's, each cookie's, each query parameter's."""
    values: set[str] = set()
    for path, headers in received:
        for _, value in urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query):
            values.add(value)
        for name, value in headers:
            values.add(value)
            if name.lower() == "cookie":
                for crumb in value.split(";"):
                    values.add(crumb.strip())
                    values.add(crumb.partition("=")[2].strip())
    return {v for v in values if v}


def _as_credentials(value: str) -> list[tuple[str, dict[str, str]]]:
    """Every way the review server could take `value` as a credential."""
    quoted = urllib.parse.quote(value, safe="")
    return [
        (f"?token={quoted}", {}),
        ("", {TOKEN_HEADER: value}),
        ("", {"Authorization": f"Bearer {value}"}),
        ("", {"Cookie": value}),
        ("", {"Cookie": f"facesieve_review={value}"}),
    ]


@pytest.mark.slow
def test_nothing_the_browser_sends_to_another_port_reads_or_decides(tmp_path: Path) -> None:
    folders, rows = _in_review(tmp_path)
    target = rows[0]
    with review_server(str(folders.root), "--who", "tester") as server, browser() as chromium:
        context = chromium.new_context()
        review = context.new_page()
        review.goto(server.url)
        wait_shown(review, target.id)
        with spy_server(server.base, target.id) as spy:
            # The reviewer's browser visits the local user's page, in a new tab and in the
            # review page's own tab.
            visitor = context.new_page()
            visitor.goto(f"{spy.url}visit")
            assert spy.done.wait(20), spy.results
            review.goto(f"{spy.url}same-tab?from=review")
            received = list(spy.received)
        context.close()

        everything = repr(received)
        assert server.token not in everything, "the token reached another port"
        assert spy.results["image"] == "refused"  # another port's page cannot load an image

        # Every value received, as every credential, and all of it at once: all refused.
        statuses: list[tuple[str, str, int]] = []
        image, decide, queue = (
            f"{server.base}image/{target.id}",
            f"{server.base}api/decide",
            f"{server.base}api/queue",
        )
        attempts: list[tuple[str, dict[str, str]]] = []
        for value in sorted(_values(received)):
            attempts += _as_credentials(value)
        for _, headers in received:
            attempts.append(("", dict(headers)))  # a request as the browser sent it
        for query, headers in attempts:
            shown = f"{query} {headers}"
            statuses.append(("image", shown, _call(image + query, headers=headers)))
            statuses.append(("queue", shown, _call(queue + query, headers=headers)))
            vote = {"id": target.id, "label": "reject"}
            statuses.append(("decide", shown, _call(decide + query, "POST", headers, vote)))
        assert len(statuses) > 30
        accepted = [s for s in statuses if s[2] not in REFUSED]
        assert accepted == [], accepted[:5]

        # The server answers the real header: the refusals above are not a dead server.
        assert _call(image, headers={TOKEN_HEADER: server.token}) == 200
    _still_waiting(folders, rows)


def test_the_page_opened_from_a_report_link_reuses_the_token_of_its_own_origin_only(
    tmp_path: Path,
) -> None:
    """The report links `#id=N` without the token: the page's origin kept it."""
    folders, rows = _in_review(tmp_path)
    with review_server(str(folders.root)) as server, browser() as chromium:
        context = chromium.new_context()
        page = context.new_page()
        page.goto(server.url)
        wait_shown(page, rows[0].id)
        assert "token" not in page.url  # out of the address bar and the history
        linked = context.new_page()
        linked.goto(f"{server.base}#id={rows[1].id}")
        wait_shown(linked, rows[1].id)
        # A browser that never opened the printed URL gets nothing.
        stranger = chromium.new_context().new_page()
        stranger.goto(f"{server.base}#id={rows[1].id}")
        stranger.wait_for_selector("body[data-state=refused]", timeout=20_000)
        assert "#token=" in stranger.inner_text("#message")
    _still_waiting(folders, rows)


# -- no route but the bare page answers without the header -----------------------------


def test_every_route_but_the_bare_page_refuses_a_request_without_the_header(
    tmp_path: Path,
) -> None:
    folders, rows = _in_review(tmp_path, count=1)
    token = "t" * 43
    app = create_app(Config(), folders, token, "tester")
    client = app.test_client()
    public = {"/", "/app.js"}
    bodies = {"/api/decide": {"id": rows[0].id, "label": "reject"}, "/api/undo": {"verdict_id": 1}}
    routes: list[tuple[str, str]] = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue  # Flask's default, a route of no use here: asserted gone below
        path = rule.rule.split("<", 1)[0] + (str(rows[0].id) if "<" in rule.rule else "")
        routes += [(method, path) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    wrong = [
        ("", {}),  # nothing at all
        (f"?token={token}", {}),  # the old URL's query
        ("", {"Cookie": f"facesieve_review={token}"}),  # the old cookie
        ("", {"Authorization": f"Bearer {token}"}),
        ("", {TOKEN_HEADER: "x" * 43}),
        ("", {TOKEN_HEADER: token[:-1]}),
    ]
    routes.sort(key=lambda route: route[1] in public)  # the guarded ones first
    for method, path in routes:
        for query, headers in wrong:
            sent = bodies.get(path)
            answer = client.open(path + query, method=method, headers=headers, json=sent)
            assert "Set-Cookie" not in answer.headers
            if path in public:
                assert answer.status_code == 200, (method, path)
                assert token not in answer.get_data(as_text=True)
            else:
                assert answer.status_code in REFUSED, (method, path, query, headers)
                assert answer.get_json()["error"]
        # No CORS preflight is answered: no other origin gets leave to send the header.
        preflight = client.options(
            path,
            headers={
                "Origin": "http://127.0.0.1:9",
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": TOKEN_HEADER.lower() + ", content-type",
            },
        )
        assert not 200 <= preflight.status_code < 300, (method, path)
        assert not [h for h, _ in preflight.headers if h.lower().startswith("access-control")]
    _still_waiting(folders, rows)
    # These are all the routes (Flask's default /static/ route is gone).
    assert {path for _, path in routes} == {
        "/",
        "/app.js",
        "/api/queue",
        f"/image/{rows[0].id}",
        "/api/decide",
        "/api/undo",
    }

    # The header alone opens every route.
    assert client.get("/api/queue", headers={TOKEN_HEADER: token}).status_code == 200
    picture = client.get(f"/image/{rows[0].id}", headers={TOKEN_HEADER: token})
    assert picture.status_code == 200 and picture.mimetype == "image/jpeg"
    assert picture.headers["Vary"] == TOKEN_HEADER
    assert "img-src blob:;" in picture.headers["Content-Security-Policy"]
