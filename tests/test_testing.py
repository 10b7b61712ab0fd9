"""`facesieve.testing`: the stand-in models, judged through the real judge, and the only ones."""

from __future__ import annotations

import re
import threading
from pathlib import Path

from PIL import Image

from facesieve.config import Config
from facesieve.judging.analyzer import FaceModel
from facesieve.judging.judge import Judgement, NotJudged, Status, judge
from facesieve.judging.policy import Verdict
from facesieve.testing import (
    Broken,
    ColourModel,
    HangsOnce,
    ModelCalledError,
    NoFaces,
    NoModels,
    SlowNoFaces,
)

TESTS = Path(__file__).parent


def _image(folder: Path, name: str, colour: tuple[int, int, int]) -> Path:
    path = folder / name
    Image.new("RGB", (48, 48), colour).save(path)
    return path


def test_the_stand_ins_judged_by_the_real_judge(tmp_path: Path) -> None:
    config = Config()
    green = _image(tmp_path, "green.png", (10, 200, 10))
    red = _image(tmp_path, "red.png", (200, 10, 10))

    def verdict(model: FaceModel, path: Path) -> Verdict:
        result = judge(path, model, config.policy, config.images)
        assert isinstance(result, Judgement), result
        return result.verdict

    assert verdict(ColourModel(), green) is Verdict.KEEP
    assert verdict(ColourModel(), red) is Verdict.REJECT
    assert verdict(NoFaces(), green) is Verdict.REJECT
    assert verdict(SlowNoFaces(0.01), green) is Verdict.REJECT
    for model in (NoModels(), Broken("weights corrupt")):
        result = judge(green, model, config.policy, config.images)
        assert isinstance(result, NotJudged) and result.status is Status.ERROR, result
    assert "weights corrupt" in str(judge(green, Broken(), config.policy, config.images))
    assert ColourModel().describe() == {"detector": "colour", "gender": "none"}
    assert NoModels().describe() == {"detector": "none", "gender": "none"}
    assert issubclass(ModelCalledError, AssertionError)


def test_hangs_once_blocks_until_released(tmp_path: Path) -> None:
    model = HangsOnce(timeout=30)
    config = Config()
    path = _image(tmp_path, "a.png", (0, 0, 0))
    results: list[object] = []
    worker = threading.Thread(
        target=lambda: results.append(judge(path, model, config.policy, config.images))
    )
    worker.start()
    assert model.entered.wait(10)
    assert results == [] and worker.is_alive()
    model.release.set()
    worker.join(10)
    [result] = results
    assert isinstance(result, Judgement) and result.verdict is Verdict.REJECT


def test_no_stand_in_model_is_written_again_in_the_tests() -> None:
    """The stand-ins live in facesieve.testing; a copy in a test file would drift from
    the FaceModel interface they honour."""
    copies = [
        f"{path.name}:{number}"
        for path in sorted(TESTS.glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.match(r"\s+def (analyze_many|use_gender)\(", line)
    ]
    assert copies == []
