"""`facesieve stats [--json]`: what the ledger says, in numbers.

Read-only, and safe beside a running scan or daemon (the ledger is in WAL mode).
Days are UTC days. Throughput comes from the time each decision took to read,
decode and run through the models (`elapsed_ms` in the ledger), so it is the
rate of one worker while busy, not an average over idle hours; the counts of
the last hour, day and week say how busy it was.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from ..ledger.reading import Fate, fate
from ..ledger.shards import LedgerUnion
from ..ledger.store import Ledger, LedgerRow

__all__ = ["collect"]

VERDICTS = ("keep", "reject", "review", "unreadable", "not_image")


def _percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile of sorted values: the ceil(share * n)-th smallest."""
    # round(x + 0.5) is not a ceiling: Python rounds halves to even, so 5.5 gave 6.
    # The inner round() keeps float noise in share * n from pushing a whole rank up one.
    rank = math.ceil(round(share * len(values), 9))
    return values[max(0, min(len(values), rank) - 1)]


def collect(
    ledger: Ledger | LedgerUnion,
    *,
    latest: int = 10,
    days: int = 14,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Every figure `stats` shows, as plain data (the `--json` output)."""
    now = now or datetime.now(UTC)
    everything = ledger.decisions()
    # The model's decisions are the figures; people's verdicts about them are counted apart.
    decisions = [d for d in everything if not d.is_human]
    humans = Counter(d.label or "?" for d in everything if d.is_human and d.undone_by is None)
    restores = ledger.restores()
    states: Counter[str] = Counter()
    for row in ledger.rows():
        if not row.is_restore and row.state != "done":
            states[row.state] += 1
    verdicts = Counter(d.verdict for d in decisions)
    fates: Counter[str] = Counter()
    per_day: dict[str, Counter[str]] = {}
    recent: Counter[str] = Counter()
    windows = {
        "last_hour": timedelta(hours=1),
        "last_24h": timedelta(days=1),
        "last_7d": timedelta(days=7),
    }
    for decision in decisions:
        current, _ = fate(decision, restores.get(decision.id))
        fates[current.value] += 1
        moment = datetime.fromisoformat(decision.decided_at).astimezone(UTC)
        per_day.setdefault(moment.date().isoformat(), Counter())[decision.verdict] += 1
        for name, span in windows.items():
            if now - moment <= span:
                recent[name] += 1
    elapsed = sorted(d.elapsed_ms for d in decisions if d.elapsed_ms is not None)
    mean = sum(elapsed) / len(elapsed) if elapsed else None
    day_rows = [
        {"day": day, **{v: counts[v] for v in VERDICTS}, "total": sum(counts.values())}
        for day, counts in sorted(per_day.items(), reverse=True)
    ]
    return {
        "ledger": str(ledger.path),
        "decisions": len(decisions),
        "verdicts": {v: verdicts[v] for v in VERDICTS},
        "now": {f.value: fates[f.value] for f in Fate},
        "settled_by_people": {label: humans[label] for label in ("keep", "reject", "no_face")},
        "not_done": {"pending": states["pending"], "failed": states["failed"]},
        "per_day": day_rows[:days] if days > 0 else day_rows,
        "throughput": {
            "processing_ms": None
            if mean is None
            else {
                "mean": round(mean, 1),
                "p50": _percentile(elapsed, 0.50),
                "p95": _percentile(elapsed, 0.95),
                "max": elapsed[-1],
            },
            "images_per_second": None if not mean else round(1000 / mean, 1),
            **{name: recent[name] for name in windows},
            "first": decisions[0].decided_at if decisions else None,
            "last": decisions[-1].decided_at if decisions else None,
        },
        "latest": [
            _latest(d, restores.get(d.id)) for d in reversed(decisions[-latest:] if latest else [])
        ],
    }


def _latest(decision: LedgerRow, restore: LedgerRow | None) -> dict[str, Any]:
    current, where = fate(decision, restore)
    return {
        "id": decision.id,
        "decided_at": decision.decided_at,
        "verdict": decision.verdict,
        "reason": decision.reason,
        "path": decision.path,
        "now": current.value,
        "where": None if where is None else str(where),
    }


def _text(figures: dict[str, Any]) -> str:
    verdicts = figures["verdicts"]
    lines = [
        f"ledger     {figures['ledger']}",
        f"decisions  {figures['decisions']}: "
        + ", ".join(f"{v} {verdicts[v]}" for v in VERDICTS)
        + "  (not done: pending {pending}, failed {failed})".format(**figures["not_done"]),
        "files now  " + ", ".join(f"{k} {n}" for k, n in figures["now"].items() if n),
        "people     "
        + ", ".join(f"{k} {n}" for k, n in figures["settled_by_people"].items())
        + " (human verdicts on files in review)",
    ]
    speed = figures["throughput"]
    if speed["processing_ms"] is not None:
        ms = speed["processing_ms"]
        lines.append(
            f"speed      {ms['mean']} ms per image (p50 {ms['p50']}, p95 {ms['p95']}, "
            f"max {ms['max']}): {speed['images_per_second']} images/s on one worker"
        )
    lines.append(
        f"recent     {speed['last_hour']} in the last hour, {speed['last_24h']} in 24 h, "
        f"{speed['last_7d']} in 7 days"
    )
    if figures["per_day"]:
        lines += ["", f"{'day (UTC)':<12}" + "".join(f"{v:>11}" for v in (*VERDICTS, "total"))]
        for row in figures["per_day"]:
            lines.append(
                f"{row['day']:<12}" + "".join(f"{row[v]:>11}" for v in (*VERDICTS, "total"))
            )
    if figures["latest"]:
        lines += ["", "latest decisions"]
        for item in figures["latest"]:
            stamp = item["decided_at"][:19].replace("T", " ")
            where = item["now"] if item["where"] is None else f"{item['now']}: {item['where']!r}"
            lines.append(
                f"  #{item['id']:<6} {stamp}  {item['verdict']:<10} {item['path']!r}"
                f"  ({item['reason']}) -> {where}"
            )
    return "\n".join(lines)
