"""MTCNN one image per call against batches of exactly equal-shaped images.

Usage: python bench/mtcnn_batching.py [--data ../shared/data] [--images 64]

facesieve gives MTCNN one image per call, so that an image's faces never depend
on the images beside it. Batching only images of exactly the same shape would
keep the padding out; this measures what it would buy and whether it is
exactly batch-independent: the same FairFace photos (all 448x448, shrunk x0.5 as
the analyzer does), one per call and in batches of 8, alternating round by
round; prints ms an image of each and how many images' faces differ
(boxes, or confidences at 4 decimals).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "daemon"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    from facesieve.config import ModelsConfig
    from facesieve.judging.analyzer import Analyzer, _shrink
    from facesieve.judging.images import decode_image

    analyzer = Analyzer(ModelsConfig(detector="mtcnn"), min_face_size=40, gender=False)
    analyzer.load()
    mtcnn: Any = analyzer._detector._model.model  # type: ignore[union-attr]
    with (args.data / "fairface" / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))[: args.images]
    images = [
        _shrink(
            decode_image(
                (args.data / "fairface" / r["file"]).read_bytes(), max_pixels=10**8, max_side=1280
            ).rgb,
            0.5,
        )
        for r in rows
    ]
    assert len({i.shape for i in images}) == 1, "the bench needs equal shapes"

    def faces(found: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(tuple(f["box"]), round(float(f["confidence"]), 4)) for f in found]

    single_ms: list[float] = []
    batch_ms: list[float] = []
    single: list[Any] = []
    batched: list[Any] = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        single = [faces(mtcnn.detect_faces(image)) for image in images]
        single_ms.append((time.perf_counter() - started) * 1000 / len(images))
        started = time.perf_counter()
        batched = []
        for start in range(0, len(images), 8):
            batched += [faces(f) for f in mtcnn.detect_faces(images[start : start + 8])]
        batch_ms.append((time.perf_counter() - started) * 1000 / len(images))
    differ = sum(a != b for a, b in zip(single, batched, strict=True))
    shape = images[0].shape
    print(f"{len(images)} FairFace images of {shape[1]}x{shape[0]}, {args.rounds} rounds")
    print(f"one per call:          {statistics.median(single_ms):6.1f} ms an image (median round)")
    print(f"batches of 8 (equal):  {statistics.median(batch_ms):6.1f} ms an image (median round)")
    print(f"images whose faces differ between the two: {differ}/{len(images)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
