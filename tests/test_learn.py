"""`facesieve learn`: the head it writes and the CV figures it prints, against counts made here."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facesieve.evaluation.evaluate import Sample
from facesieve.evaluation.learn import (
    LabelledImage,
    fit_head,
    fit_logistic,
    stratified_folds,
    wilson,
)
from facesieve.judging.gender import BundledGender, GenderFeatures, GenderHead
from facesieve.judging.images import decode_image

from .cli_util import run_cli
from .conftest import DATA, is_adult, labelled


def test_wilson_interval_matches_the_textbook_values() -> None:
    # Wilson 95% for 8 of 10 is 0.490 to 0.943; for 0 of 20, 0 to 0.161.
    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson(0, 20) == pytest.approx((0.0, 0.1611), abs=1e-4)
    assert wilson(0, 0) is None


def test_stratified_folds_are_seeded_and_balanced() -> None:
    labels = [0] * 10 + [1] * 7
    folds = stratified_folds(labels, 3)
    assert folds == stratified_folds(labels, 3)
    for value, size in ((0, 10), (1, 7)):
        counts = [
            sum(1 for f, v in zip(folds, labels, strict=True) if v == value and f == k)
            for k in range(3)
        ]
        assert max(counts) - min(counts) <= 1 and sum(counts) == size


def test_logistic_fit_reaches_the_penalised_optimum() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 5))
    y = (x[:, 0] + 0.5 * rng.normal(size=60) > 0).astype(np.float64)
    weights, bias, mean, scale = fit_logistic(x, y, l2=2.0)
    z = (x - mean) / scale
    p = 1 / (1 + np.exp(-(z @ weights + bias)))
    # The gradient of the penalised log-loss is zero at the optimum (bias unpenalised).
    assert np.abs(z.T @ (p - y) + 2.0 * weights).max() < 1e-6
    assert abs(float(np.sum(p - y))) < 1e-6
    assert weights[0] > 0


def small_folder(folder: Path) -> list[dict[str, str]]:
    """24 adult FairFace photos (12 men, 12 women), 2 children and 2 no-face photos."""
    folder.mkdir()
    adults = [r for r in labelled("fairface") if is_adult("fairface", r)]
    men = [r for r in adults if r["gender"] == "male"][:12]
    women = [r for r in adults if r["gender"] == "female"][:12]
    children = [r for r in labelled("fairface") if not is_adult("fairface", r)][:2]
    rows = [
        {"file": r["file"], "gender": r["gender"], "age_group": r["age_group"]}
        for r in men + women + children
    ]
    for row in rows:
        shutil.copy2(DATA / "fairface" / row["file"], folder / row["file"])
    for row in labelled("noface")[:2]:
        rows.append({"file": row["file"], "gender": "", "age_group": ""})
        shutil.copy2(DATA / "noface" / row["file"], folder / row["file"])
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["file", "gender", "age_group"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def right_at(male: list[float], truth: list[bool], coverage: float) -> tuple[int, int]:
    """Counted here: the most confident share of faces, right when the side matches."""
    ranked = sorted(zip(male, truth, strict=True), key=lambda pair: -max(pair[0], 1 - pair[0]))
    kept = ranked[: round(coverage * len(ranked))]
    return sum((p >= 0.5) == t for p, t in kept), len(kept)


@pytest.mark.models
@pytest.mark.data
@pytest.mark.slow
def test_learn_writes_a_head_and_its_figures_equal_a_count(
    tmp_path: Path, analyzer: Any, deepface_home: Path
) -> None:
    folder = tmp_path / "labelled"
    rows = small_folder(folder)
    out = tmp_path / "head.json"
    run = run_cli("learn", str(folder), "--out", str(out), "--json", "--folds", "3")
    assert run.code == 0, run.stderr[-2000:]
    result = run.records[0]

    # The faces learn trains on, found here with the same default detector.
    bundled = BundledGender(mirror=True)
    features = GenderFeatures(mirror=True)
    male: list[float] = []
    truth: list[bool] = []
    trainable: list[LabelledImage] = []
    for row in rows[:24]:
        image = decode_image((folder / row["file"]).read_bytes(), max_pixels=10**8, max_side=1280)
        faces = analyzer.analyze(image)
        if not faces:
            continue
        largest = max(faces, key=lambda f: f.area)
        chip = bundled.chips(image.rgb, [largest.box])
        male.append(float(bundled.male_probability(chip)[0]))
        truth.append(row["gender"] == "male")
        sample = Sample(row["file"], row, (largest,))
        trainable.append(
            LabelledImage("labelled", sample, tuple(features.of(image.rgb, [largest.box])))
        )
    head = result["head"]
    assert head["faces"] == len(male) >= 22
    assert head["men"] == sum(truth) and head["women"] == len(truth) - sum(truth)
    for coverage in ("100%", "90%", "75%"):
        right, decided = right_at(male, truth, int(coverage[:-1]) / 100)
        cell = result["figures"]["bundled"][coverage]
        assert (cell["right"], cell["decided"]) == (right, decided), coverage
        assert cell["ci95"] == list(wilson(right, decided) or ())
    # The head's CV, redone here: the same seeded folds, a head fit per fold, counted here.
    folds = stratified_folds([("labelled", int(t), 1) for t in truth], 3)
    held_out = [0.0] * len(trainable)
    for fold in range(3):
        fitted = fit_head([r for r, f in zip(trainable, folds, strict=True) if f != fold])
        for index, (row, f) in enumerate(zip(trainable, folds, strict=True)):
            if f == fold:
                held_out[index] = float(fitted.male_probability(row.features)[0])
    for coverage in ("100%", "75%"):
        right, decided = right_at(held_out, truth, int(coverage[:-1]) / 100)
        cell = result["figures"]["new head (3-fold CV)"][coverage]
        assert (cell["right"], cell["decided"]) == (right, decided), coverage

    written = GenderHead.load(out)
    assert written.description["faces"] == len(male)
    assert [d["folder"] for d in written.description["trained_on"]] == ["labelled"]
    assert written.combine == ("head", "bundled", "faceres")


def test_learn_refuses_a_folder_without_labels(tmp_path: Path) -> None:
    run = run_cli("learn", str(tmp_path))
    assert run.code == 3 and "labels.csv" in run.stderr


@pytest.mark.models
@pytest.mark.data
@pytest.mark.slow
def test_cross_validated_gender_on_fairface_meets_the_readme(deepface_home: Path) -> None:
    """The FairFace gender figure of docs/figures.md: head and threshold fit without the
    held-out fold."""
    from facesieve.config import Config
    from facesieve.evaluation.learn import cross_validate, extract, held_out_figures

    labelled("fairface")
    config = Config()
    rows = extract([DATA / "fairface"], config)
    policy = config.policy.model_copy(update={"require": "man"})
    held = cross_validate(rows, policy, k=5)
    assert sorted({h.fold for h in held}) == [0, 1, 2, 3, 4]
    adults = [h for h in held if h.sample.is_child is not True]
    figures = held_out_figures(adults, policy)
    # The exact counts docs/figures.md quotes (144/144 right, 36/180 to review): the
    # folds are seeded, so any change in the models, the head or the threshold choice
    # shows here (the bundled model alone: 96/96 right, 84/180 to review).
    assert figures.people == 180
    assert (figures.right, figures.decided) == (144, 144)
    assert figures.review == 36
