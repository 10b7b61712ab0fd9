"""What the decode budget costs and what it saves, measured side by side in one run.

1. Ordinary photos: decoding in the daemon's process (`images.decode_image`)
   against decoding in the budgeted child process (`decoder.Decoder`), rounds
   interleaved; prints ms per image and the ratio.
2. A scan bomb (9000 x 9000 progressive JPEG, 5,000 extra scans, ~1 MB):
   seconds until it is `unreadable` when refused by its scan count, and when
   only the time budget stops it.

Usage: python bench/decode_budget.py [--images N] [--rounds R] [--timeout S]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "daemon"))
sys.path.insert(0, str(ROOT))

from tests.images_util import scan_bomb  # noqa: E402

from facesieve.config import ImagesConfig  # noqa: E402
from facesieve.errors import UnreadableImageError  # noqa: E402
from facesieve.judging.decoder import Decoder  # noqa: E402
from facesieve.judging.images import decode_image  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()

    files = sorted((DATA / "fairface").glob("*.jpg"))[: args.images // 2]
    files += sorted((DATA / "utkface").glob("*.jpg"))[: args.images - len(files)]
    blobs = [f.read_bytes() for f in files]
    images = ImagesConfig(decode_timeout=args.timeout)
    with Decoder(images) as decoder:
        decoder.decode(blobs[0])  # started once, as in the daemon
        inside = child = 0.0
        for _ in range(args.rounds):
            started = time.perf_counter()
            for blob in blobs:
                decode_image(blob, max_pixels=images.max_pixels, max_side=images.detect_max_side)
            inside += time.perf_counter() - started
            started = time.perf_counter()
            for blob in blobs:
                decoder.decode(blob)
            child += time.perf_counter() - started
        count = len(blobs) * args.rounds
        print(
            f"{len(blobs)} photos x {args.rounds} rounds: in-process "
            f"{inside * 1000 / count:.2f} ms/image, budgeted child {child * 1000 / count:.2f} "
            f"ms/image, ratio {child / inside:.2f}"
        )

        bomb = scan_bomb(9000, 5000)
        started = time.perf_counter()
        try:
            decode_image(
                bomb,
                max_pixels=images.max_pixels,
                max_side=images.detect_max_side,
                max_scans=images.max_jpeg_scans,
            )
        except UnreadableImageError as error:
            print(
                f"scan bomb ({len(bomb)} bytes), scan-count check: {error} in "
                f"{time.perf_counter() - started:.3f} s"
            )
    lifted = ImagesConfig(decode_timeout=args.timeout, max_jpeg_scans=100_000)
    with Decoder(lifted) as decoder:
        decoder.decode(blobs[0])
        started = time.perf_counter()
        try:
            decoder.decode(bomb)
        except UnreadableImageError as error:
            print(f"scan bomb, time budget only: {error} in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
