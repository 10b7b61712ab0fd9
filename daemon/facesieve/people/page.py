"""`facesieve review`: the review desk, a local web page that settles files in review by key.

One image at a time, large, with its face boxes and the model's reading; `k`
keeps, `r` rejects, `n` marks "no human face", `u` undoes the last decision of
the page. The next images are fetched and decoded while the current one is shown.
Each key is one POST; the decision itself is `settle.py`'s (crash-safe move,
pending/done ledger rows, one transaction against a second page or process).

Served by Flask on werkzeug's threaded server, loopback only unless
`[review] allow_remote`. Every request needs the random token printed on start
(in the URL, as Jupyter does; the page then holds it in a SameSite=Lax,
HttpOnly cookie); without it: 403. A POST needs the token in the
`X-Facesieve-Token` header as well, which a cross-site form cannot send (CSRF).
Image bytes from the review folder never reach the browser as they are: they are
decoded and re-encoded as JPEG, so only pixels cross.
"""

from __future__ import annotations

import argparse
import hmac
import io
import logging
import secrets
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from flask import Flask, Response, g, jsonify, request
from PIL import Image

from ..config import Config, ResolvedFolders, review_folders, split_address
from ..errors import AlreadySettledError, ExitCode, FacesieveError, SettleError
from ..judging.images import load_image
from ..ledger.store import Ledger, LedgerRow
from ..logs import get_logger
from .desk import Label, add_who_argument, default_who, in_review, recover_settlements, settle
from .desk import undo as undo_verdict
from .restore import add_folder_argument

__all__ = ["TOKEN_HEADER", "configure_review", "create_app", "run_review", "url_of"]

TOKEN_HEADER = "X-Facesieve-Token"  # noqa: S105 - a header name, not a secret
_COOKIE = "facesieve_review"
_IMAGE_SIDE = 1600  # longest side sent to the browser
_TICK = 0.25


def create_app(config: Config, folders: ResolvedFolders, token: str, who: str) -> Flask:
    """The review page's WSGI app for one ledger; `token` guards every request."""
    app = Flask("facesieve.people.page")
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024
    decide_lock = threading.Lock()  # one decision at a time in this process
    log = get_logger()

    def ledger() -> Ledger:
        if "ledger" not in g:
            g.ledger = Ledger.open_existing(folders.ledger)
        opened: Ledger = g.ledger
        return opened

    @app.teardown_appcontext
    def _close(_: BaseException | None) -> None:
        opened = g.pop("ledger", None)
        if opened is not None:
            opened.close()

    def _given(value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), token.encode())

    @app.before_request
    def _guard() -> Response | None:
        if request.method == "POST":
            # The header, not the cookie: a cross-site form sends cookies, never headers.
            allowed = _given(request.headers.get(TOKEN_HEADER))
        else:
            allowed = _given(request.args.get("token")) or _given(request.cookies.get(_COOKIE))
        if not allowed:
            log.warning("review_refused", path=request.path, method=request.method)
            return _error(403, "a valid token is needed: use the URL facesieve review printed")
        return None

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
            "img-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        if "Cache-Control" not in response.headers:
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/")
    def page() -> Response:
        response = Response(_PAGE.replace("{{TOKEN}}", token), mimetype="text/html")
        # Lax, not Strict: the report's links (another site, a file) must reach the
        # page. Lax cookies ride only on top-level GETs, which change nothing; a POST
        # needs the header besides.
        response.set_cookie(_COOKIE, token, httponly=True, samesite="Lax")
        return response

    @app.get("/app.js")
    def script() -> Response:
        return Response(_JS, mimetype="text/javascript")

    @app.get("/api/queue")
    def queue() -> Response:
        items = [_item(d) for d in in_review(ledger())]
        return jsonify({"who": who, "ledger": str(folders.ledger), "items": items})

    @app.get("/image/<int:decision_id>")
    def image(decision_id: int) -> Response:
        row = ledger().get(decision_id)
        if row is None or row.destination is None or row.action != "review":
            return _error(404, f"no file in review with ledger id {decision_id}")
        try:
            # Held descriptors (no symlink followed) and the budgeted decoder: a
            # bomb in review answers 404 within the budget, never holds the page.
            decoded = load_image(Path(row.destination), config.images, max_side=_IMAGE_SIDE)
        except FacesieveError as error:
            return _error(404, str(error))
        buffer = io.BytesIO()
        Image.fromarray(decoded.rgb).save(buffer, "JPEG", quality=88)
        response = Response(buffer.getvalue(), mimetype="image/jpeg")
        # Face boxes are in the original's pixels; the page scales them by these.
        response.headers["X-Image-Width"] = str(decoded.width)
        response.headers["X-Image-Height"] = str(decoded.height)
        response.headers["Access-Control-Expose-Headers"] = "X-Image-Width, X-Image-Height"
        response.headers["Cache-Control"] = "private, max-age=600"
        return response

    @app.post("/api/decide")
    def decide() -> Response:
        body = request.get_json(silent=True) or {}
        try:
            decision_id = int(body["id"])
            label = Label(str(body["label"]))
        except (KeyError, TypeError, ValueError):
            return _error(400, "send {id: N, label: keep|reject|no_face}")
        with decide_lock:
            try:
                done = settle(ledger(), config, decision_id, label, who)
            except AlreadySettledError as error:
                return _error(409, str(error))
            except SettleError as error:
                return _error(500, str(error))
        return jsonify(done.as_dict())

    @app.post("/api/undo")
    def undo() -> Response:
        body = request.get_json(silent=True) or {}
        try:
            verdict_id = int(body["verdict_id"])
        except (KeyError, TypeError, ValueError):
            return _error(400, "send {verdict_id: N}")
        with decide_lock:
            try:
                done = undo_verdict(ledger(), verdict_id, who)
            except AlreadySettledError as error:
                return _error(409, str(error))
            except SettleError as error:
                return _error(500, str(error))
        return jsonify({**done.as_dict(), "item": _item(done.decision)})

    return app


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
    return f"http://{shown}:{port}/?token={token}"


# -- the command ---------------------------------------------------------------------


def configure_review(parser: argparse.ArgumentParser) -> None:
    add_folder_argument(parser)
    parser.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="where to serve the page (default: review.address, 127.0.0.1:8750; port 0: any)",
    )
    add_who_argument(parser)


class _Stop:
    def __init__(self) -> None:
        self.event = threading.Event()

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.event.set()


def run_review(args: argparse.Namespace, config: Config) -> int:
    from werkzeug.serving import make_server

    config = config.with_review(address=args.address)
    folders = review_folders(config, args.folder)
    who = args.who or config.review.who or default_who()
    with Ledger.open_existing(folders.ledger) as ledger:
        recover_settlements(ledger)
        waiting = len(in_review(ledger))
    token = secrets.token_urlsafe(32)
    host, port = split_address(config.review.address, any_port=True)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    try:
        server = make_server(host, port, create_app(config, folders, token, who), threaded=True)
    except OSError as error:
        print(f"facesieve: cannot serve on {config.review.address}: {error}", file=sys.stderr)
        return ExitCode.FAILURE
    url = url_of(host, server.server_port, token)
    print(url, flush=True)
    print(
        f"facesieve: review page for {folders.ledger} ({waiting} files in review, deciding as "
        f"{who}); keys: k keep, r reject, n no human face, u undo. Ctrl-C stops.",
        file=sys.stderr,
        flush=True,
    )
    get_logger().info("review_serving", address=f"{host}:{server.server_port}", who=who)
    stop = _Stop()
    previous = {sig: signal.signal(sig, stop.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=server.serve_forever, name="facesieve-review", daemon=True)
    thread.start()
    try:
        while not stop.event.wait(_TICK):
            if not thread.is_alive():
                return ExitCode.FAILURE
    finally:
        server.shutdown()
        thread.join(10.0)
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    get_logger().info("review_stopped")
    return ExitCode.OK


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="facesieve-token" content="{{TOKEN}}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>facesieve review</title>
<style>
:root { --man: #2e86de; --woman: #c2185b; --unknown: #f1c40f; --keep: #1e8449;
  --reject: #c0392b; --noface: #7f8c8d; }
* { box-sizing: border-box; }
html, body { height: 100%; margin: 0; }
body { font: 14px/1.4 system-ui, sans-serif; background: #1d1f23; color: #e8e8e8;
  display: flex; flex-direction: column; }
header { display: flex; gap: 18px; align-items: baseline; padding: 8px 16px;
  background: #2a2d33; border-bottom: 1px solid #3a3d44; }
header h1 { font-size: 16px; margin: 0; }
header .who, header .count { color: #aab; }
#layout { flex: 1; display: flex; min-height: 0; }
#stage { flex: 1; display: flex; align-items: center; justify-content: center; padding: 12px;
  min-width: 0; }
#frame { position: relative; line-height: 0; }
#photo { display: block; }
.box { position: absolute; border: 3px solid var(--unknown); }
.box.man { border-color: var(--man); } .box.woman { border-color: var(--woman); }
.box span { position: absolute; left: -3px; bottom: 100%; background: rgba(0,0,0,.75);
  color: #fff; font-size: 13px; line-height: 1.3; padding: 1px 4px; white-space: nowrap; }
aside { width: 360px; padding: 14px 16px; background: #25282d; border-left: 1px solid #3a3d44;
  overflow-y: auto; }
aside h2 { font-size: 15px; margin: 0 0 6px; word-break: break-all; }
.reason { font-size: 15px; font-weight: 600; color: #f5b041; margin: 0 0 10px; }
ol.faces { padding-left: 20px; margin: 0 0 12px; }
.path { font-family: ui-monospace, monospace; font-size: 11px; color: #99a; word-break: break-all; }
.keys { display: grid; grid-template-columns: 1fr 1fr; gap: 6px; margin: 14px 0; }
.keys button { font: inherit; padding: 8px; border-radius: 5px; border: 0; cursor: pointer;
  color: #fff; }
.keys kbd { font-weight: 700; background: rgba(255,255,255,.2); padding: 0 5px;
  border-radius: 3px; margin-right: 4px; }
button.keep { background: var(--keep); } button.reject { background: var(--reject); }
button.no_face { background: var(--noface); } button.undo { background: #555a64; }
#message { min-height: 40px; font-size: 13px; color: #ccd; }
#message.error { color: #ff8a80; }
#empty { font-size: 18px; color: #aab; }
</style>
</head>
<body data-state="loading">
<header><h1>facesieve review</h1>
<span class="count"><output id="left">0</output> waiting · <output id="done">0</output>
decided here</span><span class="who">deciding as <b id="who"></b></span></header>
<div id="layout">
<main id="stage"><div id="frame" hidden><img id="photo" alt=""></div>
<p id="empty" hidden>Nothing waits in review.</p></main>
<aside>
<h2 id="name"></h2>
<p class="reason" id="reason"></p>
<ol class="faces" id="faces"></ol>
<p class="path" id="path"></p>
<div class="keys">
<button class="keep" data-label="keep"><kbd>k</kbd>keep</button>
<button class="reject" data-label="reject"><kbd>r</kbd>reject</button>
<button class="no_face" data-label="no_face"><kbd>n</kbd>no human face</button>
<button class="undo" id="undo"><kbd>u</kbd>undo</button>
</div>
<p id="message" role="status"></p>
</aside>
</div>
<script src="app.js"></script>
</body>
</html>
"""

_JS = r"""
(function () {
  'use strict';
  var token = document.querySelector('meta[name=facesieve-token]').content;
  var body = document.body;
  var queue = [];        // items waiting, the shown one first
  var undoable = [];     // {item, verdict_id} of this page's decisions, latest last
  var pictures = {};     // id -> Promise of {url, width, height}
  var busy = false;
  var decided = 0;
  var $ = function (id) { return document.getElementById(id); };

  function api(method, path, data) {
    var options = {method: method, headers: {}, credentials: 'same-origin'};
    options.headers['X-Facesieve-Token'] = token;
    if (data !== undefined) {
      options.headers['Content-Type'] = 'application/json';
      options.body = JSON.stringify(data);
    }
    return fetch(path, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (json) {
        return {status: response.status, ok: response.ok, json: json};
      });
    });
  }

  function picture(item) {
    if (!pictures[item.id]) {
      pictures[item.id] = fetch('image/' + item.id, {credentials: 'same-origin'})
        .then(function (response) {
          if (!response.ok) { throw new Error('image ' + response.status); }
          var width = Number(response.headers.get('X-Image-Width'));
          var height = Number(response.headers.get('X-Image-Height'));
          return response.blob().then(function (blob) {
            var url = URL.createObjectURL(blob);
            var img = new Image();
            img.src = url;
            return img.decode().then(function () {
              return {url: url, width: width, height: height};
            });
          });
        });
      pictures[item.id].catch(function () { delete pictures[item.id]; });
    }
    return pictures[item.id];
  }

  function forget(item) {
    var pending = pictures[item.id];
    delete pictures[item.id];
    if (pending) { pending.then(function (p) { URL.revokeObjectURL(p.url); }, function () {}); }
  }

  function say(text, error) {
    $('message').textContent = text;
    $('message').className = error ? 'error' : '';
  }

  function faceText(face) {
    var gender = face.gender ? face.gender + ' ' + Math.round(100 * face.gender_confidence) + '%'
      : 'gender unknown';
    return gender + ' · face ' + face.confidence.toFixed(2) + ' · ' + face.box[2] + 'x' +
      face.box[3] + ' px';
  }

  function render(item, pic) {
    var frame = $('frame');
    Array.prototype.slice.call(frame.querySelectorAll('.box')).forEach(function (b) {
      b.remove();
    });
    $('photo').src = pic.url;
    fit(pic);
    item.faces.forEach(function (face, i) {
      var box = document.createElement('div');
      box.className = 'box ' + (face.gender || 'unknown');
      box.style.left = (100 * face.box[0] / pic.width) + '%';
      box.style.top = (100 * face.box[1] / pic.height) + '%';
      box.style.width = (100 * face.box[2] / pic.width) + '%';
      box.style.height = (100 * face.box[3] / pic.height) + '%';
      var label = document.createElement('span');
      label.textContent = (i + 1) + (face.gender ? ': ' + face.gender + ' ' +
        Math.round(100 * face.gender_confidence) + '%' : ': ?');
      box.appendChild(label);
      frame.appendChild(box);
    });
    $('name').textContent = item.name + '  (ledger #' + item.id + ')';
    $('reason').textContent = item.reason;
    var list = $('faces');
    list.textContent = '';
    item.faces.forEach(function (face) {
      var li = document.createElement('li');
      li.textContent = faceText(face);
      list.appendChild(li);
    });
    $('path').textContent = item.path;
    frame.hidden = false;
    $('empty').hidden = true;
  }

  // As large as the stage allows, small photos scaled up: the boxes scale with it.
  function fit(pic) {
    var stage = $('stage');
    var scale = Math.min((stage.clientWidth - 24) / pic.width,
      (stage.clientHeight - 24) / pic.height);
    $('photo').style.width = Math.floor(pic.width * scale) + 'px';
    $('photo').style.height = Math.floor(pic.height * scale) + 'px';
  }
  window.addEventListener('resize', function () {
    if (queue.length && pictures[queue[0].id]) { pictures[queue[0].id].then(fit); }
  });

  function counts() {
    $('left').textContent = String(queue.length);
    $('done').textContent = String(decided);
  }

  function show() {
    counts();
    if (!queue.length) {
      $('frame').hidden = true;
      $('empty').hidden = false;
      ['name', 'reason', 'faces', 'path'].forEach(function (id) { $(id).textContent = ''; });
      body.setAttribute('data-current', '');
      body.setAttribute('data-state', 'empty');
      return Promise.resolve();
    }
    var item = queue[0];
    body.setAttribute('data-state', 'loading');
    return picture(item).then(function (pic) {
      if (queue[0] !== item) { return; }
      render(item, pic);
      body.setAttribute('data-current', String(item.id));
      body.setAttribute('data-state', 'ready');
      // The next ones are fetched and decoded while this one is looked at.
      queue.slice(1, 3).forEach(function (next) { picture(next).catch(function () {}); });
    }, function (error) {
      say('cannot show ' + item.name + ': ' + error.message + '; skipped', true);
      queue.shift();
      return show();
    });
  }

  function decide(label) {
    if (busy || !queue.length || body.getAttribute('data-state') !== 'ready') { return; }
    busy = true;
    var item = queue[0];
    body.setAttribute('data-state', 'deciding');
    api('POST', 'api/decide', {id: item.id, label: label}).then(function (result) {
      if (result.ok) {
        undoable.push({item: item, verdict_id: result.json.verdict_id});
        decided += 1;
        queue.shift();
        forget(item);
        var where = result.json.to === null ? 'deleted' : result.json.to;
        say(label.replace('_', ' ') + ': ' + item.name + ' → ' + where, false);
      } else if (result.status === 409) {
        queue.shift();
        forget(item);
        say('not applied: ' + result.json.error, true);
      } else {
        say('not applied: ' + (result.json.error || result.status), true);
      }
    }, function (error) {
      say('not applied: ' + error.message, true);
    }).then(function () {
      busy = false;
      // The last one decided: files that reached review meanwhile come next.
      return queue.length ? show() : load();
    });
  }

  function undo() {
    if (busy) { return; }
    var last = undoable.pop();
    if (!last) { say('nothing to undo', true); return; }
    busy = true;
    body.setAttribute('data-state', 'deciding');
    api('POST', 'api/undo', {verdict_id: last.verdict_id}).then(function (result) {
      if (result.ok) {
        decided -= 1;
        queue.unshift(last.item);
        say('undone: ' + last.item.name + ' is back in review', false);
      } else {
        say('cannot undo: ' + (result.json.error || result.status), true);
      }
    }, function (error) {
      undoable.push(last);
      say('cannot undo: ' + error.message, true);
    }).then(function () {
      busy = false;
      return show();
    });
  }

  document.addEventListener('keydown', function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) { return; }
    var labels = {k: 'keep', r: 'reject', n: 'no_face'};
    var key = event.key.toLowerCase();
    if (labels[key]) { event.preventDefault(); decide(labels[key]); }
    else if (key === 'u') { event.preventDefault(); undo(); }
  });
  Array.prototype.slice.call(document.querySelectorAll('button[data-label]')).forEach(
    function (button) {
      button.addEventListener('click', function () { decide(button.dataset.label); });
    });
  $('undo').addEventListener('click', undo);

  function load() {
    return api('GET', 'api/queue').then(function (result) {
      if (!result.ok) { say(result.json.error || 'cannot load the queue', true); return; }
      $('who').textContent = result.json.who;
      queue = result.json.items;
      // #id=N (the report's links) shows that file first.
      var wanted = /id=(\d+)/.exec(location.hash);
      var at = wanted ? queue.findIndex(function (i) { return i.id === Number(wanted[1]); }) : -1;
      if (at > 0) { queue.unshift(queue.splice(at, 1)[0]); }
      return show();
    });
  }
  load();
})();
"""
