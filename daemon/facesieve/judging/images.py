"""Reading image files and decoding them into arrays the models take.

Reading and decoding are separate steps so that the bytes read once serve both
the content hash and the decoder, and so that an I/O failure (`ImageAccessError`,
not a verdict) is never confused with bytes that are not an image
(`UnreadableImageError`, the verdict `unreadable`).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from PIL import ExifTags, Image, UnidentifiedImageError

from ..errors import (
    FileVanishedError,
    ImageAccessError,
    SymlinkRefusedError,
    UnreadableImageError,
)
from ..intake.safefs import HeldFile, Identity, is_symlink_refusal, open_path

if TYPE_CHECKING:
    from ..config import ImagesConfig

__all__ = [
    "DecodedImage",
    "RawFile",
    "decode_image",
    "descriptor_sha256",
    "file_sha256",
    "jpeg_scan_count",
    "load_image",
    "read_file",
    "sniff_format",
]

_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF", "AVIF", "HEIF"})

# ISO base media files (ftyp box) whose brand says still image: AVIF and HEIF/HEIC.
# Video brands (isom, mp41, mp42, qt, avc1, ...) are not images.
_IMAGE_BRANDS = frozenset(
    {b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
)


@dataclass(frozen=True, slots=True)
class RawFile:
    """A file's bytes and the identity of the inode they were read from (one fstat)."""

    path: Path
    data: bytes
    size: int
    mtime_ns: int
    mode: int
    ctime_ns: int = 0
    dev: int = 0
    ino: int = 0

    @property
    def identity(self) -> Identity:
        """The inode and times of the bytes read, as one value."""
        return Identity(self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns)


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """An RGB image, possibly downscaled; `scale` maps its pixels back to the original's."""

    rgb: NDArray[np.uint8]
    width: int  # of the original, EXIF orientation applied
    height: int
    scale: float  # original pixels per decoded pixel, >= 1
    format: str


def read_file(path: Path, *, max_bytes: int) -> RawFile:
    """Read a regular file through held descriptors: every folder from `/` opened
    without following a symlink, the file opened once (never a FIFO or a device)
    and read from that descriptor. The one way facesieve reads a file an uploader
    may have touched: the inbox's, the quarantine's, the review folder's.

    Raises:
        ImageAccessError: the file or a folder on its path is a symlink
            (`SymlinkRefusedError`), it is missing (`FileVanishedError`), not a
            regular file (`NotRegularFileError`), larger than `max_bytes`
            (`FileTooLargeError`), or unreadable.
        ChangedError: it changed while it was read.
    """
    absolute = Path(os.path.abspath(path))  # abspath, not resolve(): a symlink stays one
    try:
        folder = open_path(absolute.parent)
    except OSError as error:
        if is_symlink_refusal(error):
            why = "a folder on its path is a symlink: never followed"
            raise SymlinkRefusedError(why) from error
        if error.errno == errno.ENOENT:
            raise FileVanishedError("its folder is gone") from error
        raise ImageAccessError(f"cannot open its folder: {error.strerror}") from error
    with HeldFile(absolute, folder, absolute.name) as held:
        data = held.read(max_bytes)
        identity = held.identity
        mode = held.mode
    return RawFile(
        path=path,
        data=data,
        size=len(data),
        mtime_ns=identity.mtime_ns,
        mode=mode,
        ctime_ns=identity.ctime_ns,
        dev=identity.dev,
        ino=identity.ino,
    )


def load_image(
    path: Path,
    images: ImagesConfig,
    *,
    max_side: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> DecodedImage:
    """`read_file`, then a decode in the budgeted decoder process (`decoder`): for every
    picture shown to a person (report thumbnails, the review page) and learn's samples.

    The quarantine holds exactly the files that blew the decode budget, so they are
    never decoded in this process.

    Raises:
        ImageAccessError, ChangedError: as `read_file`.
        UnreadableImageError: not an image, or over the time or memory budget.
    """
    from .decoder import shared_decoder

    raw = read_file(path, max_bytes=images.max_file_bytes)
    return shared_decoder(images).decode(raw.data, should_stop, max_side=max_side)


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes by its name, read in blocks: for facesieve's own files
    (model weights) only; a file an uploader can touch is hashed by `descriptor_sha256`.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def descriptor_sha256(fd: int) -> str:
    """The sha256 of the bytes of an open file, read in blocks by offset (`pread`).

    The inbox's files are hashed from the descriptor they were held by, never by
    their name: a name can be a symlink or a FIFO by the time it is opened again.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    offset = 0
    while block := os.pread(fd, 1 << 20, offset):
        digest.update(block)
        offset += len(block)
    return digest.hexdigest()


def sniff_format(data: bytes) -> str | None:
    """The image format the bytes say they are, from their first bytes; None: not an image.

    The file name's extension plays no part: a JPEG named `.png` or without an
    extension is a JPEG, and a video or a document named `.jpg` is not an image.
    """
    head = data[:32]
    if head.startswith(b"\xff\xd8"):  # SOI: a JPEG, if perhaps a broken one
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith(b"BM") and len(head) >= 26:
        return "BMP"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if head[4:8] == b"ftyp":
        box = int.from_bytes(head[:4], "big")
        brands = [data[8:12]] + [data[i : i + 4] for i in range(16, min(box, 64), 4)]
        if _IMAGE_BRANDS.intersection(brands):
            return "AVIF" if data[8:12] in (b"avif", b"avis") else "HEIF"
    return None


def jpeg_scan_count(data: bytes) -> int:
    """How many scans (SOS markers) a JPEG holds; 0 for other data.

    The header segments are walked by their lengths (an EXIF thumbnail inside
    APP1 is skipped whole); after the first scan, entropy-coded data stuffs
    every 0xFF byte, so each further 0xFF 0xDA is a real scan header.
    """
    if not data.startswith(b"\xff\xd8"):
        return 0
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return 0  # not a marker where one must be: corrupt; the decoder says so
        marker = data[position + 1]
        if marker == 0xFF:
            position += 1  # fill byte
            continue
        if marker == 0xDA:
            return data.count(b"\xff\xda", position)
        if marker in (0xD8, 0xD9) or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            position += 2
            continue
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return 0


def decode_image(
    data: bytes, *, max_pixels: int, max_side: int, max_scans: int | None = None
) -> DecodedImage:
    """Decode the first frame, apply EXIF orientation, downscale to `max_side`.

    JPEGs larger than needed are decoded at reduced size (libjpeg's DCT scaling),
    which is several times faster than decoding in full and resizing.

    Raises:
        UnreadableImageError: empty, not an image, an unsupported format,
            truncated, more than `max_pixels` pixels (a decompression bomb), or
            a JPEG of more than `max_scans` scans (a scan bomb).
    """
    if not data:
        raise UnreadableImageError("empty file (0 bytes)")
    if max_scans is not None:
        _refuse_scan_bomb(data, max_scans)
    if sniff_format(data) == "HEIF":
        _register_heif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            rgb, oriented_w, oriented_h, image_format = _decode_pixels(
                data, max_pixels=max_pixels, max_side=max_side
            )
    except UnreadableImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UnreadableImageError(f"decompression bomb: {error}") from error
    except UnidentifiedImageError as error:
        raise UnreadableImageError("not an image in a known format") from error
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        # Pillow reports truncated and corrupt data as OSError or SyntaxError.
        raise UnreadableImageError(f"corrupt or truncated: {error}") from error
    if rgb.ndim != 3 or rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise UnreadableImageError(f"degenerate image of shape {rgb.shape}")
    scale = oriented_w / rgb.shape[1]
    return DecodedImage(
        rgb=np.ascontiguousarray(rgb),
        width=oriented_w,
        height=oriented_h,
        scale=max(scale, 1.0),
        format=image_format,
    )


def _refuse_scan_bomb(data: bytes, max_scans: int) -> None:
    scans = jpeg_scan_count(data)
    if scans > max_scans:
        raise UnreadableImageError(
            f"JPEG of {scans} scans is over the {max_scans}-scan limit (a scan bomb)"
        )


def _decode_pixels(
    data: bytes, *, max_pixels: int, max_side: int
) -> tuple[NDArray[np.uint8], int, int, str]:
    """The first frame's RGB pixels fitted to `max_side`, the oriented full size, and the
    format. Pillow's own errors propagate for `decode_image` to name.

    Raises:
        UnreadableImageError: an unsupported format, or over `max_pixels`.
    """
    image = Image.open(io.BytesIO(data))
    image_format = str(image.format)
    if image_format not in _FORMATS:
        raise UnreadableImageError(f"unsupported format {image_format}")
    width, height = image.size
    if width * height > max_pixels:
        raise UnreadableImageError(f"{width}x{height} is over the {max_pixels}-pixel limit")
    if image.format in ("JPEG", "MPO") and max(width, height) > max_side:
        image.draft("RGB", (max_side, max_side))
    image.load()
    oriented = _orient(image)
    if oriented.mode != "RGB":
        oriented = _to_rgb(oriented)
    oriented_w, oriented_h = _oriented_size(width, height, oriented)
    rgb = _fit(np.asarray(oriented, dtype=np.uint8), max_side)
    return rgb, oriented_w, oriented_h, image_format


# EXIF orientation -> the transpose that shows the image as a viewer does.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orient(image: Image.Image) -> Image.Image:
    """The decoded image turned as its EXIF orientation says; unturned when the EXIF
    cannot be read.

    Not `ImageOps.exif_transpose`: after turning the pixels it rewrites the EXIF
    block without the orientation, and a crafted block (a tag of the wrong type,
    such as SamplesPerPixel stored as text) makes that rewrite raise (`struct.error`,
    `TypeError`, ...). The pixels were fine; only the metadata was not. An EXIF
    block that cannot even be parsed is treated as absent, as a viewer does, so
    the image is still judged.
    """
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        method = _TRANSPOSE.get(orientation) if isinstance(orientation, int) else None
    except Exception:  # noqa: BLE001 - unparseable EXIF: no orientation, the pixels stand
        method = None
    return image if method is None else image.transpose(method)


def _register_heif() -> None:
    # pillow-heif's opener, only when a HEIF file is met (HEIC from phones).
    from pillow_heif import register_heif_opener

    register_heif_opener()


def _fit(rgb: NDArray[np.uint8], max_side: int) -> NDArray[np.uint8]:
    height, width = rgb.shape[:2]
    if max(height, width) <= max_side:
        return rgb
    import cv2  # its area resize is several times faster than Pillow's on large images

    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become white, not black, as a viewer shows them.
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _oriented_size(width: int, height: int, decoded: Image.Image) -> tuple[int, int]:
    """The original's size after EXIF rotation, from the (maybe drafted) decoded image."""
    dw, dh = decoded.size
    if (dw >= dh) == (width >= height) or width == height:
        return width, height
    return height, width
