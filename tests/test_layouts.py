"""Layouts (issue 17): index files, work folders and sample members are no candidates."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from facesieve.config import Config
from facesieve.intake.inbox import Inbox
from facesieve.intake.layouts import DescriptorView, SampleRules
from tests.conftest import DATA
from tests.test_thumbs import scrapy_thumbnail

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64


def _write(root: Path, relative: str, data: bytes = b"{}") -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _img2dataset(root: Path) -> None:
    for key in ("000000000", "000000001"):
        _write(root, f"00000/{key}.jpg", JPEG)
        _write(root, f"00000/{key}.json")
        _write(root, f"00000/{key}.txt", b"a caption")
    _write(root, "00000.parquet", b"PAR1")
    _write(root, "00000_stats.json")
    _write(root, "_tmp/1.feather", b"ARROW1")
    _write(root, "00000/orphan.txt", b"no image of mine")


def _walked(root: Path, layout: str = "auto") -> list[str]:
    config = Config.model_validate({"inbox": {"layout": layout}})
    inbox = Inbox.of(config, config.resolve_folders(root))
    return sorted(str(p.relative_to(root)) for p in inbox.walk())


def test_auto_finds_img2dataset_and_walks_only_images_and_orphans(tmp_path: Path) -> None:
    _img2dataset(tmp_path)
    with capture_logs() as logs:
        walked = _walked(tmp_path)
    assert walked == ["00000/000000000.jpg", "00000/000000001.jpg", "00000/orphan.txt"]
    chosen = [e for e in logs if e["event"] == "layout_chosen"]
    assert chosen[0]["layout"] == "img2dataset"
    assert "00000.parquet" in chosen[0]["why"] or "_tmp" in chosen[0]["why"]


def test_files_layout_judges_the_index_but_never_members(tmp_path: Path) -> None:
    _img2dataset(tmp_path)
    walked = _walked(tmp_path, "files")
    assert "00000.parquet" in walked and "_tmp/1.feather" in walked
    assert not any(
        name.endswith((".json", ".txt")) and "orphan" not in name
        for name in walked
        if name.startswith("00000/")
    )


def test_a_member_that_is_an_image_is_judged_on_its_own(tmp_path: Path) -> None:
    _write(tmp_path, "a/KEY.jpg", JPEG)
    _write(tmp_path, "a/KEY.json", JPEG)  # an image named like a caption: no member
    _write(tmp_path, "a/KEY.jpg.json")
    assert _walked(tmp_path) == ["a/KEY.jpg", "a/KEY.json"]


@pytest.mark.data
def test_gallery_dl_and_scrapy_samples(tmp_path: Path) -> None:
    gallery = tmp_path / "g"
    _write(gallery, "site/one.jpg", JPEG)
    _write(gallery, "site/one.jpg.json")
    _write(gallery, "site/info.json")
    assert _walked(gallery) == ["site/one.jpg"]
    scrapy = tmp_path / "s"
    # A thumbnail follows its image only as a true downscale of it (tests/test_thumbs.py).
    photo = DATA / "fairface" / "fairface_0001.jpg"
    _write(scrapy, "full/abc.jpg", photo.read_bytes())
    _write(scrapy, "thumbs/small/abc.jpg", scrapy_thumbnail(photo, (50, 50)))
    _write(scrapy, "thumbs/big/abc.jpg", scrapy_thumbnail(photo, (270, 270)))
    _write(scrapy, "thumbs/small/lonely.jpg", JPEG)
    assert _walked(scrapy) == ["full/abc.jpg", "thumbs/small/lonely.jpg"]
    rules = SampleRules("auto", scrapy)
    assert rules.name == "scrapy"
    import os

    fd = os.open(scrapy, os.O_RDONLY | os.O_DIRECTORY)
    try:
        members = rules.members(("full", "abc.jpg"), DescriptorView(fd))
    finally:
        os.close(fd)
    assert members == [("thumbs", "big", "abc.jpg"), ("thumbs", "small", "abc.jpg")]


def test_auto_learns_the_writer_from_what_arrives(tmp_path: Path) -> None:
    config = Config()
    inbox = Inbox.of(config, config.resolve_folders(tmp_path))
    assert inbox.rules.name == "files"
    feather = _write(tmp_path, "_tmp/0.feather", b"ARROW1")
    with capture_logs() as logs:
        assert not inbox.accepts(feather)
    assert inbox.rules.name == "img2dataset"
    assert [e["layout"] for e in logs if e["event"] == "layout_chosen"] == ["img2dataset"]
    image = _write(tmp_path, "00000/000000000.jpg", JPEG)
    caption = _write(tmp_path, "00000/000000000.txt", b"late")
    assert inbox.accepts(image) and not inbox.accepts(caption)
    assert not inbox.accepts(_write(tmp_path, "00000_stats.json"))


def test_an_image_named_like_an_index_file_is_judged(tmp_path: Path) -> None:
    _img2dataset(tmp_path)
    _write(tmp_path, "evil.parquet", JPEG)
    _write(tmp_path, "00000/evil_stats.json", JPEG)
    walked = _walked(tmp_path)
    assert "evil.parquet" in walked and "00000/evil_stats.json" in walked
    assert "00000.parquet" not in walked
