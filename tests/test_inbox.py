"""One inbox rule: `scan`, the daemon's reconciliation and its observer agree on every file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from facesieve.config import Config, watch_folders
from facesieve.intake.inbox import Inbox

from .cli_util import run_cli
from .conftest import DATA, labelled


def build(inbox: Path, names: list[str]) -> None:
    for name in names:
        path = inbox / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not judged here")


CANDIDATES = [
    "a.jpg",
    "B.PNG",
    "notes.txt",  # any name: the judge reads the bytes (not_image, or an image)
    ".cache/e.jpg",  # a hidden folder is judged: ignore matches a file's own name
    "x.part/y.jpg",  # a folder named like a temporary file: its files are judged
    "sub/c.webp",
    "sub/deeper/d.jpeg",
]
NOT_CANDIDATES = [
    "upload.jpg.part",  # a temporary name (default ignore)
    ".hidden.jpg",  # a hidden name (default ignore)
    "draft_f.jpg",  # the configured ignore pattern
    "drafts_folder/draft_g.jpg",
    "skipped/h.jpg",  # watch.exclude
    ".facesieve/quarantine/i.jpg",  # facesieve's own folders
]


def config_for(inbox: Path) -> Config:
    return Config.model_validate(
        {
            "folders": {"inbox": str(inbox)},
            "watch": {
                "ignore": ["*.part", ".*", "draft*"],
                "exclude": [str(inbox / "skipped")],
            },
        }
    )


def test_walk_and_accepts_agree(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    build(inbox, CANDIDATES + NOT_CANDIDATES)
    (inbox / "elsewhere").mkdir()
    (inbox / "linked_folder").symlink_to(inbox / "sub")
    config = config_for(inbox)
    for folders in (watch_folders(config), config.resolve_folders(inbox)):
        candidates = Inbox.of(config, folders)
        walked = list(candidates.walk())
        assert walked == [
            inbox / name
            for name in (
                "B.PNG",
                "a.jpg",
                "notes.txt",
                ".cache/e.jpg",
                "sub/c.webp",
                "sub/deeper/d.jpeg",
                "x.part/y.jpg",
            )
        ]
        everything = [p for p in inbox.rglob("*") if p.is_file() and not p.is_symlink()]
        assert sorted(p for p in everything if candidates.accepts(p)) == sorted(walked)
        assert not candidates.accepts(tmp_path / "outside.jpg")
        assert not candidates.accepts(inbox)


@pytest.mark.data
def test_scan_honours_the_watch_ignore_patterns(tmp_path: Path, deepface_home: Path) -> None:
    labelled("fairface")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy2(DATA / "fairface" / "fairface_0001.jpg", inbox / "photo.jpg")
    shutil.copy2(DATA / "fairface" / "fairface_0002.jpg", inbox / "draft_photo.jpg")
    config = tmp_path / "c.toml"
    config.write_text('[watch]\nignore = ["draft*"]\n')

    run = run_cli("scan", str(inbox), "--config", str(config), "--dry-run", "--json")

    assert run.code == 0, run.stderr[-2000:]
    assert [Path(r["path"]).name for r in run.records] == ["photo.jpg"]
