"""`facesieve learn`: fit the gender head from labelled folders, and honest figures by k-fold CV.

The detector and both gender models run once per image; everything after that
(fitting a logistic head, choosing a threshold, cross-validation) is numpy on the
recorded features, so a k-fold run costs seconds.

Cross-validation is stratified by gender and seeded. Inside each fold the head is
fit, and `min_gender_confidence` is chosen, on the training folds only: the
threshold from out-of-fold predictions of an inner k-fold over the training
folds, so the held-out fold plays no part in either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..config import Config, PolicyConfig
from ..errors import ConfigError, FacesieveError
from ..judging.gender import FaceFeatures, GenderHead, logit
from ..judging.policy import Face, Gender
from .evaluate import THRESHOLDS, Figures, Sample, coverage_curve, figures, load_samples

__all__ = [
    "HeldOut",
    "LabelledImage",
    "choose_threshold",
    "cross_validate",
    "extract",
    "fit_head",
    "fit_logistic",
    "fixed",
    "head_fitter",
    "held_out_figures",
    "stratified_folds",
    "wilson",
]

# Chosen by 5-fold CV on the FairFace adults of ../shared/data (see the README): the
# head's logit averaged with both models' logits, L2 = 10 on standardized features.
DEFAULT_L2 = 10.0
DEFAULT_COMBINE = ("head", "bundled", "faceres")
DEFAULT_TARGET = 1.0
SEED = 11


@dataclass(frozen=True)
class LabelledImage:
    """One labelled image: its faces (as the detector saw them) and their gender features."""

    folder: str
    sample: Sample  # faces without gender: the combined model fills them per fold
    features: tuple[FaceFeatures, ...]

    @property
    def trainable(self) -> bool:
        """An adult person whose largest face was found: a row for the head."""
        return self.sample.is_person and self.sample.is_child is not True and bool(self.features)

    @property
    def male(self) -> int:
        return int(self.sample.labels.get("gender") == "male")

    def largest(self) -> FaceFeatures:
        index = max(range(len(self.sample.faces)), key=lambda i: self.sample.faces[i].area)
        return self.features[index]


def wilson(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float] | None:
    """The Wilson score 95% interval of a proportion (None for no trials)."""
    if trials <= 0:
        return None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def extract(
    folders: Sequence[Path], config: Config, progress: Callable[[str], None] | None = None
) -> list[LabelledImage]:
    """Run the configured detector and the bundled + faceres models once per labelled image."""
    from ..judging.analyzer import load_analyzer
    from ..judging.gender import GenderFeatures
    from ..judging.images import load_image

    detecting = config.model_copy(
        update={"models": config.models.model_copy(update={"gender": "bundled"})}
    )
    analyzer = load_analyzer(detecting)
    gender = GenderFeatures(mirror=config.models.gender_mirror)
    images: list[LabelledImage] = []
    for folder in folders:
        for sample in load_samples(folder):
            path = folder / sample.file
            try:
                image = load_image(path, config.images)
            except FacesieveError as error:
                if progress is not None:
                    progress(f"{path}: left out: {error}")
                continue
            faces = analyzer.analyze(image)
            boxes = [
                (
                    round(f.box[0] / image.scale),
                    round(f.box[1] / image.scale),
                    max(2, round(f.box[2] / image.scale)),
                    max(2, round(f.box[3] / image.scale)),
                )
                for f in faces
            ]
            plain = tuple(Face(f.box, f.confidence) for f in faces)
            images.append(
                LabelledImage(
                    folder.name,
                    Sample(sample.file, sample.labels, plain),
                    tuple(gender.of(image.rgb, boxes)),
                )
            )
    return images


def fit_logistic(
    x: NDArray[np.float64], y: NDArray[np.float64], l2: float
) -> tuple[NDArray[np.float64], float, NDArray[np.float64], NDArray[np.float64]]:
    """L2-penalised logistic regression on standardized features, by Newton's method.

    Returns (weights, bias, mean, scale); the bias is not penalised.
    """
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-8] = 1.0
    design = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    penalty = np.full(design.shape[1], l2)
    penalty[-1] = 0.0
    theta = np.zeros(design.shape[1])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(design @ theta)))
        gradient = design.T @ (p - y) + penalty * theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    return theta[:-1], float(theta[-1]), mean, scale


def fit_head(
    rows: Sequence[LabelledImage],
    *,
    l2: float = DEFAULT_L2,
    combine: Sequence[str] = DEFAULT_COMBINE,
    description: dict[str, Any] | None = None,
) -> GenderHead:
    """A head fit on the largest face of every trainable row."""
    train = [r for r in rows if r.trainable]
    if len({r.male for r in train}) < 2:
        raise ConfigError("PATH", "learning needs labelled faces of both genders")
    x = np.stack([r.largest().vector() for r in train])
    y = np.array([r.male for r in train], dtype=np.float64)
    weights, bias, mean, scale = fit_logistic(x, y, l2)
    return GenderHead(weights, bias, mean, scale, tuple(combine), dict(description or {}))


def stratified_folds(labels: Sequence[Hashable], k: int, seed: int = SEED) -> list[int]:
    """A fold index per item: each class shuffled (seeded) and dealt round-robin."""
    rng = np.random.default_rng(seed)
    folds = [0] * len(labels)
    for value in sorted(set(labels), key=repr):
        members = [i for i, label in enumerate(labels) if label == value]
        rng.shuffle(members)
        for position, index in enumerate(members):
            folds[index] = position % k
    return folds


def with_gender(row: LabelledImage, male: Sequence[float]) -> Sample:
    """The row's sample with each face's gender set from P(male)."""
    faces = []
    for face, p in zip(row.sample.faces, male, strict=True):
        gender: Gender = "man" if p >= 0.5 else "woman"
        faces.append(replace(face, gender=gender, gender_confidence=max(p, 1 - p)))
    return replace(row.sample, faces=tuple(faces))


def predict(head: GenderHead, row: LabelledImage) -> list[float]:
    if not row.features:
        return []
    return [float(p) for p in head.male_probability(row.features)]


def choose_threshold(samples: Sequence[Sample], policy: PolicyConfig, target: float) -> float:
    """The lowest gender threshold whose accuracy on decided faces reaches `target`."""
    for point in coverage_curve(samples, policy):
        if point["accuracy"] is not None and point["accuracy"] >= target:
            return float(point["threshold"] or THRESHOLDS[-1])
    return THRESHOLDS[-1]


# A fitted model: P(male) for each face of a row.
Predictor = Callable[[LabelledImage], list[float]]
Fitter = Callable[[Sequence[LabelledImage]], Predictor]


def head_fitter(l2: float = DEFAULT_L2, combine: Sequence[str] = DEFAULT_COMBINE) -> Fitter:
    """Fits a head on the trainable rows given; predicts with it."""

    def fit(train: Sequence[LabelledImage]) -> Predictor:
        head = fit_head(train, l2=l2, combine=combine)
        return lambda row: predict(head, row)

    return fit


def fixed(part: str) -> Fitter:
    """A model that learns nothing: the bundled or faceres probability as it is."""

    def fit(train: Sequence[LabelledImage]) -> Predictor:
        if part == "bundled":
            return lambda row: [f.bundled for f in row.features]
        if part == "faceres":
            return lambda row: [f.faceres for f in row.features]
        raise ValueError(f"no fixed model {part!r}")

    return fit


def _stratum(row: LabelledImage) -> tuple[str, int, int]:
    return row.folder, row.male, int(row.trainable)


def _out_of_fold(
    rows: Sequence[LabelledImage],
    train: Sequence[LabelledImage],
    k: int,
    fit: Fitter,
) -> dict[int, list[float]]:
    """P(male) for every face of `rows`, each from a model fit without that row's fold.

    Only rows also in `train` are fit on.
    """
    folds = stratified_folds([_stratum(r) for r in rows], k)
    trainable = {id(r) for r in train}
    result: dict[int, list[float]] = {}
    for fold in range(k):
        model = fit(
            [r for r, f in zip(rows, folds, strict=True) if f != fold and id(r) in trainable]
        )
        for row, f in zip(rows, folds, strict=True):
            if f == fold:
                result[id(row)] = model(row)
    return result


@dataclass(frozen=True)
class HeldOut:
    """One image predicted by a fold's head, and the threshold that fold chose."""

    folder: str
    sample: Sample
    threshold: float
    fold: int


def cross_validate(
    rows: Sequence[LabelledImage],
    policy: PolicyConfig,
    *,
    k: int = 5,
    train_folders: Sequence[str] | None = None,
    fit: Fitter | None = None,
    target: float = DEFAULT_TARGET,
) -> list[HeldOut]:
    """Every row predicted by a model fit, and judged at a threshold chosen, without it.

    Folds are stratified (folder, gender, trainable). In each fold, only the trainable
    (adult, face found) rows of `train_folders` (default: all) among the training
    folds fit the model (`fit`, default: the head); the threshold is the lowest that
    reaches `target` accuracy on their inner out-of-fold predictions.
    """
    rows = list(rows)
    fit = fit or head_fitter()
    allowed = set(train_folders) if train_folders else {r.folder for r in rows}
    folds = stratified_folds([_stratum(r) for r in rows], k)
    held_out: list[HeldOut] = []
    for fold in range(k):
        train = [
            r
            for r, f in zip(rows, folds, strict=True)
            if f != fold and r.trainable and r.folder in allowed
        ]
        inner = _out_of_fold(train, train, k, fit)
        inner_samples = [with_gender(r, inner[id(r)]) for r in train]
        threshold = choose_threshold(inner_samples, policy, target)
        model = fit(train)
        for row, f in zip(rows, folds, strict=True):
            if f == fold:
                held_out.append(HeldOut(row.folder, with_gender(row, model(row)), threshold, fold))
    return held_out


def held_out_figures(items: Sequence[HeldOut], policy: PolicyConfig) -> Figures:
    """Figures summed over folds, each fold's images judged at that fold's threshold."""
    total = Figures(confusion={t: {} for t in ("male", "female")})
    for threshold in sorted({i.threshold for i in items}):
        judged = policy.model_copy(update={"min_gender_confidence": threshold})
        part = figures([i.sample for i in items if i.threshold == threshold], judged)
        for name in (
            "people",
            "found",
            "no_face_images",
            "false_faces",
            "decided",
            "right",
            "review",
        ):
            setattr(total, name, getattr(total, name) + getattr(part, name))
        for truth, counts in part.confusion.items():
            row = total.confusion.setdefault(truth, {})
            for predicted, count in counts.items():
                row[predicted] = row.get(predicted, 0) + count
    return total


def _right_at_coverage(
    male: NDArray[np.float64], truth: NDArray[np.float64], coverage: float
) -> tuple[int, int]:
    """(right, decided) when only the most confident `coverage` share of faces is decided."""
    confidence = np.maximum(male, 1 - male)
    decided = np.argsort(-confidence, kind="stable")[: round(coverage * len(male))]
    right = int(np.sum((male[decided] >= 0.5) == (truth[decided] == 1)))
    return right, len(decided)


COVERAGES = (1.0, 0.9, 0.75)


def compare(
    rows: Sequence[LabelledImage],
    *,
    k: int,
    l2: float,
    combine: Sequence[str],
    shipped: GenderHead | None,
) -> dict[str, dict[str, Any]]:
    """Accuracy at fixed coverages on the largest face of each trainable row, per model.

    The new head's figures are out-of-fold (k-fold CV); the fixed models' are plain.
    """
    train = [r for r in rows if r.trainable]
    truth = np.array([r.male for r in train], dtype=np.float64)
    largest = [r.largest() for r in train]
    bundled = np.array([f.bundled for f in largest])
    faceres = np.array([f.faceres for f in largest])
    oof = _out_of_fold(train, train, k, head_fitter(l2, combine))
    models: dict[str, NDArray[np.float64]] = {
        "bundled": bundled,
        "faceres": faceres,
        "bundled+faceres (logit average)": 1 / (1 + np.exp(-(logit(bundled) + logit(faceres)) / 2)),
    }
    if shipped is not None:
        models["shipped head (as is, not CV)"] = shipped.male_probability(largest)
    models[f"new head ({k}-fold CV)"] = np.array([oof[id(r)][_largest_index(r)] for r in train])
    result: dict[str, dict[str, Any]] = {}
    for name, male in models.items():
        result[name] = {}
        for coverage in COVERAGES:
            right, decided = _right_at_coverage(male, truth, coverage)
            result[name][f"{coverage:.0%}"] = {
                "right": right,
                "decided": decided,
                "accuracy": round(right / decided, 4) if decided else None,
                "ci95": wilson(right, decided),
            }
    return result


def _largest_index(row: LabelledImage) -> int:
    return max(range(len(row.sample.faces)), key=lambda i: row.sample.faces[i].area)
