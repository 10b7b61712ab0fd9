"""Whether a Scrapy thumbnail is what it claims: a downscale of its full image.

Scrapy's ImagesPipeline writes `thumbs/<size>/<sha1>.jpg` beside `full/<sha1>.jpg`,
and a thumbnail follows its full image (`layouts`). A name is no proof: whoever
writes the inbox can put any picture at a thumbnail's name, beside a kept photo, and
it would be kept unjudged. So a thumbnail follows its full image only if its pixels
say it is a downscale of it: both are decoded through the budgeted decoder (their
own child process, its time and memory limits), the full image is shrunk to the
thumbnail's size by area averaging, and their mean absolute difference must stay
under `MAX_DIFFERENCE`. Anything else (another picture, another aspect, a thumbnail
larger than its image, either one unreadable) is no member: it is judged on its own.

Area averaging (OpenCV's INTER_AREA, every source pixel weighted) is the scaling
that "image-scaling attacks" cannot steer: a full image crafted so that a sampling
resize shows another picture averages back to what it shows at full size.

The difference: both are blurred a little (a Gaussian of one pixel: Pillow's
LANCZOS, which Scrapy uses, rings where area averaging does not, and JPEG at quality
75 blurs), their mean absolute difference is taken over cells of 8x8 pixels, and
the worst cell counts, so that a picture pasted into part of a true thumbnail is
seen even where the mean over the whole would hide it. `MAX_DIFFERENCE` (0..255):
on the real Scrapy thumbnails of tests/scrapers_util.py (30 FairFace adults and 10
no-face photos, 50x50 and 270x270; tests/test_thumbs.py) the worst cell of a true
thumbnail differed by 16.9 (small) and 5.7 (big), a thumbnail of another photo of
the same aspect by at least 63.2; 40 is 2.4 times the real worst and 1.6 times
below the nearest other photo.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from ..config import ImagesConfig
from ..errors import DecodeInterruptedError, UnreadableImageError
from ..logs import get_logger
from .safefs import Identity

if TYPE_CHECKING:
    from ..judging.decoder import Decoder

__all__ = ["MAX_DIFFERENCE", "MAX_THUMB_BYTES", "MAX_THUMB_SIDE", "Downscales"]

MAX_DIFFERENCE = 40.0  # the worst 8x8 cell's mean absolute difference, 0..255
_CELL = 8  # pixels
_BLUR_SIGMA = 1.0  # pixels
MAX_THUMB_SIDE = 1024  # a "thumbnail" larger than this is no thumbnail: judged itself
MAX_THUMB_BYTES = 4 << 20
_REMEMBERED = 65_536  # verdicts kept, by both files' identities (a walk per pass)

_decoders: dict[ImagesConfig, Decoder] = {}
_decoders_lock = threading.Lock()
# Every answer in the process, by settings and both files' identities: the walk and
# the applier (each with its own rules) ask about the same pair.
_known: OrderedDict[tuple[ImagesConfig, Identity, Identity], bool] = OrderedDict()
_known_lock = threading.Lock()


def _decoder(images: ImagesConfig) -> Decoder:
    """A decoder child of its own (never the judge's shared one, whose settings a
    reload may change under it): started on the first thumbnail, ended at exit."""
    from ..judging.decoder import Decoder

    with _decoders_lock:
        decoder = _decoders.get(images)
        if decoder is None:
            for old in _decoders.values():
                old.close()  # settings changed (a reload): one child at a time
            _decoders.clear()
            decoder = _decoders[images] = Decoder(images)
        return decoder


class Downscales:
    """Answers "is this thumbnail a downscale of that image?", remembering each answer
    by both files' identities (so a reconciliation pass decodes nothing new)."""

    def __init__(self, images: ImagesConfig | None = None) -> None:
        self.images = images if images is not None else ImagesConfig()

    def follows(
        self, thumb: tuple[Identity, bytes], full: tuple[Identity, bytes], where: str = ""
    ) -> bool:
        """Whether the thumbnail (`where`, for the log) is a downscale of `full`."""
        key = (self.images, thumb[0], full[0])
        with _known_lock:
            known = _known.get(key)
            if known is not None:
                _known.move_to_end(key)
                return known
        difference = self.difference(thumb[1], full[1])
        answer = difference is not None and difference <= MAX_DIFFERENCE
        if not answer:
            get_logger().info(
                "thumbnail_judged",
                path=where,
                reason="not a downscale of its full image: judged on its own",
                difference=None if difference is None else round(difference, 2),
            )
        with _known_lock:
            _known[key] = answer
            while len(_known) > _REMEMBERED:
                _known.popitem(last=False)
        return answer

    def difference(self, thumb_bytes: bytes, full_bytes: bytes) -> float | None:
        """The worst 8x8 cell's mean absolute difference between the thumbnail and its
        full image shrunk to the thumbnail's size, both blurred by one pixel; None
        when they cannot be compared (unreadable, a thumbnail larger than its image
        or of another aspect)."""
        import cv2
        import numpy as np

        decoder = _decoder(self.images)
        try:
            thumb = decoder.decode(thumb_bytes, max_side=MAX_THUMB_SIDE)
            if max(thumb.width, thumb.height) > MAX_THUMB_SIDE:
                return None
            full = decoder.decode(full_bytes, max_side=max(thumb.width, thumb.height))
        except (UnreadableImageError, DecodeInterruptedError):
            return None
        tw, th, fw, fh = thumb.width, thumb.height, full.width, full.height
        if tw > fw or th > fh or abs(tw * fh - th * fw) > max(fw, fh):
            return None  # a downscale keeps the aspect, to the pixel Pillow rounds to
        shrunk = np.asarray(full.rgb, dtype=np.uint8)
        if shrunk.shape[:2] != (th, tw):
            resized = cv2.resize(shrunk, (tw, th), interpolation=cv2.INTER_AREA)
            shrunk = np.asarray(resized, dtype=np.uint8)
        ours = cv2.GaussianBlur(shrunk, (0, 0), _BLUR_SIGMA).astype(np.float32)
        theirs = cv2.GaussianBlur(thumb.rgb, (0, 0), _BLUR_SIGMA).astype(np.float32)
        delta = np.abs(ours - theirs).mean(axis=2)
        cells = (max(1, round(tw / _CELL)), max(1, round(th / _CELL)))
        return float(cv2.resize(delta, cells, interpolation=cv2.INTER_AREA).max())
