"""Builders for awkward image files, shared by the tests."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image


def _chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def write_png_bomb(path: Path, side: int = 30000) -> None:
    """A valid greyscale PNG of side x side black pixels, about a megabyte on disk.

    Written row by row through a streaming compressor, so the test never holds
    the 900-megapixel image in memory that the file claims to be.
    """
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + one byte per pixel
    parts = [compressor.compress(row) for _ in range(side)]
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )


def write_truncated_copy(source: Path, target: Path, keep: float = 0.5) -> None:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])


def _jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(start, end, marker) of each segment; a scan's segment runs through its entropy data."""
    found = []
    position = 2
    while position < len(data):
        marker = data[position + 1]
        if marker == 0xD9:
            found.append((position, position + 2, marker))
            break
        end = position + 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if marker == 0xDA:
            while True:
                end = data.index(b"\xff", end)
                if data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
        found.append((position, end, marker))
        position = end
    return found


def scan_bomb(side: int = 9000, scans: int = 5000) -> bytes:
    """A progressive greyscale JPEG of side x side pixels with `scans` extra tiny scans.

    Pillow writes libjpeg's standard progression; its last AC scan (with the
    Huffman table before it) is then repeated: on a flat image each repeat is a
    few dozen bytes, and each makes libjpeg walk every block of the image again.
    9000 x 9000 with 5,000 scans is ~1 MB and decodes for minutes.
    """
    buffer = io.BytesIO()
    Image.new("L", (side, side), 128).save(buffer, "JPEG", progressive=True, quality=90)
    data = buffer.getvalue()
    segments = _jpeg_segments(data)

    def is_ac_scan(start: int) -> bool:
        components = data[start + 4]
        return data[start + 5 + 2 * components] > 0  # Ss > 0

    last = max(i for i, (s, _, m) in enumerate(segments) if m == 0xDA and is_ac_scan(s))
    first = last - 1 if segments[last - 1][2] == 0xC4 else last  # its DHT, if any
    repeated = data[segments[first][0] : segments[last][1]]
    end_of_image = segments[-1][0]
    return data[:end_of_image] + repeated * scans + data[end_of_image:]


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def hostile_set(folder: Path, photo: Path) -> dict[str, str]:
    """48 hostile or odd entries under `folder`, made here and never committed.

    Returns relative name -> what it must come to: a verdict ("keep", "reject",
    "review" are all "judged"), "unreadable", "not_image", or "skipped" (not a
    regular file: never a verdict). `photo` is a real JPEG with a face.
    """
    import os

    folder.mkdir(parents=True, exist_ok=True)
    face = Image.open(photo).convert("RGB")
    small = face.resize((160, 160))
    expect: dict[str, str] = {}

    def put(name: str, data: bytes, outcome: str) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expect[name] = outcome

    jpeg = photo.read_bytes()
    # Bombs of every kind.
    write_png_bomb(folder / "bomb-pixels.png")
    expect["bomb-pixels.png"] = "unreadable"
    put("bomb-scans.jpg", scan_bomb(9000, 5000), "unreadable")
    put("bomb-scans-small.jpg", scan_bomb(2000, 400), "unreadable")  # over the scan limit
    header = struct.pack(">IIBBBBB", 65535, 65535, 8, 2, 0, 0, 0)
    put(
        "bomb-header.png",
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IEND", b""),
        "unreadable",
    )
    gif = bytearray(_encoded(Image.new("P", (8, 8)), "GIF"))
    gif[6:10] = struct.pack("<HH", 65535, 65535)  # a huge logical screen
    put("bomb-screen.gif", bytes(gif), "unreadable")
    put(
        "bomb-tiff.tif",
        _encoded(Image.new("L", (12000, 12000)), "TIFF", compression="tiff_deflate"),
        "unreadable",
    )
    # Broken files.
    put("zero.jpg", b"", "unreadable")
    put("truncated.jpg", jpeg[: len(jpeg) // 3], "unreadable")
    put("header-only.jpg", jpeg[:200], "unreadable")
    png = _encoded(small, "PNG")
    put("bad-crc.png", png[:40] + bytes([png[40] ^ 0xFF]) + png[41:], "unreadable")
    put("one-pixel.png", _encoded(Image.new("RGB", (1, 1)), "PNG"), "unreadable")
    put("trailing-garbage.jpg", jpeg + os.urandom(5000), "judged")
    # Odd modes, all real images.
    put("cmyk.jpg", _encoded(small.convert("CMYK"), "JPEG"), "judged")
    put("grey16.png", _encoded(small.convert("I;16"), "PNG"), "judged")
    put("int32.tif", _encoded(small.convert("I"), "TIFF"), "verdict")
    put("float.tif", _encoded(small.convert("F"), "TIFF"), "verdict")
    put("bilevel.bmp", _encoded(small.convert("1"), "BMP"), "judged")
    palette = small.convert("P", palette=Image.Palette.ADAPTIVE)
    put("palette-transparent.png", _encoded(palette, "PNG", transparency=0), "judged")
    put("grey-alpha.png", _encoded(small.convert("LA"), "PNG"), "judged")
    put("rgba.webp", _encoded(small.convert("RGBA"), "WEBP", lossless=True), "judged")
    put("ycbcr.tif", _encoded(small.convert("YCbCr"), "TIFF"), "verdict")
    put("lab.tif", _encoded(small.convert("LAB"), "TIFF"), "verdict")
    put("progressive.jpg", _encoded(face, "JPEG", progressive=True), "judged")
    put("thin.png", _encoded(Image.new("RGB", (20000, 2)), "PNG"), "verdict")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated
    put("rotated.jpg", _encoded(face, "JPEG", exif=exif.tobytes()), "judged")
    exif[0x0112] = 99  # no such orientation
    put("bad-orientation.jpg", _encoded(face, "JPEG", exif=exif.tobytes()), "judged")
    garbage = b"Exif\x00\x00" + os.urandom(300)
    put("garbage-exif.jpg", _encoded(face, "JPEG", exif=garbage), "judged")
    frames = [small, small.rotate(90), small.rotate(180)]
    for name, fmt in (
        ("animated.gif", "GIF"),
        ("animated.png", "PNG"),
        ("animated.webp", "WEBP"),
        ("pages.tif", "TIFF"),
    ):
        put(name, _encoded(frames[0], fmt, save_all=True, append_images=frames[1:]), "judged")
    # Wrong or missing extensions, and formats named by content alone.
    put("jpeg-named.png", jpeg, "judged")
    put("png-named.jpg", _encoded(face, "PNG"), "judged")
    put("no-extension", jpeg, "judged")
    put("photo.jfif", jpeg, "judged")
    put("photo.avif", _encoded(face, "AVIF"), "judged")
    from pillow_heif import register_heif_opener

    register_heif_opener()
    put("photo.heic", _encoded(face, "HEIF"), "judged")
    put("photo.JPG", jpeg, "judged")
    # Not images, whatever they are called.
    mp4 = struct.pack(">I", 24) + b"ftypisom" + b"\x00\x00\x02\x00isomiso2" + os.urandom(4000)
    put("video.mp4", mp4, "not_image")
    put("video-named.jpg", mp4, "not_image")
    put("page.html.jpg", b"<html><body>not a photo</body></html>\n", "not_image")
    put("document.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + os.urandom(2000), "not_image")
    put("noise.bin", os.urandom(8192), "not_image")
    put("icon.ico", _encoded(small, "ICO"), "not_image")
    put("drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><rect/></svg>', "not_image")
    # Names and places.
    put(os.fsdecode(b"name-\xff\xfe.jpg"), jpeg, "judged")
    put("new\nline.jpg", jpeg, "judged")
    put(".hidden/inside.jpg", jpeg, "judged")
    put("album.jpg/inside.png", _encoded(small, "PNG"), "judged")  # a folder named .jpg
    os.mkfifo(folder / "pipe.jpg")
    expect["pipe.jpg"] = "skipped"
    return expect
