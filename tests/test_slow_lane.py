"""No uploader can delay others for long (issue 18): a sparse file (199 MB of holes behind
a JPEG marker: no disk, seconds of reading, hashing and decoding) or one slow to decode
is set aside to `watch`'s slow lane, judged with the whole decode budget when nothing
else waits, while ordinary uploads keep their latency."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

import pytest

from facesieve.config import ImagesConfig
from facesieve.judging import judge
from facesieve.judging.judge import NotJudged, Read, Status

from .conftest import DATA, labelled
from .daemon_util import Daemon, write_config
from .images_util import scan_bomb

_JFIF = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
_BOMB_BYTES = 199 * 1024 * 1024
_BOUND = 10.0  # seconds from a photo's arrival to its decision, bombs ahead of it


def sparse_bomb(path: Path) -> Path:
    """A JPEG marker, then 199 MB of holes: a few KB on disk."""
    with path.open("wb") as handle:
        handle.write(_JFIF)
        handle.truncate(_BOMB_BYTES)
    return path


def test_a_sparse_file_is_told_from_a_photo(tmp_path: Path) -> None:
    bomb = sparse_bomb(tmp_path / "bomb.jpg")
    info = os.stat(bomb)
    if info.st_blocks * 512 >= info.st_size:
        pytest.skip("this filesystem stores no holes")
    assert judge.is_sparse(info)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes((DATA / "noface" / "cat.4001.jpg").read_bytes())
    assert not judge.is_sparse(os.stat(photo))
    dense = tmp_path / "dense.bin"
    dense.write_bytes(os.urandom(2 << 20))
    assert not judge.is_sparse(os.stat(dense))


def test_with_a_first_budget_a_slow_file_is_set_aside_unread(tmp_path: Path) -> None:
    images = ImagesConfig(decode_timeout=30.0, max_jpeg_scans=100_000)
    bomb = sparse_bomb(tmp_path / "bomb.jpg")
    started = time.monotonic()
    result = judge.read(bomb, images, first_budget=1.0)
    assert isinstance(result, NotJudged) and result.slow, result
    assert result.status is Status.DEFERRED and "sparse" in result.reason
    assert time.monotonic() - started < 1.0  # not a byte read
    slow = tmp_path / "scans.jpg"
    slow.write_bytes(scan_bomb())  # dense, ~1 MB, decodes for minutes
    started = time.monotonic()
    result = judge.read(slow, images, first_budget=1.0)
    assert isinstance(result, NotJudged) and result.slow, result
    assert "over the first decode budget (1 s)" in result.reason
    assert time.monotonic() - started < 5.0
    # Without a first budget (scan, check, the slow lane itself): as before.
    photo = tmp_path / "photo.jpg"
    photo.write_bytes((DATA / "noface" / "cat.4001.jpg").read_bytes())
    assert isinstance(judge.read(photo, images, first_budget=1.0), Read)
    plain = judge.read(bomb, ImagesConfig(decode_timeout=2.0))
    assert isinstance(plain, Read) and "decode time budget" in plain.unreadable_reason


def _decided_at(daemon: Daemon, path: Path) -> float | None:
    for event in daemon.events("decision"):
        if event["path"] == str(path):
            return datetime.fromisoformat(event["timestamp"]).timestamp()
    return None


@pytest.mark.models
@pytest.mark.data
@pytest.mark.slow
def test_watch_judges_a_photo_behind_five_sparse_bombs_within_the_bound(
    tmp_path: Path, deepface_home: Path
) -> None:
    labelled("fairface")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    probe = sparse_bomb(tmp_path / "probe.jpg")
    if os.stat(probe).st_blocks * 512 >= os.stat(probe).st_size:
        pytest.skip("this filesystem stores no holes")
    config = write_config(
        tmp_path / "c.toml",
        inbox,
        watch={"settle_seconds": 0.3},
        # A shorter whole budget than the default 20 s keeps the test short; each
        # bomb still costs the old code seconds of reading, hashing and decoding.
        images={"decode_timeout": 4.0, "unreadable_grace_seconds": 1.0},
    )
    daemon = Daemon(config, tmp_path / "log.jsonl").start()
    bombs = [inbox / f"bomb-{i}.jpg" for i in range(5)]
    photo = inbox / "upload.jpg"
    try:
        daemon.wait_for("reconciled")
        for bomb in bombs:
            sparse_bomb(bomb)
        time.sleep(0.05)  # the bombs' events first: the photo is queued behind them
        photo.write_bytes((DATA / "fairface" / "fairface_0004.jpg").read_bytes())
        written = time.time()
        deadline = time.monotonic() + 90
        while _decided_at(daemon, photo) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        decided = _decided_at(daemon, photo)
        # The bombs still get their verdicts, later, from the slow lane.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if all(_decided_at(daemon, bomb) is not None for bomb in bombs):
                break
            time.sleep(0.2)
    finally:
        code = daemon.stop()
    assert code == 0
    assert decided is not None, "the photo was never decided"
    waited = decided - written
    bomb_offsets = [round((_decided_at(daemon, b) or written) - written, 1) for b in bombs]
    print(f"photo decided {waited:.1f} s after it was written; bombs at", bomb_offsets)
    assert waited < _BOUND, f"the photo waited {waited:.1f} s behind five sparse bombs"
    verdicts = {e["path"]: e["verdict"] for e in daemon.events("decision")}
    assert verdicts[str(photo)] == "keep"
    assert [verdicts.get(str(bomb)) for bomb in bombs] == ["unreadable"] * 5
    set_aside = {e["path"] for e in daemon.events("set_aside")}
    assert set_aside >= {str(bomb) for bomb in bombs}
    bomb_times = [_decided_at(daemon, bomb) or 0.0 for bomb in bombs]
    assert min(bomb_times) >= decided  # judged when nothing else waited
