"""One attack list, every engine: a rule that lives in one engine only is a hole in the others.

Each engine `scan` can choose runs the same attacks, with the real models on real photos:
in-process (`--workers 1`), a pool (`--workers 2`), the default engine on a folder of
64 files or more (the pool, chosen by size), and Ray. The attacks:

- a same-size swap: a no-face image renamed over a kept one, its mtime set back (size
  and mtime then match the ledger; only the inode and ctime tell);
- a young unreadable file: a truncated JPEG written just now, which must not be acted
  on while younger than `[images] unreadable_grace_seconds`;
- a symlinked folder inside the inbox, listed by name: never followed, its target
  never touched.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from datetime import datetime
from pathlib import Path

import pytest

from .conftest import DATA, labelled
from .test_engines import _records, _scan, ray_address  # noqa: F401 - the session's cluster

pytestmark = [pytest.mark.data, pytest.mark.models, pytest.mark.slow]

_FILES = 64  # the default engine starts a pool from this many files on
_GRACE = 15.0  # [images] unreadable_grace_seconds: longer than a Ray round trip
_ENGINES = [
    pytest.param(["--workers", "1"], id="local"),
    pytest.param(["--workers", "2"], id="pool"),
    pytest.param([], id="default"),
    pytest.param(["--engine", "ray"], id="ray", marks=pytest.mark.ray),
]


def _padded(source: Path, size: int) -> bytes:
    """`source`'s bytes with zeros after the image's end, to exactly `size` bytes."""
    data = source.read_bytes()
    assert len(data) <= size
    return data + b"\0" * (size - len(data))


def _inbox(root: Path) -> tuple[Path, bytes]:
    """`_FILES` photos of faces, and swap/target.jpg: a face padded to a no-face image's
    size; returns the target and that no-face image, padded the same."""
    labelled("fairface")
    labelled("noface")
    faces = sorted((DATA / "fairface").glob("*.jpg"))[:8]
    for n in range(_FILES):
        folder = root / f"f{n % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(faces[n % len(faces)], folder / f"img{n:03d}.jpg")
    face, cat = DATA / "fairface" / "fairface_0001.jpg", DATA / "noface" / "cat.4003.jpg"
    size = max(face.stat().st_size, cat.stat().st_size) + 64
    target = root / "swap" / "target.jpg"
    target.parent.mkdir()
    target.write_bytes(_padded(face, size))
    return target, _padded(cat, size)


def _listing(root: Path, extra: list[str]) -> Path:
    """Every file under `root` (a symlink never followed), and `extra`, one a line."""
    names = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".facesieve"]
        names += [os.path.relpath(os.path.join(folder, f), root) for f in files]
    listing = root.parent / "list.txt"
    listing.write_text("\n".join(sorted(names) + extra) + "\n")
    return listing


def _rows(state: Path) -> list[tuple[str, str, str, str]]:
    """(path, verdict, decided_at, state) of every row of every ledger under `state`."""
    rows = []
    for file in sorted(state.glob("ledger*.sqlite3")):
        with sqlite3.connect(file) as db:
            rows += db.execute("SELECT path, verdict, decided_at, state FROM decisions").fetchall()
    return rows


@pytest.mark.timeout(900)
@pytest.mark.parametrize("engine", _ENGINES)
def test_every_engine_honours_the_same_rules(
    tmp_path: Path, engine: list[str], request: pytest.FixtureRequest
) -> None:
    if "ray" in engine:
        engine = [*engine, "--address", request.getfixturevalue("ray_address")]
    inbox = tmp_path / "inbox"
    target, impostor = _inbox(inbox)
    config = tmp_path / "c.toml"
    config.write_text(
        f"[watch]\nsettle_seconds = 0\n[images]\nunreadable_grace_seconds = {_GRACE}\n"
    )
    common = ["--config", str(config), "--json"]
    first = _scan(str(inbox), *engine, *common)
    assert first.returncode == 0, first.stderr[-3000:]
    kept = {r["path"]: r["verdict"] for r in _records(first.stdout)}
    assert kept[str(target)] == "keep"
    assert len(kept) == _FILES + 1

    # (a) The same-size swap: a no-face image renamed over the kept one, mtime set back.
    before = target.stat()
    swap = target.with_name(".upload.tmp")
    swap.write_bytes(impostor)
    os.utime(swap, ns=(before.st_atime_ns, before.st_mtime_ns))
    swap.rename(target)
    now = target.stat()
    assert (now.st_size, now.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    # (b) A young unreadable file: the first bytes of a photo, written just now.
    fresh = inbox / "fresh" / "upload.jpg"
    fresh.parent.mkdir()
    fresh.write_bytes((DATA / "fairface" / "fairface_0002.jpg").read_bytes()[:3000])
    written = time.time()
    # (c) A symlinked folder in the inbox, its target outside, listed by name.
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy2(DATA / "noface" / "cat.4001.jpg", outside / "cat.jpg")
    (inbox / "linked").symlink_to(outside, target_is_directory=True)
    listing = _listing(inbox, ["linked/cat.jpg"])

    second = _scan(str(inbox), *engine, *common, "--from-list", str(listing))
    assert second.returncode == 0, second.stderr[-3000:]
    verdicts = {r["path"]: r["verdict"] for r in _records(second.stdout)}
    rows = _rows(inbox / ".facesieve")

    # (a) judged again, by its bytes: rejected, not kept.
    assert verdicts.get(str(target)) == "reject", (verdicts, second.stderr[-3000:])
    assert not target.exists()
    # (b) unreadable in the end, but acted on only once older than the grace.
    assert verdicts.get(str(fresh)) == "unreadable", verdicts
    decided = [
        datetime.fromisoformat(at).timestamp() for path, _, at, _ in rows if path == str(fresh)
    ]
    assert len(decided) == 1, rows
    assert decided[0] - written >= _GRACE - 0.5, f"acted on {decided[0] - written:.1f} s old"
    # (c) never followed: nothing judged there, the target outside untouched.
    assert (outside / "cat.jpg").read_bytes() == (DATA / "noface" / "cat.4001.jpg").read_bytes()
    assert not [path for path, *_ in rows if "/linked/" in path]
    assert str(inbox / "linked" / "cat.jpg") not in verdicts
    # Nothing else was judged again: every other file is known.
    assert set(verdicts) == {str(target), str(fresh)}


def test_the_attack_list_covers_every_engine() -> None:
    """A new engine joins the parametrization above, or this fails."""
    from facesieve.engines.base import JudgingEngine
    from facesieve.engines.local import Engine
    from facesieve.engines.pool import PoolEngine
    from facesieve.engines.ray import RayEngine

    assert set(JudgingEngine.__subclasses__()) == {Engine, PoolEngine, RayEngine}
    assert {p.id for p in _ENGINES} == {"local", "pool", "default", "ray"}
