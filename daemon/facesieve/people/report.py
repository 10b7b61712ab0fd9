"""`facesieve report --html FILE`: one page a person can review the removed files on.

The page stands alone: styles and script inline, thumbnails embedded as data
URIs, and a Content-Security-Policy that forbids every fetch, so opening it
sends nothing anywhere and it survives being mailed or archived. Every text
from the ledger (file names may hold `<`, `&`, quotes and newlines) is escaped.

It lists every completed decision of the model whose verdict is not `keep`
(what the guard took away, or would have), newest first, with what became of
the file since, and the `facesieve restore` command that undoes it; a file
waiting in review gets a link to the review page and the `approve` / `reject`
commands instead. What people decided (human verdicts) is listed apart.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from ..config import Config
from ..judging.images import load_image
from ..ledger.reading import Fate
from ..ledger.store import LedgerRow
from ..paths import readable

__all__ = ["VERDICTS", "Item", "per_day", "render"]

VERDICTS = ("keep", "reject", "review", "unreadable", "not_image")
REPORTED = ("reject", "review", "unreadable", "not_image")


@dataclass(frozen=True, slots=True)
class Thumb:
    jpeg: bytes
    width: int  # of the original image, EXIF orientation applied: face boxes are in these
    height: int


@dataclass(frozen=True, slots=True)
class Item:
    decision: LedgerRow
    fate: Fate
    where: Path | None  # where the file is now
    thumb: Thumb | None
    restore_command: str | None  # None: nothing to restore
    # A file in review: the review page showing it, and the approve / reject commands.
    review_link: str | None = None
    settle_commands: tuple[str, ...] = ()


def thumbnail(path: Path, side: int, config: Config) -> Thumb | None:
    """A small JPEG of the image at `path`; None when it cannot be read or decoded.

    Read through held descriptors (a symlink planted in the quarantine is not
    followed) and decoded in the budgeted decoder: the quarantine holds exactly
    the files that blew the decode budget.
    """
    try:
        image = load_image(path, config.images, max_side=side)
        buffer = io.BytesIO()
        Image.fromarray(image.rgb).save(buffer, "JPEG", quality=72, optimize=True)
    except Exception:  # noqa: BLE001 - an unreadable file is shown without a picture
        return None
    return Thumb(buffer.getvalue(), image.width, image.height)


def per_day(decisions: Iterable[LedgerRow]) -> dict[str, Counter[str]]:
    """Decisions per UTC day and verdict, oldest day first."""
    days: dict[str, Counter[str]] = {}
    for decision in decisions:
        day = datetime.fromisoformat(decision.decided_at).astimezone(UTC).date().isoformat()
        days.setdefault(day, Counter())[decision.verdict] += 1
    return dict(sorted(days.items()))


# -- the page ------------------------------------------------------------------------


def _e(value: object) -> str:
    # readable(): a file name that is not UTF-8 shows its bytes as \xNN.
    return html.escape(readable(str(value)), quote=True)


def _time(stamp: str) -> str:
    return datetime.fromisoformat(stamp).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _face_text(face: dict[str, Any]) -> str:
    gender = face.get("gender")
    probability = face.get("gender_confidence")
    called = "gender unknown" if gender is None else f"{gender} {probability:.0%}"
    width, height = face["box"][2], face["box"][3]
    return f"{called} · face {face['confidence']:.2f} · {width}x{height} px"


def _figure(item: Item) -> str:
    thumb = item.thumb
    if thumb is None:
        if item.where is None:
            why = f"no picture: {item.fate.value}"
        elif not os.path.lexists(item.where):
            why = "no picture: no longer there"
        else:
            why = "no picture: not a readable image"
        return f'<figure class="thumb none"><span>{_e(why)}</span></figure>'
    data = base64.b64encode(thumb.jpeg).decode("ascii")
    boxes = []
    # Crowded pictures get bare numbers; the list beside the picture says the rest.
    crowded = len(item.decision.faces) > 2
    for number, face in enumerate(item.decision.faces, 1):
        x, y, w, h = face["box"]
        style = (
            f"left:{100 * x / thumb.width:.2f}%;top:{100 * y / thumb.height:.2f}%;"
            f"width:{100 * w / thumb.width:.2f}%;height:{100 * h / thumb.height:.2f}%"
        )
        gender = face.get("gender") or "unknown"
        label = "?" if face.get("gender") is None else f"{gender} {face['gender_confidence']:.0%}"
        label = str(number) if crowded else f"{number}: {label}"
        boxes.append(
            f'<div class="box {_e(gender)}" style="{style}" title="{_e(_face_text(face))}">'
            f"<span>{_e(label)}</span></div>"
        )
    return (
        f'<figure class="thumb"><img alt="" src="data:image/jpeg;base64,{data}">'
        + "".join(boxes)
        + "</figure>"
    )


def _item(item: Item) -> str:
    d = item.decision
    faces = (
        "<ol>" + "".join(f"<li>{_e(_face_text(f))}</li>" for f in d.faces) + "</ol>"
        if d.faces
        else "none"
    )
    now = item.fate.value + ("" if item.where is None else f": {item.where}")
    if d.settled_by is not None:
        now += f" (ledger #{d.settled_by})"
    if item.review_link is not None:
        commands = "".join(f'<code class="settle">{_e(c)}</code>' for c in item.settle_commands)
        action = (
            f'<p class="review"><a class="review" href="{_e(item.review_link)}">'
            f"keep or reject it on the review page</a>, or:</p>{commands}"
        )
    elif item.restore_command is not None:
        action = f'<code class="restore">{_e(item.restore_command)}</code>'
    else:
        action = f'<p class="norestore">nothing to restore: {_e(item.fate.value)}</p>'
    return f"""<article class="item" id="d{d.id}" data-verdict="{_e(d.verdict)}" \
data-fate="{_e(item.fate.value)}">
{_figure(item)}
<div class="meta">
<h3><span class="verdict {_e(d.verdict)}">{_e(d.verdict)}</span> \
<span class="name">{_e(Path(d.path).name)}</span></h3>
<p class="reason">{_e(d.reason)}</p>
<dl>
<dt>faces</dt><dd>{faces}</dd>
<dt>decided</dt><dd><time datetime="{_e(d.decided_at)}">{_e(_time(d.decided_at))}</time> \
(ledger #{d.id})</dd>
<dt>from</dt><dd class="path">{_e(d.path)}</dd>
<dt>now</dt><dd class="path">{_e(now)}</dd>
</dl>
{action}
</div>
</article>"""


def _summary(days: dict[str, Counter[str]]) -> str:
    if not days:
        return '<p id="summary">No decisions recorded.</p>'
    most = max(sum(c.values()) for c in days.values())
    rows = []
    for day, counts in reversed(days.items()):  # newest first, like the items
        total = sum(counts.values())
        bar = "".join(
            f'<span class="seg {v}" style="width:{100 * counts[v] / most:.2f}%" '
            f'title="{v} {counts[v]}"></span>'
            for v in VERDICTS
            if counts[v]
        )
        cells = "".join(f'<td class="n {v}">{counts[v]}</td>' for v in VERDICTS)
        rows.append(
            f'<tr data-day="{day}"><th>{day}</th><td class="bar">{bar}</td>{cells}'
            f'<td class="n total">{total}</td></tr>'
        )
    totals: Counter[str] = Counter()
    for counts in days.values():
        totals.update(counts)
    foot = "".join(f'<td class="n {v}">{totals[v]}</td>' for v in VERDICTS)
    head = "".join(f'<th class="n {v}">{v}</th>' for v in VERDICTS)
    return f"""<table id="summary">
<caption>Decisions per day (UTC), every verdict</caption>
<thead><tr><th>day</th><th></th>{head}<th class="n">total</th></tr></thead>
<tbody>{"".join(rows)}</tbody>
<tfoot><tr><th>all</th><td></td>{foot}<td class="n total">{sum(totals.values())}</td></tr></tfoot>
</table>"""


def _person(item: Item) -> str:
    d = item.decision
    label = (d.label or "?").replace("_", " ")
    now = item.fate.value + ("" if item.where is None else f": {item.where}")
    return f"""<article class="item human" id="d{d.id}" data-label="{_e(d.label)}" \
data-fate="{_e(item.fate.value)}">
{_figure(item)}
<div class="meta">
<h3><span class="verdict human {_e(d.label)}">{_e(label)}</span> \
<span class="name">{_e(Path(d.path).name)}</span></h3>
<p class="reason">{_e(d.who)} settled it \
<time datetime="{_e(d.decided_at)}">{_e(_time(d.decided_at))}</time> \
(ledger #{d.id}, about #{d.ref})</p>
<dl>
<dt>the model</dt><dd>{_e(d.reason)}</dd>
<dt>from</dt><dd class="path">{_e(d.path)}</dd>
<dt>now</dt><dd class="path">{_e(now)}</dd>
</dl>
</div>
</article>"""


def render(
    items: Sequence[Item],
    days: dict[str, Counter[str]],
    *,
    ledger: str,
    generated: datetime,
    people: Sequence[Item] = (),
) -> str:
    """The whole page as one string; `people`: human verdicts, shown apart."""
    by_verdict = Counter(item.decision.verdict for item in items)
    by_fate = Counter(item.fate.value for item in items)
    filters = "".join(
        f'<label class="{v}"><input type="checkbox" name="verdict" value="{v}" checked> '
        f"{v} <b>{by_verdict[v]}</b></label>"
        for v in REPORTED
    )
    fates = ", ".join(f"{_e(name)} {count}" for name, count in sorted(by_fate.items()))
    body = "\n".join(_item(item) for item in items) or '<p class="empty">Nothing was removed.</p>'
    settled = (
        f'<section id="people"><h2>HumanVerdict by people ({len(people)})</h2>\n'
        + "\n".join(_person(item) for item in people)
        + "</section>"
        if people
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; \
style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>facesieve report</title>
<style>{_CSS}</style>
</head>
<body>
<header>
<h1>facesieve: what was removed, and why</h1>
<p class="source">Ledger <span class="path">{_e(ledger)}</span>,
written {_e(generated.strftime("%Y-%m-%d %H:%M:%S UTC"))}.
{len(items)} files not kept ({fates or "none"}).</p>
{_summary(days)}
<form id="filters">Show: {filters}
<span class="count"><output id="shown">{len(items)}</output> of {len(items)} shown</span>
<span class="legend">Face boxes: <i class="man"></i>man <i class="woman"></i>woman \
<i class="unknown"></i>gender unknown</span></form>
</header>
<main id="items">
{body}
</main>
{settled}
<script>{_JS}</script>
</body>
</html>
"""


_CSS = """
:root { --reject: #c0392b; --review: #d68910; --unreadable: #7f8c8d; --keep: #1e8449;
  --man: #2e86de; --woman: #c2185b; --unknown: #f1c40f; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; background: #f4f5f7; }
header { background: #fff; padding: 16px 24px; border-bottom: 1px solid #ddd; }
h1 { font-size: 20px; margin: 0 0 6px; }
.source { margin: 0 0 12px; color: #555; }
.path { white-space: pre-wrap; word-break: break-all; font-family: ui-monospace, monospace;
  font-size: 12px; }
#summary { border-collapse: collapse; margin-bottom: 12px; font-size: 13px; }
#summary caption { text-align: left; font-weight: 600; padding-bottom: 4px; }
#summary th, #summary td { padding: 2px 8px; border-bottom: 1px solid #eee; text-align: left; }
#summary .n { text-align: right; font-variant-numeric: tabular-nums; }
#summary .bar { width: 320px; }
#summary .bar { display: flex; height: 14px; padding: 0; margin-top: 4px; }
.seg { display: block; height: 100%; }
.seg.keep { background: var(--keep); } .seg.reject { background: var(--reject); }
.seg.review { background: var(--review); } .seg.unreadable { background: var(--unreadable); }
.seg.not_image { background: var(--unreadable); }
#filters label { margin-right: 14px; cursor: pointer; }
#filters .count { color: #555; margin-left: 8px; }
#filters .legend { color: #555; margin-left: 24px; font-size: 12px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin: 0 3px 0 8px;
  border: 2px solid var(--unknown); }
.legend i.man { border-color: var(--man); } .legend i.woman { border-color: var(--woman); }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 12px;
  padding: 16px 24px; }
.item { display: flex; gap: 12px; background: #fff; border: 1px solid #ddd; border-radius: 6px;
  padding: 10px; }
.item[hidden] { display: none; }
.thumb { position: relative; margin: 0; flex: none; align-self: flex-start; line-height: 0; }
.thumb img { display: block; max-width: 40vw; }
.thumb.none { width: 160px; height: 120px; display: flex; align-items: center;
  justify-content: center; background: #eee; color: #777; line-height: 1.3; padding: 8px;
  text-align: center; font-size: 12px; }
.box { position: absolute; border: 2px solid var(--unknown); }
.box.man { border-color: var(--man); } .box.woman { border-color: var(--woman); }
.box span { position: absolute; left: -2px; bottom: 100%; background: rgba(0,0,0,.7); color: #fff;
  font-size: 11px; line-height: 1.3; padding: 0 3px; white-space: nowrap; }
.meta { min-width: 0; flex: 1; }
.meta h3 { margin: 0 0 4px; font-size: 14px; }
.name { white-space: pre-wrap; word-break: break-all; }
.verdict { color: #fff; border-radius: 3px; padding: 1px 6px; font-size: 12px; }
.verdict.reject { background: var(--reject); } .verdict.review { background: var(--review); }
.verdict.unreadable { background: var(--unreadable); }
.reason { margin: 0 0 6px; font-weight: 500; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 10px; margin: 0 0 8px;
  font-size: 12px; }
dt { color: #777; } dd { margin: 0; } dd ol { margin: 0; padding-left: 18px; }
code.restore { display: block; background: #272b33; color: #e8e8e8; padding: 4px 8px;
  border-radius: 4px; font-size: 12px; user-select: all; white-space: pre-wrap;
  word-break: break-all; }
.norestore { color: #777; font-size: 12px; margin: 0; }
code.settle { display: block; background: #272b33; color: #e8e8e8; padding: 4px 8px;
  border-radius: 4px; font-size: 12px; user-select: all; margin-top: 4px; word-break: break-all; }
p.review { margin: 0; font-size: 13px; }
a.review { font-weight: 600; }
#people { padding: 0 24px 16px; }
#people h2 { font-size: 17px; }
#people .item { margin-bottom: 12px; max-width: 900px; }
.verdict.human { background: #34495e; }
.verdict.human.keep { background: var(--keep); }
"""

_JS = """
(function () {
  var boxes = Array.prototype.slice.call(document.querySelectorAll('input[name=verdict]'));
  var items = Array.prototype.slice.call(document.querySelectorAll('#items .item'));
  var shown = document.getElementById('shown');
  function apply() {
    var on = {};
    boxes.forEach(function (b) { on[b.value] = b.checked; });
    var n = 0;
    items.forEach(function (item) {
      var show = on[item.getAttribute('data-verdict')] === true;
      item.hidden = !show;
      if (show) { n += 1; }
    });
    shown.textContent = String(n);
  }
  // #verdict=review,unreadable opens the page filtered, for links and for tests.
  var wanted = /verdict=([a-z_,]+)/.exec(location.hash);
  if (wanted) {
    var keep = wanted[1].split(',');
    boxes.forEach(function (b) { b.checked = keep.indexOf(b.value) >= 0; });
  }
  boxes.forEach(function (b) { b.addEventListener('change', apply); });
  apply();
  document.body.setAttribute('data-ready', 'yes');
})();
"""
