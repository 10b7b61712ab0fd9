"""One reader for every file facesieve opens on an uploader's behalf (issue 16).

Held descriptors, no symlink followed, no name opened twice, errors told apart by
their class: the judge's `_hold`, the hash of a too-large file, the report's
thumbnails, the review page's images and the files commands write.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
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


# -- a too-large file is hashed from the descriptor it was held by -----------------------


def _swap_after_hold(monkeypatch: pytest.MonkeyPatch, path: Path, plant: Any) -> None:
    """Once the judge holds `path`, the uploader renames something else over its name."""

    class SwappedAfterHold(safefs.HeldFile):
        def read(self, max_bytes: int) -> bytes:
            planted = path.with_name(".planted")
            plant(planted)
            os.rename(planted, path)
            return super().read(max_bytes)

    monkeypatch.setattr(judge_module, "HeldFile", SwappedAfterHold)


def _read_within(path: Path, images: Any, seconds: float) -> Any:
    """`read` on a thread; None if it did not return within `seconds`."""
    import threading

    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(read(path, images)), daemon=True)
    worker.start()
    worker.join(seconds)
    return results[0] if results else None


def test_a_too_large_file_is_hashed_from_its_descriptor_not_a_symlink_swapped_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    secret = tmp_path / "secret"
    secret.write_bytes(b"root's secret " * 100)
    upload = tmp_path / "inbox" / "big.jpg"
    upload.parent.mkdir()
    content = b"\xff\xd8" + b"x" * 5000
    upload.write_bytes(content)
    _swap_after_hold(monkeypatch, upload, lambda planted: planted.symlink_to(secret))
    images = Config().images.model_copy(update={"max_file_bytes": 1000})
    result = read(upload, images)
    assert not isinstance(result, NotJudged), result
    assert result.sha256 == hashlib.sha256(content).hexdigest()  # the bytes judged
    assert result.sha256 != hashlib.sha256(secret.read_bytes()).hexdigest()
    assert result.unreadable_reason.startswith("too large")


def test_a_fifo_swapped_in_after_the_hold_does_not_block_the_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    upload = tmp_path / "big.jpg"
    content = b"\xff\xd8" + b"y" * 5000
    upload.write_bytes(content)
    _swap_after_hold(monkeypatch, upload, os.mkfifo)
    images = Config().images.model_copy(update={"max_file_bytes": 1000})
    try:
        result = _read_within(upload, images, 20.0)
    finally:
        # Whatever opened the FIFO for reading (a hash by name) gets its EOF.
        with contextlib.suppress(OSError):
            os.close(os.open(upload, os.O_WRONLY | os.O_NONBLOCK))
    assert result is not None, "the judge blocked on a FIFO swapped in after the hold"
    assert not isinstance(result, NotJudged), result
    assert result.sha256 == hashlib.sha256(content).hexdigest()


def test_a_too_large_file_changed_while_hashed_is_deferred(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from facesieve.judging import images as images_module

    upload = tmp_path / "big.jpg"
    upload.write_bytes(b"\xff\xd8" + b"z" * 5000)
    real_hash = images_module.descriptor_sha256

    def hash_while_written(fd: int) -> str:
        with upload.open("ab") as more:
            more.write(b"more bytes")
        return real_hash(fd)

    monkeypatch.setattr(judge_module, "descriptor_sha256", hash_while_written)
    images = Config().images.model_copy(update={"max_file_bytes": 1000})
    assert read(upload, images) == NotJudged(
        upload, Status.DEFERRED, "changed while it was read: being written"
    )


# -- pictures shown to people: held descriptors and the decode budget --------------------

# A scan bomb under the scan-count limit set below: it decodes in-process in ~10 s
# (minutes at 9000 px), so only the budget's 1 s can answer for it in time.
_BUDGET = {"images": {"decode_timeout": 1.0, "max_jpeg_scans": 100_000}}


def _budget_config(tmp_path: Path) -> Path:
    config = tmp_path / "facesieve.toml"
    config.write_text("[images]\ndecode_timeout = 1.0\nmax_jpeg_scans = 100000\n")
    return config


def _plant_linked_folder(destination: Path, outside: Path, picture: Path) -> None:
    """The uploader's trick on a quarantine: the file's folder becomes a symlink to
    a folder of theirs, where a file of the same name is another picture."""
    import shutil

    outside.mkdir()
    shutil.copyfile(picture, outside / destination.name)
    destination.parent.rename(destination.parent.with_name(destination.parent.name + ".moved"))
    destination.parent.symlink_to(outside)


def _article(html: str, row_id: int) -> str:
    import re

    found = re.search(rf'<article class="item" id="d{row_id}".*?</article>', html, re.S)
    assert found is not None, f"no item for ledger #{row_id}"
    return found.group(0)


@dataclass
class Shown:
    folders: Any
    fine: int  # a real photo
    bomb: int  # a scan bomb under the scan-count limit, over the time budget
    linked: int  # its folder swapped for a symlink to the uploader's folder


def _shown(tmp_path: Path, verdict: str) -> Shown:
    from .conftest import DATA
    from .images_util import scan_bomb
    from .test_restore import judged, setup

    folders, ledger = setup(tmp_path)
    cat = (DATA / "noface" / "cat.4003.jpg").read_bytes()
    with ledger:
        fine = judged(ledger, folders, "pets/fine.jpg", verdict, content=cat)
        bomb = judged(ledger, folders, "pets/bomb.jpg", verdict, content=scan_bomb(2000, 1000))
        linked = judged(ledger, folders, "other/cat.jpg", verdict, content=cat)
    assert linked.destination is not None
    _plant_linked_folder(
        Path(linked.destination), tmp_path / "theirs", DATA / "noface" / "cat.4004.jpg"
    )
    return Shown(folders, fine.id, bomb.id, linked.id)


@pytest.fixture(scope="module")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Shown, str]:
    """`facesieve report` (a process: an unbudgeted decode would hang it, not the tests)."""
    from .cli_util import run_cli

    tmp_path = tmp_path_factory.mktemp("shown")
    shown = _shown(tmp_path, "reject")
    page = tmp_path / "report.html"
    report = run_cli(
        "report",
        str(shown.folders.root),
        "--config",
        str(_budget_config(tmp_path)),
        "--html",
        str(page),
        timeout=120,
    )
    assert report.code == 0, report.stderr[-3000:]
    return shown, page.read_text(encoding="utf-8")


@pytest.mark.data
def test_the_report_decodes_quarantined_files_within_the_budget(
    report_page: tuple[Shown, str],
) -> None:
    shown, html = report_page
    assert "<img" in _article(html, shown.fine)  # a readable picture is still shown
    assert "no picture: not a readable image" in _article(html, shown.bomb)


@pytest.mark.data
def test_the_report_follows_no_symlink_planted_in_the_quarantine(
    report_page: tuple[Shown, str],
) -> None:
    shown, html = report_page
    assert "<img" not in _article(html, shown.linked)
    assert "no picture" in _article(html, shown.linked)


@pytest.fixture
def review_image(tmp_path: Path) -> tuple[Shown, Any]:
    from facesieve.people.page import TOKEN_HEADER, create_app

    shown = _shown(tmp_path, "review")
    token = "t" * 40
    client = create_app(Config(**_BUDGET), shown.folders, token, "tester").test_client()  # type: ignore[arg-type]
    return shown, lambda row_id: client.get(f"/image/{row_id}", headers={TOKEN_HEADER: token})


@pytest.mark.data
def test_the_review_page_decodes_images_within_the_budget(
    review_image: tuple[Shown, Any],
) -> None:
    shown, image = review_image
    fine = image(shown.fine)
    assert fine.status_code == 200
    assert fine.mimetype == "image/jpeg"
    refused = image(shown.bomb)
    assert refused.status_code == 404
    assert "decode time budget" in refused.get_json()["error"]


@pytest.mark.data
def test_the_review_page_follows_no_symlink_planted_in_the_review_folder(
    review_image: tuple[Shown, Any],
) -> None:
    shown, image = review_image
    followed = image(shown.linked)
    assert followed.status_code == 404
    assert "symlink" in followed.get_json()["error"]


# -- files a person names: never written through a planted symlink -----------------------


def _planted(tmp_path: Path) -> tuple[Path, Path]:
    """A root-only file outside, and FILE in a folder others write, linked to it."""
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root:$6$secret\n")
    secret.chmod(0o600)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    name = shared / "report.html"
    name.symlink_to(secret)
    return secret, name


def _untouched(secret: Path) -> None:
    assert secret.read_bytes() == b"root:$6$secret\n"
    assert secret.stat().st_mode & 0o777 == 0o600


def test_an_output_replaces_a_planted_symlink_and_leaves_its_target_alone(tmp_path: Path) -> None:
    from facesieve.outputs import write_output

    secret, name = _planted(tmp_path)
    write_output(name, "<p>the page</p>")
    _untouched(secret)
    assert not name.is_symlink()
    assert name.read_text() == "<p>the page</p>"
    assert name.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in name.parent.iterdir()) == ["report.html"]  # no temporary


def test_an_output_is_not_written_through_a_symlinked_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The temporary is created O_EXCL | O_NOFOLLOW: a symlink planted at the very
    # name it picks (here: forced to the guess) is passed over, never written to.
    from facesieve import outputs

    secret, name = _planted(tmp_path)
    guessed = name.with_name(".report.html.000000000000")
    guessed.symlink_to(secret)
    tokens = iter(["000000000000", "111111111111"])
    monkeypatch.setattr(outputs.secrets, "token_hex", lambda n: next(tokens))
    outputs.write_output(name, b"bytes")
    _untouched(secret)
    assert name.read_bytes() == b"bytes"
    assert guessed.is_symlink()


def test_report_html_does_not_follow_a_planted_symlink(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from facesieve.cli.main import main

    from .test_restore import judged, setup

    folders, ledger = setup(tmp_path)
    with ledger:
        judged(ledger, folders, "pets/x.jpg")
    secret, name = _planted(tmp_path)
    try:
        assert main(["report", str(folders.root), "--html", str(name)]) == 0
    finally:
        import structlog

        structlog.reset_defaults()
    _untouched(secret)
    assert not name.is_symlink()
    assert "facesieve report" in name.read_text(encoding="utf-8")


def test_eval_plot_does_not_follow_a_planted_symlink(tmp_path: Path) -> None:
    from facesieve.evaluation.evaluate import plot

    secret, name = _planted(tmp_path)
    name = name.rename(name.with_name("curve.png"))
    curve = [{"threshold": 0.5, "coverage": 0.5, "accuracy": 0.9}]
    plot(curve, 0.5, name)
    _untouched(secret)
    assert name.read_bytes().startswith(b"\x89PNG")
