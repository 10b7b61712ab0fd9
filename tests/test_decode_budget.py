"""The decode budget: a scan bomb, a memory bomb or a stop request never holds the guard."""

from __future__ import annotations

import io
import os
import threading
import time

import pytest
from PIL import Image

from facesieve.config import ImagesConfig
from facesieve.errors import DecodeInterruptedError, UnreadableImageError
from facesieve.judging.decoder import Decoder
from facesieve.judging.images import decode_image, jpeg_scan_count

from .images_util import scan_bomb
from .wait_util import alive, cpu_seconds, wait_for


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
    # A bound only a hang breaks: in full this bomb decodes for over 4 minutes.
    assert time.monotonic() - started < 60
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
    decoder.decode(jpeg())  # the child is up and idle: the CPU it spends from now is the bomb's
    assert decoder._process is not None
    child = decoder._process.pid
    idle = cpu_seconds(child)
    asked_at: list[float] = []
    give_up = time.monotonic() + 120  # a decode that never starts must not hang the test

    def stop_once_decoding() -> bool:
        # The stop is asked only once the child has spent 0.5 s of CPU on the bomb:
        # the decode had started and was running when it came, not queued behind it.
        if not asked_at and cpu_seconds(child) - idle >= 0.5:
            asked_at.append(time.monotonic())
        return bool(asked_at) or time.monotonic() > give_up

    with pytest.raises(DecodeInterruptedError):
        decoder.decode(scan_bomb(side=9000, scans=5000), stop_once_decoding)
    assert asked_at, "the child spent no time on the bomb before the stop"
    # A bound only a hang breaks: in full this bomb decodes for over 4 minutes (the
    # budget is 600 s); a stop ends it within a poll of the flag and a kill.
    assert time.monotonic() - asked_at[0] < 60
    assert decoder.restarts == 1 and not alive(child)  # the child decoding it was killed
    assert decoder.decode(jpeg(48)).width == 48  # and a fresh one serves the next file


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
    native: list[int] = []

    def start() -> None:
        native.append(threading.get_native_id())
        decoder.decode(jpeg())

    starter = threading.Thread(target=start)
    starter.start()
    starter.join()
    assert decoder._process is not None
    child = decoder._process.pid
    # The kernel thread is gone (a death signal tied to it has been sent by then).
    assert wait_for(lambda: not os.path.exists(f"/proc/self/task/{native[0]}"), 30)
    # Such a signal ends the child within moments; none may come. Watching the child
    # for 1 s is the test itself: there is no event for a death that does not happen.
    assert not wait_for(lambda: not alive(child), 1.0), "the child ended with its thread"
    assert decoder.decode(jpeg(48)).width == 48
    # The same child served it (a dead one would be replaced silently, uncounted).
    assert decoder._process.pid == child
    assert decoder.restarts == 0
