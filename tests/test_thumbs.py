"""A Scrapy thumbnail follows its full image only if it is a downscale of it (intake/thumbs).

Whoever writes the inbox can put any picture at `thumbs/<size>/<sha1>.jpg` beside a
kept `full/<sha1>.jpg`; by name alone it was kept unjudged. Real photos, real models;
the thumbnails are made as Scrapy's ImagesPipeline makes them (`scrapy_thumbnail`,
its `convert_image`), and the threshold is checked on the real client's output.
"""

from __future__ import annotations

import hashlib
import itertools
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from facesieve.config import Config
from facesieve.engines.local import Engine
from facesieve.intake.inbox import Inbox
from facesieve.intake.thumbs import MAX_DIFFERENCE, Downscales
from facesieve.ledger.store import Ledger
from tests.conftest import DATA, labelled

SIZES = {"small": (50, 50), "big": (270, 270)}


def scrapy_thumbnail(source: Path, size: tuple[int, int]) -> bytes:
    """What Scrapy 2.19's ImagesPipeline.convert_image writes for a thumbnail."""
    with Image.open(source) as opened:
        image = opened.convert("RGB") if opened.mode != "RGB" else opened.copy()
    image.thumbnail(size, Image.Resampling.LANCZOS)
    buffer = BytesIO()
    image.save(buffer, "JPEG")
    return buffer.getvalue()


def _face_photo() -> Path:
    row = next(r for r in labelled("fairface") if r.get("age_group") not in ("0-2", "3-9"))
    return DATA / "fairface" / row["file"]


def _noface_photo() -> Path:
    return DATA / "noface" / labelled("noface")[0]["file"]


def _scrapy_sample(root: Path, key: str, photo: Path) -> dict[str, Path]:
    """full/<key>.jpg (the photo's own bytes, as Scrapy keeps a JPEG) and its thumbnails."""
    paths = {"full": root / "full" / f"{key}.jpg"}
    paths["full"].parent.mkdir(parents=True, exist_ok=True)
    paths["full"].write_bytes(photo.read_bytes())
    for name, size in SIZES.items():
        thumb = paths[name] = root / "thumbs" / name / f"{key}.jpg"
        thumb.parent.mkdir(parents=True, exist_ok=True)
        thumb.write_bytes(scrapy_thumbnail(photo, size))
    return paths


@pytest.mark.models
@pytest.mark.data
@pytest.mark.parametrize("layout", ["scrapy", "auto"])
def test_a_planted_thumbnail_is_judged_on_its_own_and_the_real_ones_follow(
    tmp_path: Path, analyzer: Any, layout: str
) -> None:
    inbox = tmp_path / "inbox"
    key = hashlib.sha1(b"http://127.0.0.1/photo.jpg").hexdigest()  # Scrapy's naming
    sample = _scrapy_sample(inbox, key, _face_photo())
    # The uploader's plant: a no-face picture at the small thumbnail's name.
    sample["small"].write_bytes(scrapy_thumbnail(_noface_photo(), SIZES["small"]))
    config = Config.model_validate({"inbox": {"layout": layout}, "policy": {"require": "face"}})
    folders = config.resolve_folders(inbox)
    walked = list(Inbox.of(config, folders).walk())
    assert sorted(walked) == sorted([sample["full"], sample["small"]])
    ledger = Ledger(folders.ledger)
    engine = Engine(config, analyzer, folders=folders, ledger=ledger)
    try:
        outcomes = {o.path: o for o in engine.process_many(walked)}
    finally:
        engine.close()
        ledger.close()
    full, planted = outcomes[sample["full"]], outcomes[sample["small"]]
    assert full.action == "keep", full.reason
    assert full.members == (sample["big"],)  # the real thumbnail still follows
    assert planted.verdict is not None and planted.verdict.value == "reject"
    assert planted.reason == "no face found"
    assert planted.action == "quarantine", planted.reason
    assert not sample["small"].exists()
    assert planted.destination is not None and planted.destination.is_file()
    assert sample["full"].is_file() and sample["big"].is_file()


@pytest.mark.data
def test_real_thumbnails_are_downscales_and_other_photos_are_not(tmp_path: Path) -> None:
    """The threshold's margins, with thumbnails made as Scrapy makes them (the real
    client's own output is checked in test_real_scrapy_thumbnails_stay_under_the_threshold)."""
    photos = [DATA / "fairface" / r["file"] for r in labelled("fairface")[:12]]
    photos += [DATA / "noface" / r["file"] for r in labelled("noface")[:4]]
    downscales = Downscales()
    for size in SIZES.values():
        thumbs = {photo: scrapy_thumbnail(photo, size) for photo in photos}
        for photo in photos:
            real = downscales.difference(thumbs[photo], photo.read_bytes())
            assert real is not None and real < MAX_DIFFERENCE / 2, (photo.name, size, real)
        for full, other in itertools.permutations(photos[:8], 2):
            wrong = downscales.difference(thumbs[other], full.read_bytes())
            assert wrong is None or wrong > MAX_DIFFERENCE * 1.25, (full.name, other.name, wrong)


@pytest.mark.slow
@pytest.mark.data
def test_real_scrapy_thumbnails_stay_under_the_threshold(tmp_path: Path) -> None:
    """The real client (scrapers venv; skipped without it): every thumbnail it wrote is
    a downscale of its full image, and none is of another one."""
    from tests.scrapers_util import pick_photos, run_scrapy, serve_images
    from tests.test_scrapers import require_clients

    require_clients()
    photos = pick_photos(faces=9, nofaces=3)
    output = tmp_path / "out"
    with serve_images(photos) as server:
        run_scrapy(server, output, tmp_path / "client")
    fulls = sorted((output / "full").iterdir())
    assert len(fulls) == len(photos)
    downscales = Downscales()
    for size in SIZES:
        for full in fulls:
            thumb = (output / "thumbs" / size / full.name).read_bytes()
            real = downscales.difference(thumb, full.read_bytes())
            assert real is not None and real < MAX_DIFFERENCE / 2, (full.name, size, real)
        for full, other in itertools.permutations(fulls, 2):
            thumb = (output / "thumbs" / size / other.name).read_bytes()
            wrong = downscales.difference(thumb, full.read_bytes())
            assert wrong is None or wrong > MAX_DIFFERENCE * 1.25, (full.name, other.name, wrong)
