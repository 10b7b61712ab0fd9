"""One reader for every file facesieve opens on an uploader's behalf (issue 16).

Held descriptors, no symlink followed, no name opened twice, errors told apart by
their class: the judge's `_hold`, the hash of a too-large file, the report's
thumbnails, the review page's images and the files commands write.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from facesieve import errors
from facesieve.config import Config
from facesieve.intake import safefs
from facesieve.judging import judge as judge_module
from facesieve.judging.judge import NotJudged, Status, read

# -- the judge's _hold: by error class, never by message --------------------------------


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [
        (errors.FileVanishedError("gone"), Status.SKIPPED, "vanished before it was judged"),
        (errors.SymlinkRefusedError("a link"), Status.SKIPPED, "symlink: never followed"),
        (errors.NotRegularFileError("a pipe"), Status.SKIPPED, "not a regular file"),
        # Wording that once switched the mapping: an I/O error that merely *mentions*
        # a symlink or a vanished file is still an I/O error, never a skip.
        (
            errors.ImageAccessError("vanished mount: cannot read the symlink's folder"),
            Status.ERROR,
            "vanished mount: cannot read the symlink's folder",
        ),
        (
            errors.ImageAccessError("cannot open: not a regular file system"),
            Status.ERROR,
            "cannot open: not a regular file system",
        ),
    ],
)
def test_a_file_not_held_is_mapped_by_its_error_class(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: errors.ImageAccessError,
    status: Status,
    reason: str,
) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"\xff\xd8 bytes")

    def refuse(*args: Any) -> None:
        os.close(args[1])  # the folder descriptor HeldFile would own
        raise error

    monkeypatch.setattr(judge_module, "HeldFile", refuse)
    assert read(photo, Config().images) == NotJudged(photo, status, reason)


def test_a_file_gone_between_its_stat_and_its_open_is_skipped_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real race, timed by a hook: the uploader deletes the file after HeldFile
    # looked at it and before it opened it. ENOENT from the open is "vanished".
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"\xff\xd8 bytes")
    real_open = os.open

    def open_after_delete(name: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if name == photo.name and flags == safefs.FILE_FLAGS and photo.exists():
            photo.unlink()
        return real_open(name, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_after_delete)
    assert read(photo, Config().images) == NotJudged(
        photo, Status.SKIPPED, "vanished before it was judged"
    )


@pytest.mark.parametrize(
    ("plant", "status", "reason"),
    [
        ("symlink", Status.SKIPPED, "symlink: never followed"),
        ("fifo", Status.SKIPPED, "not a regular file"),
        ("folder", Status.SKIPPED, "not a regular file"),
        ("nothing", Status.SKIPPED, "vanished before it was judged"),
        ("linked-folder", Status.SKIPPED, "a folder on its path is a symlink: never followed"),
    ],
)
def test_each_real_refusal_maps_as_before(
    tmp_path: Path, plant: str, status: Status, reason: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.jpg").write_bytes(b"\xff\xd8 secret")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path = inbox / "a.jpg"
    if plant == "symlink":
        path.symlink_to(outside / "a.jpg")
    elif plant == "fifo":
        os.mkfifo(path)
    elif plant == "folder":
        path.mkdir()
    elif plant == "linked-folder":
        (inbox / "sub").symlink_to(outside)
        path = inbox / "sub" / "a.jpg"
    assert read(path, Config().images) == NotJudged(path, status, reason)
