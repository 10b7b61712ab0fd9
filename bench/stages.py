"""Where the time goes: each stage of judging one image, at 0.3, 2 and 12 megapixels.

Usage: python bench/stages.py [--data ../shared/data] [--repeat 10] [--detector NAME]

Builds JPEGs of three sizes from real FairFace photos (upscaled, re-encoded at
quality 90), then times each stage on the same machine in one run:
read, decode (with and without libjpeg's reduced-size decoding), detect (the
configured detector, libfacedetection by default, on the shrunk copy), align
(dlib 5-point chips), classify (ONNX gender model, face + mirror), decide (the
pure policy) and act (a move within one filesystem).
Prints milliseconds per image per stage and each stage's share.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"0.3 MP": (640, 480), "2 MP": (1632, 1224), "12 MP": (4000, 3000)}


def timed(action: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--detector", help="[models] detector (default: the default detector)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    from facesieve.acting.moves import move_file
    from facesieve.config import Config
    from facesieve.judging.analyzer import load_analyzer
    from facesieve.judging.images import decode_image, read_file
    from facesieve.judging.policy import decide

    config = Config(models={"detector": args.detector} if args.detector else {})
    analyzer = load_analyzer(config, gender=True)
    # The stages are timed one by one, so this reaches past analyze() on purpose:
    # align + classify time the bundled model, faceres the faceres half of `combined`.
    from facesieve.judging.gender import BundledGender, FaceresGender

    gender = BundledGender(mirror=config.models.gender_mirror)
    faceres = FaceresGender(mirror=config.models.gender_mirror)
    detector_floor = config.images
    source = Image.open(args.data / "fairface" / "fairface_0010.jpg").convert("RGB")
    rows = []
    with tempfile.TemporaryDirectory(prefix="facesieve-stages-") as tmp:
        folder = Path(tmp)
        for label, size in SIZES.items():
            # A 4:3 canvas with the photo scaled to its height, so the face keeps
            # the proportions it has in a real photo of that size.
            canvas = Image.new("RGB", size, (120, 120, 120))
            photo = source.resize((size[1], size[1]), Image.Resampling.BICUBIC)
            canvas.paste(photo, ((size[0] - size[1]) // 2, 0))
            path = folder / f"{label.replace(' ', '')}.jpg"
            canvas.save(path, quality=90)
            data = path.read_bytes()

            def full_decode(data: bytes = data) -> object:
                return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

            image = decode_image(
                data, max_pixels=detector_floor.max_pixels, max_side=detector_floor.detect_max_side
            )
            found = analyzer._detect(image.rgb)
            boxes = [box for box, _ in found]
            chips = gender.chips(image.rgb, boxes) if boxes else None
            faces = analyzer.analyze(image)
            stages = {
                "read": timed(lambda p=path: read_file(p, max_bytes=10**9), args.repeat),
                "decode (full size)": timed(full_decode, max(3, args.repeat // 2)),
                "decode (facesieve)": timed(
                    lambda d=data: decode_image(
                        d,
                        max_pixels=detector_floor.max_pixels,
                        max_side=detector_floor.detect_max_side,
                    ),
                    args.repeat,
                ),
                "detect": timed(lambda i=image: analyzer._detect(i.rgb), args.repeat),
                "align": timed(lambda i=image, b=boxes: gender.chips(i.rgb, b), args.repeat)
                if boxes
                else 0.0,
                "classify": timed(lambda c=chips: gender.male_probability(c), args.repeat)
                if chips is not None
                else 0.0,
                "faceres (mirrored)": timed(
                    lambda i=image, b=boxes: faceres.features(i.rgb, b), args.repeat
                )
                if boxes
                else 0.0,
                "decide": timed(lambda f=faces: decide(f, config.policy), args.repeat),
            }

            def act(path: Path = path) -> None:
                target = folder / "moved" / path.name
                move_file(path, target)
                shutil.move(target, path)  # put it back for the next round

            stages["act (move)"] = timed(act, args.repeat)
            rows.append((label, size, len(data), len(faces), stages))

    print(f"detector: {config.models.detector}")
    print(
        f"median of {args.repeat} runs, ms per image (2 cores, CPU); "
        f"'decode (full size)' is shown for comparison and not part of the total"
    )
    names = list(rows[0][4])
    print(f"{'stage':<20}" + "".join(f"{label:>18}" for label, *_ in rows))
    for name in names:
        cells = []
        for *_, stages in rows:
            total = sum(v for k, v in stages.items() if k != "decode (full size)")
            share = "" if name == "decode (full size)" else f" {stages[name] / total:4.0%}"
            cells.append(f"{stages[name]:>12.1f}{share:>6}")
        print(f"{name:<20}" + "".join(cells))
    print(
        f"{'total':<20}"
        + "".join(
            f"{sum(v for k, v in s.items() if k != 'decode (full size)'):>12.1f}{'':>6}"
            for *_, s in rows
        )
    )
    for label, size, nbytes, nfaces, _ in rows:
        print(f"{label}: {size[0]}x{size[1]}, {nbytes / 1e6:.2f} MB JPEG, {nfaces} face(s) found")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
