"""`facesieve eval --ledger [DIR]`: how the model did on the images people settled.

A human verdict is a label: keep (the image shows what the policy requires),
reject, or no human face. For each image a person settled, the model's call is
its verdict when it decided, and otherwise its *lean*: the policy applied to the
recorded faces with every uncertainty resolved the likelier way (any counted
face is sure, any gender call is taken). The figures are under the configured
policy; a person's keep under `require = man` means "a man".
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast, get_args

from ..config import Config, PolicyConfig, Require, review_folders
from ..errors import ConfigError
from ..judging.policy import Face, Verdict, decide
from ..ledger.shards import LedgerUnion
from ..ledger.store import Ledger, LedgerRow, policy_fingerprint
from ..logs import get_logger

if TYPE_CHECKING:
    from ..judging.gender import GenderHead

__all__ = [
    "Reviewed",
    "activate_head",
    "decided_under",
    "figures",
    "ledger_as_labelled_folder",
    "model_call",
    "render",
    "reviewed",
]

LABELS = ("keep", "reject", "no_face")
CALLS = ("keep", "reject", "no face")
_BANDS = ((0.5, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.01))


@dataclass(frozen=True, slots=True)
class Reviewed:
    decision: LedgerRow  # the model's
    human: LedgerRow  # the person's verdict about it


def reviewed(ledger: Ledger | LedgerUnion) -> list[Reviewed]:
    """Every image a person settled (undone verdicts left out), oldest verdict first."""
    pairs = []
    for human in ledger.human_verdicts():
        decision = ledger.get(human.ref) if human.ref is not None else None
        if decision is not None:
            pairs.append(Reviewed(decision, human))
    return pairs


def _faces(row: LedgerRow) -> list[Face]:
    return [
        Face(
            box=(int(f["box"][0]), int(f["box"][1]), int(f["box"][2]), int(f["box"][3])),
            confidence=float(f["confidence"]),
            gender=f.get("gender"),
            gender_confidence=f.get("gender_confidence"),
        )
        for f in row.faces
    ]


def model_call(decision: LedgerRow, policy: PolicyConfig) -> str:
    """keep, reject or "no face": the model's verdict, or its lean where it asked for review."""
    faces = _faces(decision)
    counted = [
        f
        for f in faces
        if f.confidence >= policy.min_face_confidence
        and min(f.box[2], f.box[3]) >= policy.min_face_size
    ]
    if not counted:
        return "no face"
    if decision.verdict in (Verdict.KEEP, Verdict.REJECT):
        return str(decision.verdict)
    leaning = policy.model_copy(
        update={"sure_face_confidence": policy.min_face_confidence, "min_gender_confidence": 0.0}
    )
    return str(decide(faces, leaning).verdict)


def _right(call: str, label: str) -> bool:
    return (call == "keep") == (label == "keep")


def _confidence(decision: LedgerRow) -> float | None:
    """The gender confidence of the largest face, the one most policies count."""
    faces = [f for f in _faces(decision) if f.gender_confidence is not None]
    if not faces:
        return None
    return max(faces, key=lambda f: f.area).gender_confidence


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def figures(pairs: list[Reviewed], policy: PolicyConfig) -> dict[str, Any]:
    """Accuracy overall, per label, per model verdict, per day and per confidence band."""
    confusion = {label: dict.fromkeys(CALLS, 0) for label in LABELS}
    by_verdict: dict[str, Counter[str]] = {}
    by_day: dict[str, Counter[str]] = {}
    by_band: dict[str, Counter[str]] = {}
    who: Counter[str] = Counter()
    right = 0
    for pair in pairs:
        label = pair.human.label or "reject"
        call = model_call(pair.decision, policy)
        ok = _right(call, label)
        right += ok
        confusion.setdefault(label, dict.fromkeys(CALLS, 0))[call] += 1
        who[pair.human.who or "?"] += 1
        day = datetime.fromisoformat(pair.human.decided_at).astimezone(UTC).date().isoformat()
        confidence = _confidence(pair.decision)
        band = next(
            (
                f"{low:.0%}-{min(high, 1.0):.0%}"
                for low, high in _BANDS
                if confidence is not None and low <= confidence < high
            ),
            "no gender call",
        )
        for table, key in ((by_verdict, pair.decision.verdict), (by_day, day), (by_band, band)):
            table.setdefault(key, Counter())["n"] += 1
            table[key]["right"] += ok

    def rows(table: dict[str, Counter[str]]) -> dict[str, dict[str, Any]]:
        return {
            key: {
                "settled": c["n"],
                "model_right": c["right"],
                "accuracy": _rate(c["right"], c["n"]),
            }
            for key, c in sorted(table.items())
        }

    per_label: dict[str, dict[str, Any]] = {}
    for label, calls in confusion.items():
        total = sum(calls.values())
        good = sum(n for call, n in calls.items() if _right(call, label))
        per_label[label] = {"settled": total, "model_right": good, "accuracy": _rate(good, total)}
    return {
        "policy": policy.model_dump(),
        "settled": len(pairs),
        "model_right": right,
        "accuracy": _rate(right, len(pairs)),
        "per_label": per_label,
        "confusion": confusion,
        "per_model_verdict": rows(by_verdict),
        "per_day": rows(by_day),
        "per_confidence": rows(by_band),
        "by_person": dict(sorted(who.items())),
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def render(result: dict[str, Any]) -> str:
    require = result["policy"]["require"]
    lines = [
        f"{result['settled']} images settled by people; the model's call (its verdict, or its "
        f"lean where it asked for review) under require = {require}",
        f"model right on {result['model_right']} of {result['settled']}: "
        f"{_pct(result['accuracy'])}",
        "",
        f"{'person said':<14}{'settled':>9}{'model right':>13}{'accuracy':>10}   "
        + "".join(f"{'model: ' + c:>16}" for c in CALLS),
    ]
    for label, counts in result["per_label"].items():
        calls = result["confusion"][label]
        lines.append(
            f"{label:<14}{counts['settled']:>9}{counts['model_right']:>13}"
            f"{_pct(counts['accuracy']):>10}   " + "".join(f"{calls[c]:>16}" for c in CALLS)
        )
    for title, key in (
        ("by the model's verdict", "per_model_verdict"),
        ("by the model's gender confidence (largest face)", "per_confidence"),
        ("over time (UTC day of the person's verdict)", "per_day"),
    ):
        lines += ["", f"{title}:", f"{'':<16}{'settled':>9}{'model right':>13}{'accuracy':>10}"]
        for name, counts in result[key].items():
            lines.append(
                f"{name:<16}{counts['settled']:>9}{counts['model_right']:>13}"
                f"{_pct(counts['accuracy']):>10}"
            )
    people = ", ".join(f"{who} {n}" for who, n in result["by_person"].items())
    lines += ["", f"settled by: {people or 'nobody yet'}"]
    return "\n".join(lines)


# -- learning from human verdicts (`facesieve learn --ledger`) -------------------------


def decided_under(fingerprint: str | None, policy: PolicyConfig) -> Require | None:
    """The `require` of the policy a row was decided or settled under; None when unknown.

    The ledger keeps only a policy's fingerprint: the row's policy is known when it is
    `policy` (today's) with one of the three `require`s, the one setting a person's
    keep depends on. A row decided under other thresholds, or before fingerprints
    were recorded, is unknown.
    """
    if fingerprint is None:
        return None
    for require in get_args(Require):
        candidate = policy.model_copy(update={"require": require})
        if policy_fingerprint(candidate.model_dump()) == fingerprint:
            return cast(Require, require)
    return None


@contextmanager
def ledger_as_labelled_folder(config: Config, folders: Sequence[Path]) -> Iterator[Path]:
    """The images people settled as a labelled folder (`labels.csv`) for `facesieve learn`.

    Each verdict is labelled under the policy its file was decided under (else the
    one the person settled it under; see `decided_under`), never by today's
    `require`: a keep under `require = man` labels a man, a reject a woman (the other
    way round under `woman`); "no human face" labels `no_face` under any policy. A
    keep or reject under `require = face`, or under a policy this config does not
    describe (other thresholds), says nothing known about gender: it is left out,
    and counted. Files are hard-linked (copied across filesystems) from
    where the verdicts put them into a folder beside the ledger, removed afterwards;
    deleted or changed files are left out.

    Raises:
        ConfigError: more than one folder is given, or no settled image is left.
    """
    if len(folders) > 1:
        raise ConfigError("DIR", "--ledger takes one folder: the one that was scanned")
    resolved = review_folders(config, folders[0] if folders else None)
    resolved.state.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="human-verdicts-", dir=resolved.state))
    log = get_logger()
    left_out: Counter[str] = Counter()
    try:
        with LedgerUnion.open_existing(resolved.ledger) as ledger:  # with its shards
            pairs = reviewed(ledger)
        rows = []
        for pair in pairs:
            if pair.human.destination is None:
                continue  # deleted
            gender, why = _gender(pair, config.policy)
            if why is not None:
                left_out[why] += 1
                log.info("learn_left_out", id=pair.human.id, reason=_LEFT_OUT[why])
                continue
            name = _link_unchanged(pair.human, work)
            if name is not None:
                label = "no_face" if pair.human.label == "no_face" else ""
                rows.append({"file": name, "gender": gender, "label": label})
        if left_out:
            # A verdict whose policy is unknown is never labelled by today's require.
            log.warning("learn_policy_unknown", **left_out)
        if not rows:
            raise ConfigError(
                "--ledger",
                f"{resolved.ledger} holds no settled image that is still there"
                + _left_out_text(left_out),
            )
        with (work / "labels.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["file", "gender", "label"])
            writer.writeheader()
            writer.writerows(rows)
        print(
            f"facesieve: {len(rows)} images settled by people, each labelled under the policy "
            f"it was decided under ({sum(r['gender'] == 'male' for r in rows)} men, "
            f"{sum(r['gender'] == 'female' for r in rows)} women){_left_out_text(left_out)}",
            file=sys.stderr,
        )
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


_LEFT_OUT = {
    "unknown_policy": "decided under a policy this config does not describe",
    "require_face": "decided under require = face",
}


def _left_out_text(left_out: Counter[str]) -> str:
    return "".join(f"; {n} left out: {_LEFT_OUT[why]}" for why, n in sorted(left_out.items()))


def _gender(pair: Reviewed, policy: PolicyConfig) -> tuple[str, str | None]:
    """(male or female, None) for a keep or reject, ("", None) for no human face;
    ("", why) when the verdict says nothing about gender (see `decided_under`)."""
    human = pair.human
    if human.label == "no_face":
        return "", None
    # The decision's policy first: the question a file in review puts to a person is
    # the one its policy asked (a keep under man: "it shows a man"), whatever config
    # the person's `approve` ran with. Then the person's own.
    require = decided_under(pair.decision.policy_fingerprint, policy) or decided_under(
        human.policy_fingerprint, policy
    )
    if require is None:
        return "", "unknown_policy"
    if require == "face":
        return "", "require_face"
    man = (human.label == "keep") == (require == "man")
    return "male" if man else "female", None


def _link_unchanged(human: LedgerRow, work: Path) -> str | None:
    """The settled file linked (or copied) into `work`: its name there; None when it
    is gone or changed since it was settled."""
    assert human.destination is not None
    source = Path(human.destination)
    try:
        info = os.lstat(source)
    except OSError:
        return None
    if (info.st_size, info.st_mtime_ns) != (human.size, human.mtime_ns):
        get_logger().info("learn_left_out", id=human.id, reason="changed since it was settled")
        return None
    name = f"{human.id}{source.suffix}"
    try:
        os.link(source, work / name, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, work / name, follow_symlinks=False)
    return name


def activate_head(head: GenderHead, config: Config) -> Path:
    """Write `head` to `[models] gender_head`, keeping the old one as `<name>.previous`.

    Raises:
        ConfigError: no `models.gender_head` is configured.
    """
    target = config.models.gender_head
    if target is None:
        raise ConfigError(
            "models.gender_head",
            '--activate writes the head there: set it (with models.gender = "combined")',
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file():
        shutil.copy2(target, target.with_name(target.name + ".previous"))
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(head.to_json() + "\n")
    os.replace(temporary, target)
    print(
        f"facesieve: activated {target} (the previous head, if any, is at {target.name}.previous);"
        " restart `facesieve watch` to load it",
        file=sys.stderr,
    )
    return target
