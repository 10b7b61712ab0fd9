"""`facesieve eval`: measure the engine on a labelled folder, as configured.

The models run once per image; every figure is then the pure policy applied to
the recorded faces, so a curve over thresholds costs no further model calls.

The folder holds a `labels.csv` with a `file` column, `gender` (male/female)
where a person is shown, `label = no_face` for images without a person, and
any other columns (`age`, `age_group`, `race`, ...) used for grouping. Children
(`age` < 18, or an `age_group` starting below 20) are reported apart from adults.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config, PolicyConfig
from ..errors import ConfigError
from ..judging.policy import Face, Verdict, decide
from ..outputs import write_output

__all__ = ["Figures", "Sample", "coverage_curve", "figures", "is_child", "load_samples"]

_RESERVED = {"file", "gender", "label"}
_CHILD_GROUPS = ("0-2", "3-9", "10-19")
THRESHOLDS = tuple(round(0.50 + 0.01 * i, 2) for i in range(50))


def is_child(labels: Mapping[str, str]) -> bool | None:
    """From `age` (< 18) or `age_group` (below 20, FairFace's bins); None when unknown."""
    age = labels.get("age", "") or ""
    if age.strip().isdigit():
        return int(age) < 18
    group = labels.get("age_group", "") or ""
    if group:
        return group in _CHILD_GROUPS
    return None


@dataclass(frozen=True, slots=True)
class Sample:
    """One labelled image and what the models found in it."""

    file: str
    labels: dict[str, str]
    faces: tuple[Face, ...] = ()
    unreadable: bool = False

    @property
    def is_person(self) -> bool:
        return self.labels.get("gender", "") in ("male", "female")

    @property
    def is_no_face(self) -> bool:
        return self.labels.get("label", "") == "no_face"

    @property
    def is_child(self) -> bool | None:
        return is_child(self.labels)


@dataclass
class Figures:
    """Counts behind each rate, so that a reader can check any figure by hand."""

    people: int = 0
    found: int = 0
    no_face_images: int = 0
    false_faces: int = 0
    decided: int = 0
    right: int = 0
    review: int = 0
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)

    @staticmethod
    def _rate(part: int, whole: int) -> float | None:
        return round(part / whole, 4) if whole else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "images_with_person": self.people,
            "images_without_face": self.no_face_images,
            "face_recall": self._rate(self.found, self.people),
            "false_face_rate": self._rate(self.false_faces, self.no_face_images),
            "gender_accuracy": self._rate(self.right, self.decided),
            "review_rate": self._rate(self.review, self.people),
            "decided": self.decided,
            "right": self.right,
            "reviewed": self.review,
            "found": self.found,
            "false_faces": self.false_faces,
            "confusion": self.confusion,
        }


def _counted(faces: Sequence[Face], policy: PolicyConfig) -> list[Face]:
    return [
        f
        for f in faces
        if f.confidence >= policy.min_face_confidence
        and min(f.box[2], f.box[3]) >= policy.min_face_size
    ]


def figures(samples: Iterable[Sample], policy: PolicyConfig) -> Figures:
    """Face recall and false faces under `require = face`; gender under `require = man`.

    Gender is judged as the policy judges it: an image is right when the verdict
    for "man" is keep for a man and reject for a woman; review is not a decision.
    """
    man = policy.model_copy(update={"require": "man"})
    result = Figures(confusion={t: {} for t in ("male", "female")})
    for sample in samples:
        counted = bool(_counted(sample.faces, policy))
        if sample.is_no_face:
            result.no_face_images += 1
            result.false_faces += counted
            continue
        if not sample.is_person:
            continue
        result.people += 1
        result.found += counted
        verdict = decide(sample.faces, man).verdict
        if sample.unreadable:
            predicted = "unreadable"
        elif verdict is Verdict.REVIEW:
            predicted = "review"
            result.review += 1
        elif not counted:
            predicted = "no face"
        else:
            predicted = "man" if verdict is Verdict.KEEP else "woman"
        if predicted in ("man", "woman"):
            result.decided += 1
            result.right += (predicted == "man") == (sample.labels["gender"] == "male")
        row = result.confusion[sample.labels["gender"]]
        row[predicted] = row.get(predicted, 0) + 1
    return result


def coverage_curve(
    samples: Sequence[Sample], policy: PolicyConfig, thresholds: Sequence[float] = THRESHOLDS
) -> list[dict[str, float | None]]:
    """Gender accuracy against coverage (decided / people) for each gender threshold."""
    points = []
    for threshold in thresholds:
        changed = policy.model_copy(update={"min_gender_confidence": threshold})
        result = figures(samples, changed)
        points.append(
            {
                "threshold": threshold,
                "coverage": Figures._rate(result.decided, result.people),
                "accuracy": Figures._rate(result.right, result.decided),
            }
        )
    return points


def load_samples(folder: Path) -> list[Sample]:
    labels = folder / "labels.csv"
    try:
        with labels.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise ConfigError("PATH", f"cannot read {labels}: {error.strerror}") from error
    if not rows or "file" not in rows[0]:
        raise ConfigError("PATH", f"{labels} needs a 'file' column")
    return [Sample(row["file"], {k: (v or "") for k, v in row.items() if k}) for row in rows]


def analyze(folder: Path, samples: list[Sample], config: Config) -> list[Sample]:
    """Run the configured models over every labelled image (nothing is changed)."""
    from ..engines.local import Engine
    from ..judging.analyzer import load_analyzer
    from ..judging.judge import Status

    # Gender figures are measured whatever the policy requires.
    engine = Engine(config, load_analyzer(config, gender=True))
    # The folder is the caller's own choice: a symlink on its path is followed here,
    # once; below it, as in any inbox, none is.
    root = folder.resolve()
    paths = [root / s.file for s in samples]
    found: dict[str, tuple[tuple[Face, ...], bool]] = {}
    for outcome in engine.process_many(paths):
        if outcome.status is Status.DECIDED:
            found[str(outcome.path)] = (
                outcome.faces,
                outcome.verdict is Verdict.UNREADABLE,
            )
    results = []
    for sample, path in zip(samples, paths, strict=True):
        judged = found.get(os.path.abspath(path))
        if judged is None:
            # Missing or unreadable for I/O reasons: not a figure about the models.
            print(f"facesieve: {path}: not judged, left out", file=sys.stderr)
            continue
        results.append(Sample(sample.file, sample.labels, *judged))
    return results


def _groups(samples: Sequence[Sample]) -> dict[str, dict[str, list[Sample]]]:
    columns = sorted({k for s in samples for k in s.labels} - _RESERVED)
    groups: dict[str, dict[str, list[Sample]]] = {}
    for column in columns:
        values: dict[str, list[Sample]] = {}
        for sample in samples:
            value = sample.labels.get(column, "")
            if value and column != "age":
                values.setdefault(value, []).append(sample)
        if column == "age":  # numeric ages: decades read better than 100 values
            for sample in samples:
                age = sample.labels.get("age", "")
                if age.isdigit():
                    decade = f"{int(age) // 10 * 10}-{int(age) // 10 * 10 + 9}"
                    values.setdefault(decade, []).append(sample)
        if 1 < len(values) <= 30:
            groups[column] = dict(sorted(values.items()))
    return groups


def report(samples: Sequence[Sample], policy: PolicyConfig) -> dict[str, Any]:
    children = [s for s in samples if s.is_child is True]
    adults = [s for s in samples if s.is_child is not True]
    result: dict[str, Any] = {
        "policy": policy.model_dump(),
        "images": len(samples),
        **figures(adults, policy).as_dict(),
        "children": figures(children, policy).as_dict() if children else None,
        "groups": {
            column: {value: figures(members, policy).as_dict() for value, members in values.items()}
            for column, values in _groups(adults).items()
        },
        "curve": coverage_curve(adults, policy),
    }
    return result


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def render(result: dict[str, Any]) -> str:
    """The figures as aligned text tables."""
    threshold = result["policy"]["min_gender_confidence"]
    lines = [
        f"{result['images']} images; adults below (children apart); "
        f"gender judged as `require = man` at confidence >= {threshold}",
        "",
        f"{'':<22}{'images':>8}{'face recall':>13}{'false faces':>13}"
        f"{'gender right':>14}{'review':>9}",
    ]

    def row(name: str, f: dict[str, Any]) -> str:
        images = f["images_with_person"] + f["images_without_face"]
        return (
            f"{name[:21]:<22}{images:>8}{_pct(f['face_recall']):>13}"
            f"{_pct(f['false_face_rate']):>13}{_pct(f['gender_accuracy']):>14}"
            f"{_pct(f['review_rate']):>9}"
        )

    lines.append(row("adults", result))
    if result["children"]:
        lines.append(row("children", result["children"]))
    for column, values in result["groups"].items():
        lines.append(f"by {column}:")
        for value, f in values.items():
            lines.append(row(f"  {value}", f))
    lines += ["", "confusion (adults; rows: label, columns: facesieve):"]
    predicted = ["man", "woman", "review", "no face", "unreadable"]
    lines.append(f"{'':<10}" + "".join(f"{p:>12}" for p in predicted))
    for truth, counts in result["confusion"].items():
        lines.append(f"{truth:<10}" + "".join(f"{counts.get(p, 0):>12}" for p in predicted))
    lines += ["", "accuracy against coverage (adults), by gender-confidence threshold:"]
    lines.append(f"{'threshold':>10}{'coverage':>10}{'accuracy':>10}")
    for point in result["curve"]:
        if round(point["threshold"] * 100) % 5 and point["threshold"] != threshold:
            continue
        mark = "  <- configured" if point["threshold"] == threshold else ""
        lines.append(
            f"{point['threshold']:>10.2f}{_pct(point['coverage']):>10}"
            f"{_pct(point['accuracy']):>10}{mark}"
        )
    return "\n".join(lines)


def plot(curve: Sequence[dict[str, Any]], threshold: float, path: Path) -> None:
    """Accuracy against coverage as a PNG, drawn with Pillow (no plotting stack needed)."""
    from PIL import Image, ImageDraw

    width, height, margin = 640, 480, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    points = [p for p in curve if p["coverage"] is not None and p["accuracy"] is not None]
    low = min([p["accuracy"] for p in points] + [0.8])

    def xy(coverage: float, accuracy: float) -> tuple[float, float]:
        x = margin + coverage * (width - 2 * margin)
        y = height - margin - (accuracy - low) / (1 - low) * (height - 2 * margin)
        return x, y

    draw.rectangle([margin, margin, width - margin, height - margin], outline="black")
    for tick in range(0, 11, 2):
        x, _ = xy(tick / 10, low)
        draw.text((x - 8, height - margin + 6), f"{tick * 10}%", fill="black")
    for tick in range(5):
        accuracy = low + (1 - low) * tick / 4
        _, y = xy(0, accuracy)
        draw.text((8, y - 6), f"{accuracy:.1%}", fill="black")
    draw.text((width / 2 - 70, height - 24), "coverage (decided / people)", fill="black")
    draw.text((margin, 20), "gender accuracy on decided images, by threshold", fill="black")
    draw.line([xy(p["coverage"], p["accuracy"]) for p in points], fill="navy", width=2)
    for p in points:
        if p["threshold"] == threshold:
            x, y = xy(p["coverage"], p["accuracy"])
            draw.ellipse([x - 5, y - 5, x + 5, y + 5], outline="red", width=2)
            draw.text((x + 8, y - 16), f"configured {threshold}", fill="red")
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"unknown file extension: {path.suffix}")  # as Pillow's save says
    encoded = io.BytesIO()
    image.save(encoded, fmt)
    write_output(path, encoded.getvalue())  # a symlink planted at FILE is not followed
