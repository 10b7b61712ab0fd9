"""Every settled file gets a verdict, whatever its bytes make the decoder raise (issue 18).

A viewable photo with a crafted EXIF block (Orientation 6, SamplesPerPixel stored as
text) made the EXIF rotation raise `struct.error`: the decoder answered "error", the
judge "not judged", and the file stayed in the inbox for ever, on every engine. Now the
EXIF step cannot fail the decode (the image is judged, turned as its orientation says),
and any other exception the decoder raises on bytes in hand is `unreadable` with its
reason. The fuzz test mutates real photos in six formats and asserts that every mutant
ends in a verdict.
"""

from __future__ import annotations

import io
import random
import struct
import time
import warnings
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from facesieve.config import ImagesConfig, PolicyConfig
from facesieve.errors import UnreadableImageError
from facesieve.judging.decoder import Decoder
from facesieve.judging.images import RawFile, decode_image
from facesieve.judging.judge import Judgement, NotJudged, judge_read, read
from facesieve.testing import NoFaces

from .cli_util import run_cli
from .conftest import DATA, labelled
from .daemon_util import Daemon, write_config

_CAT = "cat.4001.jpg"  # a viewable photo without a face
_FACE = "fairface_0001.jpg"


def _bad_exif() -> bytes:
    """The issue's block: Orientation 6 (turn to show), SamplesPerPixel (0x0115) as text."""
    entries = struct.pack("<HHII", 0x0112, 3, 1, 6) + struct.pack("<HHI4s", 0x0115, 2, 4, b"abc\0")
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 2) + entries
    return b"Exif\x00\x00" + tiff + struct.pack("<I", 0)


def _with_bad_exif(photo: Path, fmt: str) -> bytes:
    out = io.BytesIO()
    with Image.open(photo) as image:
        image.convert("RGB").save(out, fmt, exif=_bad_exif())
    return out.getvalue()


def _bad_exif_files(inbox: Path) -> dict[str, bytes]:
    labelled("noface")
    files = {
        f"turned.{ext}": _with_bad_exif(DATA / "noface" / _CAT, fmt)
        for fmt, ext in (("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"))
    }
    inbox.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (inbox / name).write_bytes(data)
    return files


@pytest.mark.data
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_crafted_exif_block_is_decoded_and_turned(fmt: str) -> None:
    labelled("noface")
    data = _with_bad_exif(DATA / "noface" / _CAT, fmt)
    with Image.open(DATA / "noface" / _CAT) as original:
        width, height = original.size
    image = decode_image(data, max_pixels=10**8, max_side=1280)
    # Orientation 6: shown turned a quarter, so width and height swap.
    assert (image.width, image.height) == (height, width)
    assert image.rgb.shape == (width, height, 3)
    with Decoder(ImagesConfig()) as decoder:
        assert decoder.decode(data).rgb.shape == (width, height, 3)


def _expect_rejected(records: list[dict[str, object]], files: dict[str, bytes]) -> None:
    by_name = {Path(str(r["path"])).name: r for r in records}
    assert set(by_name) == set(files), records
    for name, record in by_name.items():
        assert record["verdict"] == "reject", (name, record)
        assert record["action"] == "quarantine", (name, record)


@pytest.mark.models
@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_scan_judges_photos_with_a_crafted_exif_block(
    tmp_path: Path, deepface_home: Path, workers: str
) -> None:
    inbox = tmp_path / "inbox"
    files = _bad_exif_files(inbox)
    run = run_cli("scan", str(inbox), "--workers", workers, "--json")
    assert run.code == 0, run.stderr[-3000:]
    _expect_rejected(run.records, files)
    assert not [e for e in run.events if e.get("event") == "not_judged"], run.events
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == []
    quarantine = inbox / ".facesieve" / "quarantine"
    assert {p.name: p.read_bytes() for p in quarantine.iterdir()} == files


@pytest.mark.models
@pytest.mark.data
@pytest.mark.slow
def test_watch_judges_photos_with_a_crafted_exif_block(tmp_path: Path, deepface_home: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    daemon = Daemon(write_config(tmp_path / "c.toml", inbox), tmp_path / "log.jsonl").start()
    try:
        daemon.wait_for("ready")
        files = _bad_exif_files(inbox)
        decisions = daemon.wait_for("decision", len(files), timeout=120)
    finally:
        code = daemon.stop()
    assert code == 0
    _expect_rejected(decisions, files)
    assert not daemon.events("not_judged")


# -- any other decoder exception -------------------------------------------------------


def _small_photo() -> Image.Image:
    labelled("fairface")
    with Image.open(DATA / "fairface" / _FACE) as image:
        photo = image.convert("RGB")
    photo.thumbnail((96, 96))
    return photo


def _encoded(photo: Image.Image, fmt: str, **options: object) -> bytes:
    if fmt == "HEIF":
        from pillow_heif import register_heif_opener

        register_heif_opener()
    out = io.BytesIO()
    photo.save(out, fmt, **options)
    return out.getvalue()


def _flip_bytes(rng: random.Random, data: bytes) -> bytes:
    """A few random edits, mostly in the header where the parsers are."""
    mutant = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        span = min(len(mutant), 600)
        choice = rng.random()
        at = rng.randrange(span)
        if choice < 0.5:
            mutant[at] = rng.randrange(256)
        elif choice < 0.7:
            mutant[at] ^= 1 << rng.randrange(8)
        elif choice < 0.8:
            mutant[at : at + rng.randint(1, 4)] = bytes([rng.choice([0, 0x7F, 0x80, 0xFF])]) * 4
        elif choice < 0.9:
            mutant[at:at] = mutant[at : at + rng.randint(1, 32)]  # a repeated run
        else:
            del mutant[rng.randrange(len(mutant) // 2, len(mutant)) :]  # truncated
    return bytes(mutant)


_EXIF_TAGS = (0x0100, 0x0101, 0x0102, 0x0103, 0x0106, 0x0111, 0x0115, 0x0116, 0x011A, 0x0131)


def _crafted_exif(rng: random.Random) -> bytes:
    """An orientation, and tags of random (often wrong) types and counts."""
    entries = [(0x0112, 3, 1, struct.pack("<HH", rng.choice([1, 3, 6, 8, 9, 0]), 0))]
    for tag in sorted(rng.sample(_EXIF_TAGS, rng.randint(1, 3))):
        kind = rng.choice([1, 2, 3, 4, 5, 7, 9, 10, 11, 12, 13, 0, 99])
        count = rng.choice([0, 1, 2, 4, 1000])
        entries.append((tag, kind, count, rng.randbytes(4)))
    body = struct.pack("<H", len(entries))
    body += b"".join(struct.pack("<HHI", *entry[:3]) + entry[3] for entry in entries)
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + body + struct.pack("<I", 0)


def _mutants(seed: int, per_format: int) -> list[tuple[str, bytes]]:
    """Mutated JPEG/PNG/WebP/TIFF/HEIF/AVIF from one real photo; half of the JPEG, PNG
    and WebP ones carry a crafted EXIF block instead of edited bytes."""
    rng = random.Random(seed)
    photo = _small_photo()
    bases = {
        "JPEG": _encoded(photo, "JPEG", quality=80),
        "PNG": _encoded(photo, "PNG"),
        "WEBP": _encoded(photo, "WEBP", quality=80),
        "TIFF": _encoded(photo, "TIFF"),
        "HEIF": _encoded(photo, "HEIF", quality=50),
        "AVIF": _encoded(photo, "AVIF", quality=50),
    }
    mutants = []
    for fmt, base in bases.items():
        for n in range(per_format):
            if fmt in ("JPEG", "PNG", "WEBP") and n % 2:
                mutants.append((f"{fmt}+exif", _encoded(photo, fmt, exif=_crafted_exif(rng))))
            else:
                mutants.append((fmt, _flip_bytes(rng, base)))
    return mutants


def _verdict_of(data: bytes, images: ImagesConfig) -> Judgement | NotJudged:
    raw = RawFile(Path("/nowhere/mutant"), data, len(data), 0, 0o100644, 0, 0, 0)
    item = read(raw, images)
    if isinstance(item, NotJudged):
        return item
    return judge_read(item, NoFaces(), PolicyConfig())


@pytest.mark.data
def test_every_mutant_ends_in_a_verdict() -> None:
    started = time.monotonic()
    mutants = _mutants(seed=18, per_format=50)
    images = ImagesConfig(decode_timeout=10.0)
    verdicts: Counter[str] = Counter()
    not_judged = []
    decoder_failures: Counter[str] = Counter()
    for kind, data in mutants:
        result = _verdict_of(data, images)
        if isinstance(result, NotJudged):
            not_judged.append((kind, result.reason))
            continue
        verdicts[result.verdict.value] += 1
        if "the decoder failed on it" in result.reason:
            decoder_failures[result.reason.split(": ")[2]] += 1
    seconds = time.monotonic() - started
    print(
        f"fuzz: {len(mutants)} inputs, {dict(verdicts)}, decoder exceptions "
        f"{dict(decoder_failures)}, {seconds:.1f} s"
    )
    assert not not_judged, not_judged
    assert sum(verdicts.values()) == len(mutants) == 300
    # Both kinds of outcome were exercised: images judged, and images refused.
    assert verdicts["reject"] > 0 and verdicts["unreadable"] > 0
    assert seconds < 60


@pytest.mark.data
def test_a_decoder_exception_is_unreadable_with_its_reason() -> None:
    """Bytes that make the decoder raise what is no decode error of its own (here an
    AVIF whose image item is missing: RuntimeError) are `unreadable`, the exception named."""
    photo = _small_photo()
    base = _encoded(photo, "AVIF", quality=50)
    rng = random.Random(18)
    for _ in range(2000):
        mutant = _flip_bytes(rng, base)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # as in the decoder's process
                decode_image(mutant, max_pixels=10**8, max_side=1280)
        except UnreadableImageError:
            continue
        except Exception as error:  # noqa: BLE001 - what is looked for
            raised = type(error).__name__
            break
    else:
        pytest.skip("no mutant raised an exception of the decoder's own in 2000 tries")
    with Decoder(ImagesConfig()) as decoder, pytest.raises(UnreadableImageError) as caught:
        decoder.decode(mutant)
    assert f"the decoder failed on it: {raised}" in str(caught.value)
    result = _verdict_of(mutant, ImagesConfig())
    assert isinstance(result, Judgement) and result.verdict.value == "unreadable"
    assert raised in result.reason
