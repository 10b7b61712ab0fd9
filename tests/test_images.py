"""Decoding: formats, orientation, downscaling, and every way a file can fail to be an image."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesieve.errors import ImageAccessError, UnreadableImageError
from facesieve.judging.images import decode_image, read_file

from .images_util import write_png_bomb, write_truncated_copy

LIMITS = {"max_pixels": 100_000_000, "max_side": 1280}


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    rgb = np.stack([np.tile(x, (height, 1))] * 3, axis=-1)
    rgb[: height // 4, :, 0] = 255  # a red band on top, to see orientation
    return Image.fromarray(rgb)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_every_supported_format_decodes_to_rgb(fmt: str) -> None:
    decoded = decode_image(encode(gradient(64, 48), fmt), **LIMITS)
    assert decoded.rgb.shape == (48, 64, 3)
    assert decoded.rgb.dtype == np.uint8
    assert (decoded.width, decoded.height, decoded.scale) == (64, 48, 1.0)


def test_gif_first_frame_is_used() -> None:
    frames = [Image.new("RGB", (32, 32), color) for color in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(buffer.getvalue(), **LIMITS)
    assert decoded.rgb[16, 16, 0] > 200 and decoded.rgb[16, 16, 2] < 50


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(gradient(80, 40), "JPEG", exif=exif.tobytes())
    decoded = decode_image(data, **LIMITS)
    assert decoded.rgb.shape[:2] == (80, 40)
    assert (decoded.width, decoded.height) == (40, 80)
    # The red band that was on top is on the right after a clockwise turn.
    assert decoded.rgb[40, 35, 0] > 200 and decoded.rgb[40, 2, 0] < 200


def test_large_images_are_downscaled_with_the_scale_kept() -> None:
    decoded = decode_image(encode(gradient(4000, 3000), "JPEG"), max_pixels=10**9, max_side=1000)
    assert max(decoded.rgb.shape[:2]) <= 1000
    assert (decoded.width, decoded.height) == (4000, 3000)
    assert decoded.scale == pytest.approx(4000 / decoded.rgb.shape[1])


def test_transparent_png_becomes_white_not_black() -> None:
    data = encode(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "PNG")
    assert decode_image(data, **LIMITS).rgb.min() == 255


def test_zero_bytes() -> None:
    with pytest.raises(UnreadableImageError, match="empty"):
        decode_image(b"", **LIMITS)


def test_text_named_jpg() -> None:
    with pytest.raises(UnreadableImageError, match="not an image"):
        decode_image(b"<html>not a photo</html>\n", **LIMITS)


def test_truncated_jpeg(tmp_path: Path) -> None:
    whole = tmp_path / "whole.jpg"
    whole.write_bytes(encode(gradient(400, 300), "JPEG"))
    write_truncated_copy(whole, tmp_path / "cut.jpg")
    with pytest.raises(UnreadableImageError, match="truncated"):
        decode_image((tmp_path / "cut.jpg").read_bytes(), **LIMITS)


def test_png_decompression_bomb(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    write_png_bomb(bomb)
    assert bomb.stat().st_size < 2_000_000
    with pytest.raises(UnreadableImageError, match="pixel"):
        decode_image(bomb.read_bytes(), **LIMITS)


def test_unsupported_format() -> None:
    data = encode(gradient(16, 16), "PPM")
    with pytest.raises(UnreadableImageError, match="unsupported"):
        decode_image(data, **LIMITS)


def test_read_file_refuses_symlinks(tmp_path: Path) -> None:
    target = tmp_path / "real.jpg"
    target.write_bytes(b"x")
    (tmp_path / "link.jpg").symlink_to(target)
    with pytest.raises(ImageAccessError, match="symlink"):
        read_file(tmp_path / "link.jpg", max_bytes=100)


def test_read_file_does_not_block_on_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageAccessError, match="not a regular file"):
        read_file(fifo, max_bytes=100)


def test_read_file_size_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    big.write_bytes(b"x" * 101)
    with pytest.raises(ImageAccessError, match="limit"):
        read_file(big, max_bytes=100)
