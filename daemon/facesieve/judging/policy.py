"""The policy: faces in, verdict out. Pure: no I/O, no models, no clock.

Detections are sorted into three kinds before anything is decided:
  - ignored: smaller than `min_face_size` or below `min_face_confidence`;
  - uncertain: a detection between `min_face_confidence` and `sure_face_confidence`;
  - sure: everything else.
A gender call below `min_gender_confidence` is uncertain too. Whenever the verdict
would hinge on something uncertain, the verdict is `review`, never a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from ..config import PolicyConfig

__all__ = ["Decision", "Face", "Gender", "Verdict", "decide", "not_image", "unreadable"]

Gender = Literal["man", "woman"]


class Verdict(StrEnum):
    KEEP = "keep"
    REJECT = "reject"
    REVIEW = "review"
    UNREADABLE = "unreadable"
    NOT_IMAGE = "not_image"  # a regular file whose bytes are no image format at all


@dataclass(frozen=True, slots=True)
class Face:
    """One detected face, in the coordinates of the original (EXIF-oriented) image."""

    box: tuple[int, int, int, int]  # x, y, width, height
    confidence: float  # detector confidence, 0..1
    gender: Gender | None = None
    gender_confidence: float | None = None  # probability of `gender`, 0.5..1

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]

    def as_dict(self) -> dict[str, object]:
        return {
            "box": list(self.box),
            "confidence": round(self.confidence, 4),
            "gender": self.gender,
            "gender_confidence": (
                None if self.gender_confidence is None else round(self.gender_confidence, 4)
            ),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: str


def unreadable(why: str) -> Decision:
    return Decision(Verdict.UNREADABLE, f"not a readable image: {why}")


def not_image(what: str) -> Decision:
    return Decision(Verdict.NOT_IMAGE, f"not an image: {what}")


def _describe(face: Face) -> str:
    gender = "unknown gender" if face.gender is None else face.gender
    confidence = "" if face.gender_confidence is None else f" {face.gender_confidence:.0%}"
    return f"{gender}{confidence}"


def decide(faces: Sequence[Face], policy: PolicyConfig) -> Decision:
    """Turn the detected faces of one image into a verdict with a readable reason."""
    large = [f for f in faces if min(f.box[2], f.box[3]) >= policy.min_face_size]
    sure = [f for f in large if f.confidence >= policy.sure_face_confidence]
    uncertain = [
        f for f in large if policy.min_face_confidence <= f.confidence < policy.sure_face_confidence
    ]

    if not sure:
        if uncertain:
            best = max(f.confidence for f in uncertain)
            return Decision(
                Verdict.REVIEW,
                f"possible face (detector confidence {best:.2f} < "
                f"{policy.sure_face_confidence:.2f})",
            )
        return Decision(Verdict.REJECT, _no_face_reason(faces, large, policy))

    if policy.require == "face":
        return Decision(Verdict.KEEP, f"{_count(len(sure), 'face')} found")

    wanted = policy.require
    counted = [max(sure, key=lambda f: f.area)] if policy.faces == "largest" else sure

    def confident(face: Face) -> bool:
        return (
            face.gender is not None
            and face.gender_confidence is not None
            and face.gender_confidence >= policy.min_gender_confidence
        )

    matching = [f for f in counted if confident(f) and f.gender == wanted]
    other = [f for f in counted if confident(f) and f.gender != wanted]
    unsure = [f for f in counted if not confident(f)]
    scope = {"largest": "largest face", "any": "a face", "all": "every face"}[policy.faces]

    if policy.faces == "all":
        if other:
            return Decision(
                Verdict.REJECT, f"{_count(len(other), 'face')} not {wanted} ({_describe(other[0])})"
            )
        if unsure:
            return _unsure(unsure, policy)
        return Decision(Verdict.KEEP, f"{scope} {wanted} ({_count(len(matching), 'face')})")

    # "any" and "largest": one confident match is enough.
    if matching:
        return Decision(Verdict.KEEP, f"{scope} {wanted} ({_describe(matching[0])})")
    if unsure:
        return _unsure(unsure, policy)
    return Decision(Verdict.REJECT, f"{scope} not {wanted} ({_describe(other[0])})")


def _unsure(unsure: Sequence[Face], policy: PolicyConfig) -> Decision:
    face = unsure[0]
    return Decision(
        Verdict.REVIEW,
        f"gender uncertain ({_describe(face)} < {policy.min_gender_confidence:.0%})",
    )


def _no_face_reason(faces: Sequence[Face], large: Sequence[Face], policy: PolicyConfig) -> str:
    if len(large) < len(faces):
        return f"no face of at least {policy.min_face_size} px"
    return "no face found"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
