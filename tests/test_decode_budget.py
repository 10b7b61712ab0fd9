"""The decode budget: a scan bomb, a memory bomb or a stop request never holds the guard."""

from __future__ import annotations

import io
import threading
import time

import pytest
from PIL import Image

from facesieve.config import ImagesConfig
from facesieve.errors import DecodeInterruptedError, UnreadableImageError
from facesieve.judging.decoder import Decoder
from facesieve.judging.images import decode_image, jpeg_scan_count

from .images_util import scan_bomb


def jpeg(side: int = 64, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (200, 120, 40)).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def test_scans_are_counted_as_libjpeg_sees_them() -> None:
    assert jpeg_scan_count(jpeg()) == 1
    assert 2 <= jpeg_scan_count(jpeg(progressive=True)) <= 20
    assert jpeg_scan_count(scan_bomb(side=256, scans=3000)) > 3000
    assert jpeg_scan_count(b"\x89PNG\r\n\x1a\n") == 0


def test_a_jpeg_with_an_exif_thumbnail_counts_its_own_scans_only() -> None:
    thumbnail = jpeg(side=32, progressive=True)
    exif = Image.Exif()
    image = Image.new("RGB", (64, 64))
    buffer = io.BytesIO()
    # An APP1 payload holding a whole progressive JPEG: its scan markers are not ours.
    image.save(buffer, "JPEG", exif=exif.tobytes() + thumbnail)
    assert jpeg_scan_count(buffer.getvalue()) == 1


def test_more_scans_than_any_camera_writes_are_refused_unread() -> None:
    started = time.monotonic()
    with pytest.raises(UnreadableImageError, match="scan bomb"):
        decode_image(scan_bomb(), max_pixels=100_000_000, max_side=1280, max_scans=100)
    assert time.monotonic() - started < 30  # refused before decoding, not after minutes


@pytest.fixture
def decoder_factory():  # type: ignore[no-untyped-def]
    made: list[Decoder] = []

    def make(**settings: object) -> Decoder:
        decoder = Decoder(ImagesConfig(**settings))  # type: ignore[arg-type]
        made.append(decoder)
        return decoder

    yield make
    for decoder in made:
        decoder.close()


def test_over_the_time_budget_is_unreadable_and_the_decoder_goes_on(decoder_factory) -> None:  # type: ignore[no-untyped-def]
    # The scan count is not checked here: the time limit alone must hold.
    decoder = decoder_factory(decode_timeout=2.0, max_jpeg_scans=100_000)
    assert decoder.decode(jpeg()).rgb.shape == (64, 64, 3)
    started = time.monotonic()
    with pytest.raises(UnreadableImageError, match="decode time budget"):
        decoder.decode(scan_bomb(side=9000, scans=5000))
    assert time.monotonic() - started < 2.0 + 10
    assert decoder.restarts == 1
    assert decoder.decode(jpeg(progressive=True)).rgb.shape == (64, 64, 3)


def test_over_the_memory_budget_is_unreadable(decoder_factory) -> None:  # type: ignore[no-untyped-def]
    # 6000 x 6000 RGB is ~108 MB decoded; the PNG is a few hundred kB.
    buffer = io.BytesIO()
    Image.new("RGB", (6000, 6000), (10, 20, 30)).save(buffer, "PNG")
    decoder = decoder_factory(decode_memory_mb=64)
    with pytest.raises(UnreadableImageError, match="memory budget"):
        decoder.decode(buffer.getvalue())
    assert decoder.decode(jpeg()).rgb.shape == (64, 64, 3)
    # With room, the same image decodes.
    roomy = decoder_factory(decode_memory_mb=2048)
    assert roomy.decode(buffer.getvalue()).width == 6000


def test_a_stop_request_ends_a_decode_at_once(decoder_factory) -> None:  # type: ignore[no-untyped-def]
    decoder = decoder_factory(decode_timeout=600.0, max_jpeg_scans=100_000)
    decoder.decode(jpeg())  # started: the timing below is the decode's alone
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    started = time.monotonic()
    with pytest.raises(DecodeInterruptedError):
        decoder.decode(scan_bomb(side=9000, scans=5000), stop.is_set)
    assert time.monotonic() - started < 1.0 + 5


def test_one_decoder_process_serves_many_files(decoder_factory) -> None:  # type: ignore[no-untyped-def]
    decoder = decoder_factory()
    decoder.decode(jpeg())
    assert decoder._process is not None
    pid = decoder._process.pid
    for side in range(40, 80):
        assert decoder.decode(jpeg(side)).width == side
    with pytest.raises(UnreadableImageError, match="not an image"):
        decoder.decode(b"<html>not a photo</html>")
    assert decoder._process.pid == pid
    assert decoder.restarts == 0


def test_a_decoder_started_from_a_thread_outlives_it(decoder_factory) -> None:  # type: ignore[no-untyped-def]
    # The read-ahead pool's thread starts the child and then ends; the child must
    # not end with it (PR_SET_PDEATHSIG would kill it: it follows the thread).
    decoder = decoder_factory()
    starter = threading.Thread(target=decoder.decode, args=(jpeg(),))
    starter.start()
    starter.join()
    time.sleep(1.5)
    assert decoder.decode(jpeg(48)).width == 48
    assert decoder.restarts == 0
