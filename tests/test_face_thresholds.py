"""The two face thresholds: raising the floor alone is valid, a contradiction names its key.

`min_face_confidence` is the floor below which a detection is no face; between it
and `sure_face_confidence` lie the "possible faces". With the sure threshold unset
it is the detector's measured value, or the floor when the floor is set above it
(the band of possible faces is then empty, as it is by default).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from facesieve.config import Config, PolicyConfig, load_config
from facesieve.errors import ConfigError

PROJECT = Path(__file__).resolve().parents[1]


def test_the_edit_the_example_config_invites_is_valid(tmp_path: Path) -> None:
    example = (PROJECT / "config.example.toml").read_text(encoding="utf-8")
    assert "# min_face_confidence = 0.80\n" in example
    edited = tmp_path / "facesieve.toml"
    edited.write_text(example.replace("# min_face_confidence = 0.80", "min_face_confidence = 0.85"))
    policy = load_config(edited).policy
    assert (policy.min_face_confidence, policy.sure_face_confidence) == (0.85, 0.85)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[policy]\nmin_face_confidence = 0.85\n", (0.85, 0.85)),
        (
            '[models]\ndetector = "libfacedetection"\n[policy]\nmin_face_confidence = 0.9\n',
            (0.9, 0.9),
        ),
        # The detector's measured sure threshold still wins when it is the higher.
        ('[models]\ndetector = "mtcnn"\n[policy]\nmin_face_confidence = 0.91\n', (0.91, 0.93)),
        ('[models]\ndetector = "mtcnn"\n[policy]\nmin_face_confidence = 0.95\n', (0.95, 0.95)),
        ("[policy]\nmin_face_confidence = 0.5\n", (0.5, 0.80)),
    ],
)
def test_an_unset_sure_threshold_is_never_below_the_floor(
    tmp_path: Path, text: str, expected: tuple[float, float]
) -> None:
    path = tmp_path / "facesieve.toml"
    path.write_text(text)
    policy = load_config(path).policy
    assert (policy.min_face_confidence, policy.sure_face_confidence) == expected


def test_the_policy_alone_and_a_command_line_override_agree() -> None:
    policy = PolicyConfig(min_face_confidence=0.85)
    assert policy.sure_face_confidence == 0.85
    config = Config(policy={"min_face_confidence": 0.85})
    assert config.with_policy(require="man").policy.sure_face_confidence == 0.85


def test_both_set_the_wrong_way_round_names_the_sure_threshold(tmp_path: Path) -> None:
    path = tmp_path / "facesieve.toml"
    path.write_text("[policy]\nmin_face_confidence = 0.85\nsure_face_confidence = 0.8\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == "policy.sure_face_confidence"
    assert "min_face_confidence" in str(caught.value)
