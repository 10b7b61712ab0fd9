"""`facesieve review`: the review desk, a local web page that settles files in review by key.

One image at a time, large, with its face boxes and the model's reading; `k`
keeps, `r` rejects, `n` marks "no human face", `u` undoes the last decision of
the page. The next images are fetched and decoded while the current one is shown.
Each key is one POST; the decision itself is `desk.py`'s (crash-safe move,
pending/done ledger rows, one transaction against a second page or process).

Served by Flask on werkzeug's threaded server, loopback only unless
`[review] allow_remote`. The random token printed on start rides in the URL's
fragment (`#token=...`), which a browser never sends to any server; the page's
script keeps it (in memory and in its origin's localStorage) and sends it in the
`X-Facesieve-Token` header of every call and image fetch. Every request but the
bare page and its script needs that header; without it: 403. No cookie: a
browser sends cookies to every port of the host, so another local user's server
on another loopback port would receive one. A header is also what a cross-site
form or image cannot send (CSRF), and no CORS preflight is answered.
Image bytes from the review folder never reach the browser as they are: they are
decoded and re-encoded as JPEG, so only pixels cross.
"""

from __future__ import annotations

import hmac
import io
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, jsonify, request
from PIL import Image

from ..config import Config, ResolvedFolders
from ..errors import AlreadyHasVerdictError, FacesieveError, HumanVerdictError
from ..judging.images import load_image
from ..ledger.shards import LedgerUnion
from ..ledger.store import MAX_ROW_ID, LedgerRow
from ..logs import get_logger
from .desk import Label, give_verdict, in_review
from .desk import undo as undo_verdict

__all__ = ["TOKEN_HEADER", "create_app", "url_of"]

TOKEN_HEADER = "X-Facesieve-Token"  # noqa: S105 - a header name, not a secret
# The bare page and its script: the same static text for everyone, no data, no token.
_PUBLIC = frozenset({"page", "script"})
_IMAGE_SIDE = 1600  # longest side sent to the browser


def _static(name: str) -> str:
    """One of the page's files (package data in `people/static/`)."""
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


# The page's own style is inline (the CSP allows no style sheet from anywhere).
_PAGE = _static("review.html").replace("{{STYLE}}", _static("review.css"))
_JS = _static("review.js")


def create_app(config: Config, folders: ResolvedFolders, token: str, who: str) -> Flask:
    """The review page's WSGI app for one ledger; `token` guards every request."""
    # No static route: the page's files are served by the two routes below only.
    app = Flask("facesieve.people.page", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024
    desk = _Desk(config, folders, token, who)
    app.teardown_appcontext(desk.close)
    app.before_request(desk.guard)
    app.after_request(_headers)
    # The endpoint names are the routes' own: `_PUBLIC` names the two open ones.
    app.get("/", endpoint="page")(_page)
    app.get("/app.js", endpoint="script")(_script)
    app.get("/api/queue", endpoint="queue")(desk.queue)
    # Beyond SQLite's integers no row can be: not found, like any id of no row.
    app.get(f"/image/<int(min=1, max={MAX_ROW_ID}):decision_id>", endpoint="image")(desk.image)
    app.post("/api/decide", endpoint="decide")(desk.decide)
    app.post("/api/undo", endpoint="undo")(desk.undo)
    return app


def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
        "img-src blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    if "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"
    return response


def _page() -> Response:
    # The same text for everyone: the token is in the URL's fragment, read by the script.
    return Response(_PAGE, mimetype="text/html")


def _script() -> Response:
    return Response(_JS, mimetype="text/javascript")


class _Desk:
    """What the routes of one app share: its ledger, token, reviewer and decision lock."""

    def __init__(self, config: Config, folders: ResolvedFolders, token: str, who: str) -> None:
        self.config = config
        self.folders = folders
        self.token = token
        self.who = who
        self.decide_lock = threading.Lock()  # one decision at a time in this process
        self.log = get_logger()

    def ledger(self) -> LedgerUnion:
        # The plain ledger and its shards: files a Ray scan put in review wait here too.
        if "ledger" not in g:
            g.ledger = LedgerUnion.open_existing(self.folders.ledger)
        opened: LedgerUnion = g.ledger
        return opened

    def close(self, _: BaseException | None) -> None:
        opened = g.pop("ledger", None)
        if opened is not None:
            opened.close()

    def _given(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.token.encode())

    def guard(self) -> Response | None:
        if request.method == "OPTIONS":
            # A CORS preflight is never answered: another origin (another port of this
            # host, too) cannot get leave to send the header.
            self.log.warning("review_refused", path=request.path, method=request.method)
            return _error(405, "no CORS here")
        if request.endpoint in _PUBLIC:
            return None
        # Only the header: no cookie, no query string, nothing a browser would send
        # on its own to this port, or to another.
        if not self._given(request.headers.get(TOKEN_HEADER)):
            self.log.warning("review_refused", path=request.path, method=request.method)
            return _error(403, "a valid token is needed: use the URL facesieve review printed")
        return None

    def queue(self) -> Response:
        items = [_item(d) for d in in_review(self.ledger())]
        return jsonify({"who": self.who, "ledger": str(self.folders.ledger), "items": items})

    def image(self, decision_id: int) -> Response:
        row = self.ledger().get(decision_id)
        if row is None or row.destination is None or row.action != "review":
            return _error(404, f"no file in review with ledger id {decision_id}")
        try:
            # Held descriptors (no symlink followed) and the budgeted decoder: a
            # bomb in review answers 404 within the budget, never holds the page.
            decoded = load_image(Path(row.destination), self.config.images, max_side=_IMAGE_SIDE)
        except FacesieveError as error:
            return _error(404, str(error))
        buffer = io.BytesIO()
        Image.fromarray(decoded.rgb).save(buffer, "JPEG", quality=88)
        response = Response(buffer.getvalue(), mimetype="image/jpeg")
        # Face boxes are in the original's pixels; the page scales them by these.
        response.headers["X-Image-Width"] = str(decoded.width)
        response.headers["X-Image-Height"] = str(decoded.height)
        response.headers["Cache-Control"] = "private, max-age=600"
        # A cached image answers only a request with the same header: a page on another
        # port of this host (the same site, so the same cache) fetching it gets a 403.
        response.headers["Vary"] = TOKEN_HEADER
        return response

    def decide(self) -> Response:
        body = request.get_json(silent=True) or {}
        try:
            decision_id = _row_id(body["id"])
            label = Label(str(body["label"]))
        except (KeyError, TypeError, ValueError):
            return _error(400, "send {id: N, label: keep|reject|no_face}")
        with self.decide_lock:
            try:
                done = give_verdict(self.ledger(), self.config, decision_id, label, self.who)
            except AlreadyHasVerdictError as error:
                return _error(409, str(error))
            except HumanVerdictError as error:
                return _error(500, str(error))
        return jsonify(done.as_dict())

    def undo(self) -> Response:
        body = request.get_json(silent=True) or {}
        try:
            verdict_id = _row_id(body["verdict_id"])
        except (KeyError, TypeError, ValueError):
            return _error(400, "send {verdict_id: N}")
        with self.decide_lock:
            try:
                done = undo_verdict(self.ledger(), verdict_id, self.who, self.config)
            except AlreadyHasVerdictError as error:
                return _error(409, str(error))
            except HumanVerdictError as error:
                return _error(500, str(error))
        return jsonify({**done.as_dict(), "item": _item(done.decision)})


def _row_id(value: Any) -> int:
    """A ledger id sent by the page: what `int` makes of it, if SQLite can hold it.

    Raises:
        ValueError: not a number, or beyond any row id (a 400, not a 500 from the
            database); TypeError: not a number at all.
    """
    try:
        row_id = int(value)
    except OverflowError as error:  # JSON's Infinity
        raise ValueError(f"not a ledger id: {value!r}") from error
    if not 1 <= row_id <= MAX_ROW_ID:
        raise ValueError(f"no ledger id can be {row_id}")
    return row_id


def _error(status: int, message: str) -> Response:
    response = jsonify({"error": message})
    response.status_code = status
    return response


def _item(decision: LedgerRow) -> dict[str, Any]:
    return {
        "id": decision.id,
        "name": Path(decision.path).name,
        "path": decision.path,
        "in_review": decision.destination,
        "reason": decision.reason,
        "faces": decision.faces,
        "decided_at": decision.decided_at,
    }


def url_of(host: str, port: int, token: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    # The fragment: never sent to a server, nor in a Referer; the page's script reads it.
    return f"http://{shown}:{port}/#token={token}"
