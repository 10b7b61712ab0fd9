"""The real scrapers (img2dataset, gallery-dl, Scrapy) against images served on 127.0.0.1.

The clients cannot share facesieve's venv: img2dataset 1.47 needs pandas<3 (constraints.txt
pins pandas 3.1.1 for deepface and ray) and installs opencv-python-headless beside our
opencv-contrib-python-headless (two cv2 distributions overwrite each other's files). So they
live in a venv of their own, pinned by tests/scrapers-requirements.txt and built by
scripts/scrapers-venv, and run here as subprocesses. Where it is: $FACESIEVE_SCRAPERS_VENV,
else <project>/.scrapers-venv.

`serve_images` serves face photos (../shared/data/fairface) and no-face photos
(../shared/data/noface) where they lie, from a threaded http.server bound to 127.0.0.1 on a
free port, and counts the GETs of each image (a re-run that downloads again shows there).
The runners write each client's output into a folder of the caller's; `inventory` says what
lies in such a folder, by the roles each client's layout gives its files.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

PROJECT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACESIEVE_TEST_DATA", PROJECT.parent / "shared" / "data"))
REQUIREMENTS = PROJECT / "tests" / "scrapers-requirements.txt"
CLIENTS = ("img2dataset", "gallery-dl", "scrapy")
LOOPBACK = "127.0.0.1"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"})
# FairFace age groups below facesieve's adult line (evaluation/evaluate.is_child); the mix
# takes adults only, so that "a face photo" means the same thing to every detector.
CHILD_AGE_GROUPS = frozenset({"0-2", "3-9"})


class ScrapersMissingError(RuntimeError):
    """A client is not installed in the scrapers' venv."""


class ClientFailedError(RuntimeError):
    """A client exited non-zero; the message carries the end of its output."""


def scrapers_venv() -> Path:
    return Path(os.environ.get("FACESIEVE_SCRAPERS_VENV", PROJECT / ".scrapers-venv"))


def client_path(name: str) -> Path:
    """The executable of client `name` in the scrapers' venv, or ScrapersMissingError."""
    path = scrapers_venv() / "bin" / name
    if not os.access(path, os.X_OK):
        raise ScrapersMissingError(
            f"{name} is not installed at {path} (build the venv: scripts/scrapers-venv, "
            f"or point FACESIEVE_SCRAPERS_VENV at one built from {REQUIREMENTS.name})"
        )
    return path


def client_env(home: Path) -> dict[str, str]:
    """The environment every client runs in: a HOME of its own (gallery-dl's cache, tldextract's
    suffix cache and Scrapy's settings lookups land there, not in the user's), no update
    check by albumentations (it would go online), and no PYTHONPATH of ours."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_CONFIG_HOME=str(home / ".config"),
        NO_ALBUMENTATIONS_UPDATE="1",
        WANDB_MODE="disabled",
        SCRAPY_SETTINGS_MODULE="",
    )
    return env


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: float) -> float:
    """Run a client to its end; its wall time in seconds. ClientFailedError on exit != 0."""
    started = time.monotonic()
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    elapsed = time.monotonic() - started
    (cwd / f"{Path(command[0]).name}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise ClientFailedError(f"{command[0]} exited {result.returncode}:\n{tail}")
    return elapsed


# ----------------------------------------------------------------------------- the server


@dataclass(frozen=True)
class Photo:
    name: str  # its name on the server and in the shared data
    source: Path
    face: bool  # a face photo (FairFace adult) or a no-face one (a cat)

    def sha256(self) -> str:
        return hashlib.sha256(self.source.read_bytes()).hexdigest()


def pick_photos(faces: int, nofaces: int) -> list[Photo]:
    """The first `faces` adult FairFace photos and `nofaces` no-face photos, interleaved
    (three faces, one cat, ...) so that every shard of a client gets both kinds."""
    face_rows = _labels("fairface")
    cat_rows = _labels("noface")
    with_face = [
        Photo(row["file"], DATA / "fairface" / row["file"], face=True)
        for row in face_rows
        if row.get("age_group") not in CHILD_AGE_GROUPS
    ][:faces]
    without = [Photo(row["file"], DATA / "noface" / row["file"], face=False) for row in cat_rows]
    without = without[:nofaces]
    if len(with_face) < faces or len(without) < nofaces:
        raise ValueError(f"asked for {faces}+{nofaces} photos; the data has fewer")
    mixed: list[Photo] = []
    while with_face or without:
        mixed.extend(with_face[:3])
        del with_face[:3]
        mixed.extend(without[:1])
        del without[:1]
    return mixed


def _labels(folder: str) -> list[dict[str, str]]:
    labels = DATA / folder / "labels.csv"
    if not labels.is_file():
        raise FileNotFoundError(f"labelled images not found at {labels}")
    with labels.open(newline="") as handle:
        return list(csv.DictReader(handle))


@dataclass
class ImageServer:
    """A running loopback server: /images/NAME for each photo, /index.html linking them all."""

    photos: list[Photo]
    port: int = 0
    _gets: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def url(self, photo: Photo) -> str:
        return f"{self.base_url}/images/{photo.name}"

    def urls(self) -> list[str]:
        return [self.url(photo) for photo in self.photos]

    def by_url(self) -> dict[str, Photo]:
        return {self.url(photo): photo for photo in self.photos}

    def image_gets(self) -> int:
        """How many image bodies the server has sent so far."""
        with self._lock:
            return sum(n for path, n in self._gets.items() if path.startswith("/images/"))

    def count(self, path: str) -> None:
        with self._lock:
            self._gets[path] += 1

    def index_html(self) -> bytes:
        links = "\n".join(
            f'<li><a href="/images/{p.name}"><img src="/images/{p.name}"></a></li>'
            for p in self.photos
        )
        return f"<!doctype html><title>photos</title><ul>\n{links}\n</ul>\n".encode()


def _handler(server: ImageServer) -> type[BaseHTTPRequestHandler]:
    files = {f"/images/{photo.name}": photo.source for photo in server.photos}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = unquote(self.path.split("?", 1)[0])
            if path in ("/", "/index.html"):
                self._send(server.index_html(), "text/html; charset=utf-8")
            elif path in files:
                server.count(path)
                self._send(files[path].read_bytes(), "image/jpeg")
            else:
                self.send_error(404)

        def _send(self, body: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # the counts say what was asked for; stderr stays quiet

    return Handler


@contextmanager
def serve_images(photos: list[Photo]) -> Iterator[ImageServer]:
    """Serve `photos` from 127.0.0.1 on a free port until the block ends."""
    server = ImageServer(photos)
    httpd = ThreadingHTTPServer((LOOPBACK, 0), _handler(server))
    httpd.daemon_threads = True
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, name="image-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


# ----------------------------------------------------------------------------- the runners


def run_img2dataset(
    server: ImageServer, output: Path, work: Path, per_shard: int = 20, timeout: float = 300
) -> float:
    """img2dataset output_format="files" over a csv of (url, caption): per sample
    SHARD/KEY.jpg + .json + .txt, per shard SHARD.parquet and SHARD_stats.json. The images
    keep the server's bytes (disable_all_reencoding), so what was written can be checked.
    Running it again on the same output is img2dataset's incremental resume."""
    work.mkdir(parents=True, exist_ok=True)
    url_list = work / "urls.csv"
    with url_list.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url", "caption"])
        for photo in server.photos:
            writer.writerow([server.url(photo), f"photo {photo.name}"])
    command = [
        str(client_path("img2dataset")),
        f"--url_list={url_list}",
        "--input_format=csv",
        "--url_col=url",
        "--caption_col=caption",
        f"--output_folder={output}",
        "--output_format=files",
        f"--number_sample_per_shard={per_shard}",
        "--processes_count=1",
        "--thread_count=4",
        "--timeout=10",
        "--retries=0",
        "--disable_all_reencoding=True",
        "--enable_wandb=False",
    ]
    return _run(command, work, client_env(work / "home"), timeout)


def run_gallery_dl(
    server: ImageServer,
    output: Path,
    work: Path,
    exec_command: str | None = None,
    timeout: float = 300,
) -> float:
    """gallery-dl on direct image links into `output` (-D: no subfolders), with
    --write-metadata (NAME.jpg.json) and --write-info-json (info.json); with `exec_command`,
    also its `exec` post-processor after each file ({} is the file's path)."""
    work.mkdir(parents=True, exist_ok=True)
    url_file = work / "urls.txt"
    url_file.write_text("".join(f"{url}\n" for url in server.urls()))
    command = [
        str(client_path("gallery-dl")),
        "--config-ignore",
        "--no-colors",
        "-D",
        str(output),
        "--write-metadata",
        "--write-info-json",
        # NAME.jpg, as the URL names it (the default prefixes host and path).
        "-f",
        "{filename}.{extension}",
        "-i",
        str(url_file),
    ]
    if exec_command is not None:
        command[1:1] = ["--exec", exec_command]
    return _run(command, work, client_env(work / "home"), timeout)


SCRAPY_SPIDER = '''\
"""A tiny spider: every image linked from the index page goes to ImagesPipeline."""

import scrapy


class PhotosSpider(scrapy.Spider):
    name = "photos"
    custom_settings = {
        "ITEM_PIPELINES": {"scrapy.pipelines.images.ImagesPipeline": 1},
        "IMAGES_STORE": OUTPUT,
        "IMAGES_THUMBS": THUMBS,
        "ROBOTSTXT_OBEY": False,
        "TELNETCONSOLE_ENABLED": False,
        # Scrapy 2.19 opens a job-control HTTP server on its own unless told not to.
        "REMOTE_CONTROL_ENABLED": False,
        "LOG_LEVEL": "INFO",
        "CONCURRENT_REQUESTS": 4,
    }

    start_urls = [INDEX]

    def parse(self, response):
        links = response.css("a::attr(href)").getall()
        yield {"image_urls": [response.urljoin(href) for href in links]}
'''

SCRAPY_THUMBS = {"small": (50, 50), "big": (270, 270)}


def run_scrapy(
    server: ImageServer,
    output: Path,
    work: Path,
    thumbs: dict[str, tuple[int, int]] | None = None,
    timeout: float = 300,
) -> float:
    """Scrapy's ImagesPipeline in a temp project folder: full/<sha1 of url>.jpg and, with
    `thumbs` (default: small 50x50 and big 270x270), thumbs/<size>/<sha1>.jpg each."""
    work.mkdir(parents=True, exist_ok=True)
    sizes = SCRAPY_THUMBS if thumbs is None else thumbs
    spider = work / "photos_spider.py"
    spider.write_text(
        f"OUTPUT = {str(output)!r}\nTHUMBS = {sizes!r}\n"
        f"INDEX = {server.base_url + '/index.html'!r}\n" + SCRAPY_SPIDER
    )
    command = [str(client_path("scrapy")), "runspider", spider.name, "-o", "items.jsonl"]
    return _run(command, work, client_env(work / "home"), timeout)


def scrapy_key(url: str) -> str:
    """The file name stem ImagesPipeline gives an image: the SHA1 of its URL."""
    return hashlib.sha1(url.encode()).hexdigest()  # Scrapy's naming, not a security use


# ----------------------------------------------------------------------------- the inventory

INDEX_NAMES = frozenset({"info.json"})


@dataclass
class Inventory:
    """What lies in a client's output folder, each file by its role (relative POSIX paths).
    `.facesieve/` (quarantine, review, ledger) is not part of the dataset and not counted."""

    images: list[str] = field(default_factory=list)
    sidecars: list[str] = field(default_factory=list)  # each with its image in place
    orphans: list[str] = field(default_factory=list)  # sidecars and thumbs whose image is gone
    index_files: list[str] = field(default_factory=list)  # parquet, _stats.json, info.json
    thumbs: list[str] = field(default_factory=list)  # each with its full image in place
    work_files: list[str] = field(default_factory=list)  # a writer's _tmp/
    other: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            name: len(getattr(self, name))
            for name in (
                "images",
                "sidecars",
                "orphans",
                "index_files",
                "thumbs",
                "work_files",
                "other",
            )
        }


def is_index_file(name: str) -> bool:
    return name.endswith((".parquet", "_stats.json")) or name in INDEX_NAMES


def owner_of(relative: PurePosixPath) -> list[PurePosixPath]:
    """The images a non-image file may belong to, by the three layouts: same stem in the
    same folder (img2dataset KEY.json), the image's full name plus a suffix (gallery-dl
    NAME.jpg.json), and Scrapy's thumbs/<size>/<sha1>.jpg for full/<sha1>.jpg."""
    parts = relative.parts
    if len(parts) >= 3 and parts[-3] == "thumbs":
        return [PurePosixPath(*parts[:-3], "full", parts[-1])]
    owners = [relative.with_name(relative.stem)]  # NAME.jpg.json -> NAME.jpg
    owners += [relative.with_suffix(suffix) for suffix in sorted(IMAGE_SUFFIXES)]
    return [owner for owner in owners if owner != relative]


def inventory(root: Path) -> Inventory:
    files = sorted(
        PurePosixPath(path.relative_to(root).as_posix())
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink()
    )
    files = [f for f in files if f.parts[0] != ".facesieve"]
    present = set(files)
    found = Inventory()
    for relative in files:
        text = str(relative)
        in_thumbs = len(relative.parts) >= 3 and relative.parts[-3] == "thumbs"
        if relative.parts[0] == "_tmp":
            found.work_files.append(text)
        elif is_index_file(relative.name):
            found.index_files.append(text)
        elif relative.suffix.lower() in IMAGE_SUFFIXES and not in_thumbs:
            found.images.append(text)
        elif any(owner in present for owner in owner_of(relative)):
            (found.thumbs if in_thumbs else found.sidecars).append(text)
        elif in_thumbs or relative.suffix in (".json", ".txt"):
            found.orphans.append(text)
        else:
            found.other.append(text)
    return found


def sha256_of(root: Path, relatives: list[str]) -> Counter[str]:
    """The multiset of the SHA-256 of these files (to match what a client wrote with what
    the server sent)."""
    return Counter(hashlib.sha256((root / r).read_bytes()).hexdigest() for r in relatives)


def read_json(path: Path) -> object:
    return json.loads(path.read_text())


def facesieve_command() -> list[str]:
    return [sys.executable, "-m", "facesieve"]
