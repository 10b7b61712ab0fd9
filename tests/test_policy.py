"""The policy in isolation: hand-made faces in, verdicts out."""

from __future__ import annotations

import pytest

from facesieve.config import PolicyConfig
from facesieve.judging.policy import Face, Verdict, decide

MAN = Face((10, 10, 100, 100), 0.999, "man", 0.99)
WOMAN = Face((200, 10, 80, 80), 0.999, "woman", 0.98)
UNSURE_MAN = Face((10, 10, 100, 100), 0.999, "man", 0.6)
FAINT = Face((10, 10, 100, 100), 0.91, "man", 0.99)
TINY = Face((0, 0, 8, 8), 0.999, "man", 0.99)


def policy(**changes: object) -> PolicyConfig:
    # A possible-face band of its own, whatever the default detector's thresholds are.
    band = {"min_face_confidence": 0.90, "sure_face_confidence": 0.93}
    return PolicyConfig.model_validate({**band, **changes})


def test_no_face_is_reject_with_reason() -> None:
    decision = decide([], policy())
    assert decision.verdict is Verdict.REJECT
    assert decision.reason == "no face found"


def test_face_use_case_keeps_any_sure_face() -> None:
    assert decide([WOMAN], policy(require="face")).verdict is Verdict.KEEP


def test_faint_detection_goes_to_review_not_keep_or_reject() -> None:
    decision = decide([FAINT], policy(require="face"))
    assert decision.verdict is Verdict.REVIEW
    assert "possible face" in decision.reason


def test_detection_below_the_floor_is_not_a_face() -> None:
    weak = Face((10, 10, 100, 100), 0.5, "man", 0.99)
    assert decide([weak], policy()).verdict is Verdict.REJECT


def test_faces_below_min_size_do_not_count() -> None:
    decision = decide([TINY], policy(min_face_size=20))
    assert decision.verdict is Verdict.REJECT
    assert "20 px" in decision.reason


@pytest.mark.parametrize(
    ("require", "faces", "expected"),
    [
        ("man", [MAN], Verdict.KEEP),
        ("man", [WOMAN], Verdict.REJECT),
        ("woman", [WOMAN], Verdict.KEEP),
        ("woman", [MAN], Verdict.REJECT),
        ("man", [UNSURE_MAN], Verdict.REVIEW),
        ("woman", [UNSURE_MAN], Verdict.REVIEW),
    ],
)
def test_gender_use_cases(require: str, faces: list[Face], expected: Verdict) -> None:
    assert decide(faces, policy(require=require)).verdict is expected


def test_largest_face_decides_in_largest_mode() -> None:
    # MAN's box is larger than WOMAN's.
    assert decide([WOMAN, MAN], policy(require="man", faces="largest")).verdict is Verdict.KEEP
    assert decide([WOMAN, MAN], policy(require="woman", faces="largest")).verdict is Verdict.REJECT


def test_all_mode_rejects_a_mixed_group() -> None:
    assert decide([MAN, WOMAN], policy(require="man", faces="all")).verdict is Verdict.REJECT


def test_all_mode_reviews_when_one_face_is_uncertain() -> None:
    other = Face((300, 10, 90, 90), 0.999, "man", 0.55)
    assert decide([MAN, other], policy(require="man", faces="all")).verdict is Verdict.REVIEW


def test_any_mode_keeps_a_mixed_group() -> None:
    assert decide([MAN, WOMAN], policy(require="woman", faces="any")).verdict is Verdict.KEEP


def test_gender_threshold_is_inclusive() -> None:
    face = Face((10, 10, 100, 100), 0.999, "man", 0.9)
    assert decide([face], policy(require="man", min_gender_confidence=0.9)).verdict is Verdict.KEEP
    strict = policy(require="man", min_gender_confidence=0.91)
    assert decide([face], strict).verdict is Verdict.REVIEW


def test_every_verdict_has_a_reason() -> None:
    for faces in ([], [MAN], [WOMAN], [UNSURE_MAN], [FAINT], [TINY], [MAN, WOMAN]):
        for require in ("face", "man", "woman"):
            for mode in ("any", "all", "largest"):
                decision = decide(faces, policy(require=require, faces=mode))
                assert decision.reason.strip()
