"""One answer per image: the faces and verdict of an image never depend on the
other images judged with it (issue 11: MTCNN padded a batch to its largest image,
and `check --require man fairface_0013.jpg` said review where a `scan` of it beside
one cat photo said keep).

A mixed-size folder (FairFace 448 px, UTKFace 200 px, cats of several sizes, a
group photo) is judged batched, as scan, eval and watch judge, and one image at
a time, as `check FILE` judges; boxes, confidences (to 4 decimals), genders,
verdicts and reasons must be identical.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from facesieve.acting.apply import Outcome
from facesieve.config import Config
from facesieve.engines.local import Engine
from facesieve.judging.judge import Status

from .cli_util import run_cli
from .conftest import copy_images, labelled

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]

MIXED = {
    "fairface": ["fairface_0013.jpg", "fairface_0010.jpg", "fairface_0002.jpg"],
    "utkface": ["25_0_3_20170104214432805.jpg.chip.jpg", "25_1_0_20170104234942017.jpg.chip.jpg"],
    # 498x415, 105x200, 173x183, 335x500
    "noface": ["cat.4001.jpg", "cat.4017.jpg", "cat.4053.jpg", "cat.4009.jpg"],
    "groups": ["2008_001322.jpg"],
}


def answers(outcomes: list[Outcome]) -> dict[str, dict[str, Any]]:
    found = {}
    for outcome in outcomes:
        assert outcome.status is Status.DECIDED, outcome
        found[outcome.path.name] = outcome.as_dict(with_action=False)
    return found


def test_scan_and_check_give_each_image_the_same_answer(
    tmp_path: Path, deepface_home: Path
) -> None:
    labelled("fairface")
    folder = tmp_path / "mixed"
    paths = copy_images(folder, MIXED)

    batched = run_cli("scan", str(folder), "--dry-run", "--json", "--require", "man")
    assert batched.code == 0, batched.stderr[-2000:]
    by_scan = {Path(r["path"]).name: r for r in batched.records}
    for record in by_scan.values():
        del record["action"], record["destination"]

    by_check = {}
    for path in paths:
        single = run_cli("check", str(path), "--json", "--require", "man")
        assert single.code in (0, 1), single.stderr[-2000:]  # 1: judged, not kept
        (record,) = single.records
        by_check[Path(record["path"]).name] = record

    assert set(by_scan) == {p.name for p in paths}
    assert by_scan == by_check
    # The folder is worth the test only if it holds faces and images without any.
    assert any(r["faces"] for r in by_scan.values())
    assert any(not r["faces"] for r in by_scan.values())


@pytest.mark.parametrize("detector", ["default", "mtcnn"])
def test_batched_and_single_runs_agree_in_process(
    tmp_path: Path, detector: str, request: pytest.FixtureRequest
) -> None:
    """The engine as scan, eval and watch drive it (read ahead, batches of 8) against
    one `process` call per file in another order, for each detector."""
    labelled("fairface")
    analyzer = request.getfixturevalue("analyzer" if detector == "default" else "mtcnn_analyzer")
    models = {"detector": "mtcnn"} if detector == "mtcnn" else {}
    config = Config(models=models, policy={"require": "man"})
    paths = copy_images(tmp_path / "mixed", MIXED)
    engine = Engine(config, analyzer)

    batched = answers(list(engine.process_many(paths)))
    shuffled = paths[:]
    random.Random(13).shuffle(shuffled)
    single = answers([engine.process(p) for p in shuffled])

    assert batched == single
    assert sum(bool(r["faces"]) for r in batched.values()) >= 5
