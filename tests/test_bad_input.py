"""A scan over every kind of awkward file: each gets a verdict or a log line,
nothing is lost, and nothing outside the folder is touched."""

from __future__ import annotations

import collections
import hashlib
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from .cli_util import run_cli
from .conftest import DATA, labelled
from .images_util import write_png_bomb, write_truncated_copy

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_awkward_files(tmp_path: Path, deepface_home: Path) -> None:
    labelled("noface")
    cat = DATA / "noface" / labelled("noface")[0]["file"]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    precious = outside / "precious.jpg"
    shutil.copy2(cat, precious)
    precious_stat = precious.stat()

    (inbox / "zero.jpg").write_bytes(b"")
    (inbox / "text.jpg").write_text("<html>this is not a photo</html>\n")
    write_truncated_copy(cat, inbox / "truncated.jpg")
    write_png_bomb(inbox / "bomb.png")
    os.mkfifo(inbox / "pipe.jpg")
    (inbox / "link.jpg").symlink_to(precious)
    (inbox / "linked-folder").symlink_to(outside, target_is_directory=True)
    secret = inbox / "secret.jpg"
    shutil.copy2(cat, secret)
    secret.chmod(0o000)
    odd_names = ["my holiday photo.jpg", "фото_é.jpg", "new\nline.jpg"]
    for name in odd_names:
        shutil.copy2(cat, inbox / name)
    (inbox / "notes.txt").write_text("not an image extension: judged by its bytes")

    regular = [
        p
        for p in inbox.iterdir()
        if p.is_file() and not p.is_symlink() and p.name not in ("pipe.jpg",)
    ]
    before = collections.Counter(
        digest(p) for p in regular if p.name not in ("secret.jpg", "notes.txt")
    )

    run = run_cli("scan", str(inbox), "--json", drop_read_override=True)
    assert run.code == 0, run.stderr[-3000:]
    by_name = {Path(r["path"]).name: r for r in run.records}

    for name in ("zero.jpg", "truncated.jpg", "bomb.png"):
        assert by_name[name]["verdict"] == "unreadable", name
        assert by_name[name]["action"] == "quarantine"
        assert by_name[name]["reason"].startswith("not a readable image")
    # Bytes that are no image, whatever the name: judged `not_image`, never left behind.
    for name in ("text.jpg", "notes.txt"):
        assert by_name[name]["verdict"] == "not_image", name
        assert by_name[name]["action"] == "quarantine"
        assert by_name[name]["reason"].startswith("not an image")
    for name in odd_names:
        assert by_name[name]["verdict"] == "reject"
        assert Path(by_name[name]["destination"]).name == name

    logged = {
        Path(e["path"]).name: e for e in run.events if e.get("event") in ("skipped", "not_judged")
    }
    # Not judged, said so in the log, left exactly where they were.
    assert "symlink" in logged["link.jpg"]["reason"]
    assert "not a regular file" in logged["pipe.jpg"]["reason"]
    assert "linked-folder" in logged
    assert "Permission denied" in logged["secret.jpg"]["reason"]
    assert (inbox / "link.jpg").is_symlink()
    assert (inbox / "pipe.jpg").exists()
    secret.chmod(0o600)
    assert secret.exists() and digest(secret) == digest(cat)

    # Outside the folder: not a byte, not a timestamp changed.
    assert precious.stat().st_mtime_ns == precious_stat.st_mtime_ns
    assert digest(precious) == digest(cat)
    assert sorted(p.name for p in outside.iterdir()) == ["precious.jpg"]

    # Nothing lost: every judged file's bytes are somewhere under the inbox.
    after = collections.Counter(
        digest(p)
        for p in inbox.rglob("*")
        if p.is_file()
        and not p.is_symlink()
        and ".sqlite3" not in p.name
        and p.name not in ("secret.jpg", "notes.txt")
    )
    for sha, count in before.items():
        assert after[sha] >= count
    quarantined = inbox / ".facesieve" / "quarantine" / "notes.txt"
    assert quarantined.read_text().startswith("not an image extension")

    ledger = sqlite3.connect(inbox / ".facesieve" / "ledger.sqlite3")
    rows = dict(ledger.execute("SELECT path, verdict FROM decisions WHERE state = 'done'"))
    assert {Path(p).name for p in rows} == set(by_name)
