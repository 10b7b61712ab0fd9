"""The harness of issue 17 works: each real client writes, from the loopback server, what its
layout says, and `inventory` counts it right. No facesieve verdict is asserted here: what
facesieve does to these folders is bench/scrapers.py's table (the sample rules' tests come
with the sample rules)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from .scrapers_util import (
    CLIENTS,
    LOOPBACK,
    SCRAPY_THUMBS,
    ImageServer,
    Photo,
    ScrapersMissingError,
    client_path,
    inventory,
    pick_photos,
    run_gallery_dl,
    run_img2dataset,
    run_scrapy,
    scrapy_key,
    serve_images,
    sha256_of,
)
from .tools_util import in_ci


def require_clients() -> None:
    """Every client installed, or skip; under CI=true a missing one fails (as require_tool)."""
    try:
        for name in CLIENTS:
            client_path(name)
    except ScrapersMissingError as error:
        if in_ci():
            pytest.fail(f"{error}; CI=true, so .ci/run must have built it", pytrace=False)
        pytest.skip(str(error))


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


def _served(photos: list[Photo]) -> Counter[str]:
    return Counter(photo.sha256() for photo in photos)


def test_server_serves_the_photos_on_loopback_only_and_counts_gets(
    server: ImageServer, photos: list[Photo]
) -> None:
    assert server.base_url.startswith(f"http://{LOOPBACK}:")
    assert [p.face for p in photos].count(True) == 9
    assert [p.face for p in photos].count(False) == 3
    with urllib.request.urlopen(server.url(photos[0]), timeout=10) as response:
        assert response.read() == photos[0].source.read_bytes()
    with urllib.request.urlopen(server.base_url + "/index.html", timeout=10) as response:
        page = response.read().decode()
    assert all(f'href="/images/{p.name}"' in page for p in photos)
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(server.base_url + "/images/absent.jpg", timeout=10)
    assert server.image_gets() == 1  # the page and the 404 are not image bodies


def test_missing_clients_skip_outside_ci_and_fail_in_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FACESIEVE_SCRAPERS_VENV", str(tmp_path / "no-venv"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="img2dataset is not installed"):
        require_clients()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"not installed.*CI=true"):
        require_clients()


def test_inventory_sorts_each_layout_and_finds_orphans(tmp_path: Path) -> None:
    def write(relative: str) -> None:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")

    for name in (
        "00000/000000.jpg", "00000/000000.json", "00000/000000.txt",
        "00000/000001.json", "00000/000001.txt",  # their image is gone
        "00000.parquet", "00000_stats.json", "_tmp/0.feather",
        "g/a.jpg", "g/a.jpg.json", "g/b.jpg.json", "g/info.json",
        "s/full/k1.jpg", "s/thumbs/small/k1.jpg", "s/thumbs/big/k1.jpg", "s/thumbs/small/k2.jpg",
        "notes.md", ".facesieve/quarantine/00000/000001.jpg",
    ):  # fmt: skip
        write(name)
    found = inventory(tmp_path)
    assert found.images == ["00000/000000.jpg", "g/a.jpg", "s/full/k1.jpg"]
    assert found.sidecars == ["00000/000000.json", "00000/000000.txt", "g/a.jpg.json"]
    assert found.thumbs == ["s/thumbs/big/k1.jpg", "s/thumbs/small/k1.jpg"]
    assert found.orphans == [
        "00000/000001.json",
        "00000/000001.txt",
        "g/b.jpg.json",
        "s/thumbs/small/k2.jpg",
    ]
    assert found.index_files == ["00000.parquet", "00000_stats.json", "g/info.json"]
    assert found.work_files == ["_tmp/0.feather"]
    assert found.other == ["notes.md"]


@pytest.mark.slow
@pytest.mark.data
def test_img2dataset_writes_every_sample_of_every_shard_and_resumes(
    server: ImageServer, photos: list[Photo], tmp_path: Path
) -> None:
    require_clients()
    output = tmp_path / "out"
    run_img2dataset(server, output, tmp_path / "client", per_shard=5)
    assert server.image_gets() == len(photos)

    found = inventory(output)
    # 12 samples in shards of 5: 00000, 00001 full, 00002 with 2; each KEY.jpg/.json/.txt.
    assert found.counts() == {
        "images": 12, "sidecars": 24, "orphans": 0, "index_files": 6,
        "thumbs": 0, "work_files": 0, "other": 0,
    }  # fmt: skip
    assert sorted({Path(f).parent.name for f in found.images}) == ["00000", "00001", "00002"]
    assert sorted(found.index_files) == [
        f"0000{n}{suffix}" for n in range(3) for suffix in (".parquet", "_stats.json")
    ]
    assert sha256_of(output, found.images) == _served(photos)  # the server's bytes, unchanged
    urls = set(server.urls())
    for image in found.images:
        key = output / Path(image).with_suffix("")
        meta = json.loads(key.with_suffix(".json").read_text())
        assert meta["status"] == "success"
        assert meta["url"] in urls
        assert key.with_suffix(".txt").read_text() == f"photo {meta['url'].rsplit('/', 1)[1]}"
    stats = [json.loads((output / f).read_text()) for f in found.index_files if "stats" in f]
    assert sum(s["successes"] for s in stats) == 12

    # A shard whose _stats.json exists is done: the same command again downloads nothing.
    run_img2dataset(server, output, tmp_path / "client-again", per_shard=5)
    assert server.image_gets() == len(photos)
    assert inventory(output).counts() == found.counts()


@pytest.mark.slow
@pytest.mark.data
def test_gallery_dl_writes_each_image_with_its_metadata_and_one_info_json(
    server: ImageServer, photos: list[Photo], tmp_path: Path
) -> None:
    require_clients()
    output = tmp_path / "out"
    run_gallery_dl(server, output, tmp_path / "client")
    assert server.image_gets() == len(photos)

    found = inventory(output)
    assert sorted(found.images) == sorted(p.name for p in photos)
    assert sorted(found.sidecars) == sorted(f"{p.name}.json" for p in photos)
    assert found.index_files == ["info.json"]
    assert found.orphans == found.thumbs == found.other == found.work_files == []
    assert sha256_of(output, found.images) == _served(photos)
    meta = json.loads((output / f"{photos[0].name}.json").read_text())
    assert meta["filename"] + "." + meta["extension"] == photos[0].name


@pytest.mark.slow
@pytest.mark.data
def test_gallery_dl_exec_hook_runs_once_per_downloaded_file(
    server: ImageServer, photos: list[Photo], tmp_path: Path
) -> None:
    require_clients()
    output = tmp_path / "out"
    calls = tmp_path / "calls.txt"
    run_gallery_dl(server, output, tmp_path / "client", exec_command=f"echo {{}} >> {calls}")
    hooked = sorted(Path(line).name for line in calls.read_text().splitlines())
    assert hooked == sorted(p.name for p in photos)
    assert all(Path(line).parent == output for line in calls.read_text().splitlines())


@pytest.mark.slow
@pytest.mark.data
def test_scrapy_images_pipeline_writes_full_images_and_their_thumbnails(
    server: ImageServer, photos: list[Photo], tmp_path: Path
) -> None:
    require_clients()
    from PIL import Image

    output = tmp_path / "out"
    run_scrapy(server, output, tmp_path / "client")
    assert server.image_gets() == len(photos)

    found = inventory(output)
    keys = sorted(scrapy_key(url) for url in server.urls())
    assert sorted(found.images) == [f"full/{key}.jpg" for key in keys]
    assert sorted(found.thumbs) == sorted(
        f"thumbs/{size}/{key}.jpg" for size in SCRAPY_THUMBS for key in keys
    )
    assert found.sidecars == found.orphans == found.index_files == found.other == []
    for size, (width, height) in SCRAPY_THUMBS.items():
        with Image.open(output / "thumbs" / size / f"{keys[0]}.jpg") as thumb:
            assert thumb.width <= width and thumb.height <= height

    plain = tmp_path / "plain"
    run_scrapy(server, plain, tmp_path / "client-plain", thumbs={})
    assert inventory(plain).counts()["images"] == len(photos)
    assert inventory(plain).thumbs == []
