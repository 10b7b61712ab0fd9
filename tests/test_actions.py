"""Moves and deletes: relative paths kept, no overwrite, mode and mtime kept, across filesystems."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from facesieve.acting.moves import PARTIAL_SUFFIX, Action, free_destination, move_file, plan
from facesieve.config import ActionsConfig, Config
from facesieve.judging.policy import Verdict


def make(path: Path, content: bytes = b"image bytes", mode: int = 0o640) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(mode)
    os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    return path


def test_move_keeps_relative_path_mode_and_mtime(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    source = make(root / "a" / "b" / "photo.jpg")
    destination = free_destination(source, root, tmp_path / "quarantine")
    landed = move_file(source, destination)
    assert landed == tmp_path / "quarantine" / "a" / "b" / "photo.jpg"
    assert not source.exists()
    assert landed.read_bytes() == b"image bytes"
    assert landed.stat().st_mode & 0o777 == 0o640
    assert landed.stat().st_mtime_ns == 1_600_000_000_123_456_789


def test_move_never_overwrites(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    taken = make(tmp_path / "q" / "photo.jpg", b"already here")
    make(tmp_path / "q" / "photo~1.jpg", b"and here")
    source = make(root / "photo.jpg", b"new")
    landed = move_file(source, tmp_path / "q" / "photo.jpg")
    assert landed == tmp_path / "q" / "photo~2.jpg"
    assert taken.read_bytes() == b"already here"
    assert landed.read_bytes() == b"new"


def test_free_destination_skips_taken_names(tmp_path: Path) -> None:
    make(tmp_path / "q" / "x.png")
    source = make(tmp_path / "in" / "x.png")
    assert free_destination(source, tmp_path / "in", tmp_path / "q") == tmp_path / "q" / "x~1.png"


def test_move_across_filesystems(tmp_path: Path) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem (/dev/shm) to move across")
    target_root = other / f"facesieve-test-{os.getpid()}"
    try:
        source = make(tmp_path / "in" / "photo.jpg", b"x" * 3_000_000)
        landed = move_file(source, target_root / "photo.jpg")
        assert not source.exists()
        assert landed.read_bytes() == b"x" * 3_000_000
        assert landed.stat().st_mtime_ns == 1_600_000_000_123_456_789
        assert landed.stat().st_mode & 0o777 == 0o640
        assert not list(target_root.glob(f"*{PARTIAL_SUFFIX}"))
    finally:
        for path in sorted(target_root.rglob("*"), reverse=True):
            path.unlink()
        if target_root.exists():
            target_root.rmdir()


@pytest.mark.parametrize(
    ("verdict", "actions", "expected"),
    [
        (Verdict.KEEP, {}, Action.KEEP),
        (Verdict.REJECT, {}, Action.QUARANTINE),
        (Verdict.REJECT, {"reject": "delete"}, Action.DELETE),
        (Verdict.REVIEW, {}, Action.REVIEW),
        (Verdict.UNREADABLE, {}, Action.QUARANTINE),
        (Verdict.UNREADABLE, {"unreadable": "keep"}, Action.KEEP),
    ],
)
def test_plan(tmp_path: Path, verdict: Verdict, actions: dict[str, str], expected: Action) -> None:
    folders = Config().resolve_folders(tmp_path)
    action, _ = plan(verdict, ActionsConfig.model_validate(actions), folders)
    assert action is expected


def test_plan_moves_kept_files_when_an_accepted_folder_is_set(tmp_path: Path) -> None:
    config = Config.model_validate({"folders": {"accepted": str(tmp_path / "ok")}})
    action, folder = plan(Verdict.KEEP, config.actions, config.resolve_folders(tmp_path / "in"))
    assert (action, folder) == (Action.ACCEPT, tmp_path / "ok")
