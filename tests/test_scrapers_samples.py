"""Issue 17 with the real clients and the real models: every scraper's output stays a valid
dataset after `facesieve scan --require face` (the loopback server of scrapers_util: FairFace
adults and no-face photos). Skips without the clients (scripts/scrapers-venv), fails under CI."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .scrapers_util import (
    ImageServer,
    Inventory,
    Photo,
    facesieve_command,
    inventory,
    pick_photos,
    run_gallery_dl,
    run_img2dataset,
    run_scrapy,
    serve_images,
)
from .test_scrapers import require_clients

pytestmark = [pytest.mark.slow, pytest.mark.data, pytest.mark.models]


@pytest.fixture(scope="module")
def photos() -> list[Photo]:
    try:
        return pick_photos(faces=9, nofaces=3)
    except FileNotFoundError as error:
        pytest.skip(f"{error} (../shared/data is not here)")


@pytest.fixture
def server(photos: list[Photo]) -> Iterator[ImageServer]:
    with serve_images(photos) as running:
        yield running


def scan(folder: Path) -> str:
    """The real CLI, real models: `scan --require face`; returns its stderr (the summary)."""
    done = subprocess.run(
        [*facesieve_command(), "scan", str(folder), "--require", "face", "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.stderr


def quarantined(folder: Path) -> Inventory:
    return inventory(folder / ".facesieve" / "quarantine")


def test_img2dataset_kept_images_keep_their_sidecars_rejected_go_whole_and_resume_works(
    server: ImageServer, photos: list[Photo], tmp_path: Path
) -> None:
    require_clients()
    output = tmp_path / "out"
    run_img2dataset(server, output, tmp_path / "client", per_shard=5)
    summary = scan(output)
    assert "layout img2dataset" in summary
    after = inventory(output)
    faces = sum(p.face for p in photos)
    assert faces - 1 <= len(after.images) <= faces  # the detector may miss one photo
    assert len(after.sidecars) == 2 * len(after.images)  # every kept image: .json and .txt
    assert after.orphans == [] and after.other == []
    assert len(after.index_files) == 6  # 3 shards' .parquet and _stats.json, in place
    gone = quarantined(output)
    assert len(gone.images) == len(photos) - len(after.images)
    assert len(gone.sidecars) == 2 * len(gone.images) and gone.orphans == []
    # img2dataset's resume: its _stats.json are there, the re-run downloads nothing.
    gets = server.image_gets()
    run_img2dataset(server, output, tmp_path / "client-again", per_shard=5)
    assert server.image_gets() == gets
    assert inventory(output).counts() == after.counts()


def test_gallery_dl_kept_images_keep_their_metadata_and_info_json_stays(
    server: ImageServer, photos: list[Photo], tmp_path: Path
) -> None:
    require_clients()
    output = tmp_path / "out"
    run_gallery_dl(server, output, tmp_path / "client")
    summary = scan(output)
    assert "layout gallery-dl" in summary
    after = inventory(output)
    assert len(after.images) >= sum(p.face for p in photos) - 1
    assert sorted(after.sidecars) == sorted(f"{image}.json" for image in after.images)
    assert after.index_files == ["info.json"] and after.orphans == []
    gone = quarantined(output)
    assert len(gone.images) + len(after.images) == len(photos)
    assert len(gone.sidecars) == len(gone.images)


def test_scrapy_kept_photos_keep_their_thumbnails(
    server: ImageServer, photos: list[Photo], tmp_path: Path
) -> None:
    require_clients()
    output = tmp_path / "out"
    run_scrapy(server, output, tmp_path / "client")
    summary = scan(output)
    assert "layout scrapy" in summary
    after = inventory(output)
    assert len(after.images) >= sum(p.face for p in photos) - 1
    assert len(after.thumbs) == 2 * len(after.images)  # small and big, each
    assert after.orphans == []
    gone = quarantined(output)
    assert len(gone.images) + len(after.images) == len(photos)
    assert len(gone.thumbs) == 2 * len(gone.images)
