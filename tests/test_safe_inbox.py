"""Safe against its own inbox: each attack of issue 9, as an uploader would make it.

Every attack runs with the quarantine on the inbox's filesystem and on another one
(/dev/shm), against `scan` and `watch` in-process (hooks strike at the exact moment
of acting; a stand-in model, since the attacks are about files, not faces), and
each class once more through the real CLI with the real models. `Layout.check`
(tests/safe_attacks.py) states the rules every run must keep.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from facesieve.config import Config
from facesieve.intake import inbox
from facesieve.intake.safefs import Identity
from facesieve.ledger.store import Ledger

from .cli_util import run_cli
from .conftest import DATA, labelled
from .safe_attacks import (
    GREEN,
    RED,
    UPLOADER,
    Layout,
    at_the_link,
    before_acting,
    done_for,
    garbage_like,
    other_fs_available,
    patched,
    run_scan,
    run_watch,
    sha,
    swap_for_symlink,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="uploads are made as another uid")


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.fixture(params=["same-fs", "xfs"])
def layout(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Layout]:
    xfs = request.param == "xfs"
    if xfs and not other_fs_available(tmp_path):
        pytest.skip("no second filesystem at /dev/shm for the quarantine")
    made = Layout(tmp_path, xfs=xfs)
    yield made
    made.cleanup()


def run(mode: str, layout: Layout, config: Config, upload: Any, struck: list[Any]) -> int:
    """Plant (scan) or upload while running (watch), until the strike and its aftermath."""
    if mode == "scan":
        upload()
        return run_scan(layout, config)
    started: list[float] = []

    def until() -> bool:
        if struck and not started:
            started.append(time.monotonic())
        return bool(started) and time.monotonic() - started[0] > 1.5

    return run_watch(layout, config, upload, until=until)


# -- 1. acts outside the folder -------------------------------------------------------


@pytest.mark.parametrize("mode", ["scan", "watch"])
@pytest.mark.parametrize("reject", ["quarantine", "delete"])
def test_a_folder_swapped_for_a_symlink_at_the_moment_of_acting(
    layout: Layout, mode: str, reject: str
) -> None:
    def swap(path: Path) -> None:
        (layout.inbox / "sub").rename(layout.inbox / "sub-moved")
        (layout.inbox / "sub").symlink_to(layout.outside, target_is_directory=True)
        layout.uploads["sub-moved/x.bmp"] = layout.uploads.pop("sub/x.bmp")

    config = layout.config(actions={"reject": reject})
    (layout.inbox / "sub").mkdir()  # before watch starts: new folders are issue 10's business
    os.chown(layout.inbox / "sub", UPLOADER, UPLOADER)
    with before_acting(swap) as struck:
        # Same size (RED and GREEN are) and the victim's mtime: only the inode differs.
        victim = layout.outside / "x.bmp"
        code = run(
            mode, layout, config, lambda: layout.upload("sub/x.bmp", RED, like=victim), struck
        )
    assert code == 0
    assert struck, "the strike never happened"
    assert layout.check(deleted_ok=reject == "delete") == []
    assert (layout.outside / "x.bmp").read_bytes() == GREEN


def test_a_folder_swapped_after_its_parent_was_listed_is_never_entered(layout: Layout) -> None:
    layout.upload("sub/x.bmp", RED)
    real = inbox.scan_folder
    listed: list[int] = []

    def list_then_swap(fd: int) -> Iterator[os.DirEntry[str]]:
        yield from real(fd)
        if not listed:
            listed.append(fd)
            (layout.inbox / "sub").rename(layout.inbox / "sub-moved")
            (layout.inbox / "sub").symlink_to(layout.outside, target_is_directory=True)
            layout.uploads["sub-moved/x.bmp"] = layout.uploads.pop("sub/x.bmp")

    with patched(inbox, "scan_folder", list_then_swap):
        assert run_scan(layout, layout.config()) == 0
    assert listed
    assert layout.check() == []  # the outside folder's atime: not even listed


@pytest.mark.parametrize("planted", ["state-symlink", "state-of-uploader", "quarantine-symlink"])
@pytest.mark.parametrize("mode", ["scan", "watch"])
def test_a_planted_state_folder_is_refused(tmp_path: Path, planted: str, mode: str) -> None:
    made = Layout(tmp_path)
    state = made.inbox / ".facesieve"
    if planted == "state-symlink":
        state.symlink_to(made.outside, target_is_directory=True)
    elif planted == "state-of-uploader":
        state.mkdir()
        os.chown(state, UPLOADER, UPLOADER)
    else:
        state.mkdir(mode=0o750)
        (state / "quarantine").symlink_to(made.outside, target_is_directory=True)
    made.upload("x.bmp", RED)
    if mode == "scan":
        code = run_scan(made, made.config())
    else:
        code = run_watch(made, made.config(), lambda: None, until=lambda: True)
    assert code == 3  # unsafe folder: a person must look
    assert made.check() == []
    assert (made.inbox / "x.bmp").read_bytes() == RED


def test_restore_never_follows_a_symlinked_folder_on_the_original_path(
    layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    from facesieve.cli.main import main

    layout.upload("sub/x.bmp", RED)
    config = layout.config()
    assert run_scan(layout, config) == 0
    assert not (layout.inbox / "sub" / "x.bmp").exists()
    # The uploader swaps the now empty folder for a way out.
    (layout.inbox / "sub").rmdir()
    (layout.inbox / "sub").symlink_to(layout.outside, target_is_directory=True)
    config_path = layout.base / "restore.toml"
    config_path.write_text(
        f'[folders]\ninbox = "{layout.inbox}"\n'
        + (f'quarantine = "{layout.quarantine}"\n' if layout.xfs else "")
    )
    code = main(["restore", "--config", str(config_path), "--all", "--json"])
    assert code == 1
    assert '"result": "error"' in capsys.readouterr().out
    assert layout.check() == []
    assert (layout.quarantine / "sub" / "x.bmp").read_bytes() == RED


# -- 2. reads what the uploader may not, and hands it over -----------------------------


@pytest.mark.parametrize("mode", ["scan", "watch"])
@pytest.mark.parametrize("when", ["before-acting", "at-the-link"])
def test_a_file_swapped_for_a_symlink_to_a_secret(layout: Layout, mode: str, when: str) -> None:
    secret = layout.outside / "secret"

    def swap(*_: object) -> None:
        # A symlink whose lstat shows the garbage's size and mtime.
        swap_for_symlink(layout.inbox / "x.jpg", secret)
        layout.uploads.pop("x.jpg")  # the uploader removed its own garbage

    garbage = garbage_like(secret)
    hook = before_acting(swap) if when == "before-acting" else at_the_link(swap)
    with hook as struck:
        code = run(mode, layout, layout.config(), lambda: layout.upload("x.jpg", garbage), struck)
    assert code == 0 and struck
    assert layout.check() == []
    assert (layout.inbox / "x.jpg").is_symlink()  # never followed, never moved


# -- 3. makes a root setuid binary -------------------------------------------------------


@pytest.mark.parametrize("mode", ["scan", "watch"])
def test_a_setuid_upload_is_never_copied_with_its_bits(layout: Layout, mode: str) -> None:
    binary = Path("/usr/bin/id").read_bytes()
    with before_acting(lambda path: None) as struck:
        code = run(
            mode, layout, layout.config(), lambda: layout.upload("id.jpg", binary, 0o4755), struck
        )
    assert code == 0 and struck
    assert layout.check() == []
    (landed,) = [p for p in layout.places() if p.read_bytes() == binary]
    info = landed.stat()
    assert layout.quarantine in landed.parents
    if layout.xfs:
        assert info.st_mode & 0o7777 == 0o640 and info.st_uid == 0  # 0755 & 0640, no setuid
    else:
        assert info.st_uid == UPLOADER  # the uploader's own inode, linked: nothing written


# -- 4. judges files still being written -------------------------------------------------


def _slow_writer(
    path: Path, data: bytes, pieces: int, pause: float, reopen: bool
) -> threading.Thread:
    """An uploader writing in pieces: one open file, or open-append-close each time."""
    step = len(data) // pieces + 1

    def write() -> None:
        if reopen:
            for start in range(0, len(data), step):
                with path.open("ab") as handle:
                    handle.write(data[start : start + step])
                os.chown(path, UPLOADER, UPLOADER)
                time.sleep(pause)
            return
        with path.open("wb") as handle:
            for start in range(0, len(data), step):
                handle.write(data[start : start + step])
                handle.flush()
                time.sleep(pause)

    return threading.Thread(target=write)


@pytest.mark.parametrize("reopen", [False, True])
def test_scan_waits_for_a_writer_to_finish(layout: Layout, reopen: bool) -> None:
    path = layout.inbox / "w.bmp"
    layout.uploads["w.bmp"] = RED
    writer = _slow_writer(path, RED, pieces=4, pause=0.5, reopen=reopen)
    writer.start()
    time.sleep(0.1)
    config = layout.config(watch={"settle_seconds": 1.0}, images={"unreadable_grace_seconds": 3})
    try:
        assert run_scan(layout, config) == 0
    finally:
        writer.join()
    assert layout.check() == []
    rows = [r for r in layout.ledger_rows() if Path(r["path"]).name == "w.bmp"]
    assert [(r["state"], r["verdict"], r["sha256"]) for r in rows] == [("done", "reject", sha(RED))]


@pytest.mark.parametrize("reopen", [False, True])
def test_watch_never_acts_on_pieces_of_an_upload(layout: Layout, reopen: bool) -> None:
    """Open-append-close three times 1.5 s apart; or one open file with long pauses."""
    path = layout.inbox / "w.bmp"
    layout.uploads["w.bmp"] = RED
    writer = _slow_writer(path, RED, pieces=3, pause=1.5, reopen=reopen)
    config = layout.config(watch={"settle_seconds": 1.0}, images={"unreadable_grace_seconds": 4})
    code = run_watch(layout, config, writer.start, until=lambda: done_for(layout, "w.bmp"))
    writer.join()
    assert code == 0
    assert layout.check() == []
    rows = [r for r in layout.ledger_rows() if Path(r["path"]).name == "w.bmp"]
    assert [(r["state"], r["sha256"]) for r in rows if r["state"] == "done"] == [("done", sha(RED))]


@pytest.mark.parametrize("mode", ["scan", "watch"])
# The copy happens only across filesystems: on one, a move is a link, never a copy.
@pytest.mark.parametrize("layout", ["xfs"], indirect=True)
def test_a_write_during_the_copy_leaves_the_source_and_removes_the_copy(
    layout: Layout, mode: str
) -> None:
    """The writer appends after facesieve copied the bytes: the source must stay."""
    assert layout.xfs
    final = RED + b"appended after the copy"
    calls: list[int] = []

    def append() -> None:
        calls.append(1)
        if len(calls) == 2:  # the copy's own link, after its bytes were written
            with (layout.inbox / "x.bmp").open("ab") as handle:
                handle.write(b"appended after the copy")
            layout.uploads["x.bmp"] = final

    with at_the_link(append, times=2) as struck:
        code = run(mode, layout, layout.config(), lambda: layout.upload("x.bmp", RED), struck)
    assert code == 0 and len(calls) == 2
    if mode == "scan":
        # Judged again after settling, whole.
        assert run_scan(layout, layout.config()) == 0
    assert layout.check() == []
    assert [r["sha256"] for r in layout.ledger_rows() if r["state"] == "done"] == [sha(final)]


# -- 5. acts on content it never judged --------------------------------------------------


def _rewrite_keeping_mtime(path: Path, data: bytes) -> None:
    info = path.stat()
    with path.open("r+b") as handle:
        handle.write(data)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


@pytest.mark.parametrize("mode", ["scan", "watch"])
@pytest.mark.parametrize(
    ("when", "reject"),
    # No ("at-the-link", "delete"): a delete links nothing, so there is no link to strike at.
    [("before-acting", "quarantine"), ("before-acting", "delete"), ("at-the-link", "quarantine")],
    ids=["before-acting-quarantine", "before-acting-delete", "at-the-link-quarantine"],
)
def test_bytes_replaced_after_the_read_are_never_acted_on(
    layout: Layout, mode: str, reject: str, when: str
) -> None:
    def replace(*_: object) -> None:
        _rewrite_keeping_mtime(layout.inbox / "x.bmp", GREEN)
        layout.replaced("x.bmp", GREEN)

    hook = before_acting(replace) if when == "before-acting" else at_the_link(replace)
    config = layout.config(actions={"reject": reject})
    with hook as struck:
        code = run(mode, layout, config, lambda: layout.upload("x.bmp", RED), struck)
    assert code == 0 and struck
    if mode == "scan":
        assert run_scan(layout, config) == 0  # the next pass judges what is there now
    assert layout.check() == []
    assert (layout.inbox / "x.bmp").read_bytes() == GREEN  # never judged red: kept
    assert sha(RED) not in {r["sha256"] for r in layout.ledger_rows() if r["state"] == "done"}


@pytest.mark.parametrize("how", ["in-place", "renamed-over"])
def test_a_kept_file_replaced_with_equal_size_and_mtime_is_judged_again(
    layout: Layout, how: str
) -> None:
    path = layout.upload("x.bmp", GREEN)
    config = layout.config()
    assert run_scan(layout, config) == 0
    assert path.read_bytes() == GREEN
    if how == "in-place":
        _rewrite_keeping_mtime(path, RED)
    else:
        info = path.stat()
        swap = layout.inbox / "swap.tmp"
        swap.write_bytes(RED)
        os.utime(swap, ns=(info.st_atime_ns, info.st_mtime_ns))
        swap.rename(path)
    layout.uploads["x.bmp"] = RED
    assert run_scan(layout, config) == 0
    assert not path.exists()  # judged again: no face, quarantined
    assert layout.check() == []
    rows = [r for r in layout.ledger_rows() if r["state"] == "done"]
    assert [(r["verdict"], r["sha256"]) for r in rows] == [
        ("keep", sha(GREEN)),
        ("reject", sha(RED)),
    ]


# -- 6. pending rows, recovery, one writer ---------------------------------------------


def _killed_between_link_and_unlink(layout: Layout, name: str = "x.bmp") -> Path:
    """The state a kill -9 leaves between the link (or copy) into quarantine and the unlink."""
    source = layout.upload(name, RED)
    layout.quarantine.mkdir(parents=True, exist_ok=True)
    landed = layout.quarantine / name
    if layout.xfs:
        shutil.copyfile(source, landed)
        landed.chmod(0o640)  # as facesieve's copy is
    else:
        os.link(source, landed)
    with Ledger(layout.inbox / ".facesieve" / "ledger.sqlite3") as ledger:
        ledger.begin(
            path=source,
            root=layout.inbox,
            size=len(RED),
            mtime_ns=source.stat().st_mtime_ns,
            mode=source.stat().st_mode,
            sha256=sha(RED),
            faces=[],
            verdict="reject",
            reason="no face found",
            action="quarantine",
            destination=landed,
            models={"detector": "colour", "gender": "none"},
            elapsed_ms=1.0,
            identity=Identity.of(source.stat()),
        )
    return landed


@pytest.mark.parametrize("mode", ["scan", "watch"])
def test_a_move_killed_between_link_and_unlink_is_settled_before_judging(
    layout: Layout, mode: str
) -> None:
    _killed_between_link_and_unlink(layout)
    if mode == "scan":
        code = run_scan(layout, layout.config())
    else:
        code = run_watch(layout, layout.config(), lambda: None, until=lambda: True)
    assert code == 0
    assert layout.check() == []
    assert sorted(p.name for p in layout.quarantine.iterdir()) == ["x.bmp"]  # no x~1.bmp
    assert [r["state"] for r in layout.ledger_rows()] == ["done"]


def test_recovery_never_removes_a_file_restored_since(layout: Layout) -> None:
    """A pending row left by an old scan, the file then decided again and restored."""
    landed = _killed_between_link_and_unlink(layout)
    source = layout.inbox / "x.bmp"
    with Ledger(layout.inbox / ".facesieve" / "ledger.sqlite3") as ledger:
        second = layout.quarantine / "x~1.bmp"
        if layout.xfs:
            shutil.copyfile(source, second)
            second.chmod(0o640)
        else:
            os.link(source, second)
        source.unlink()
        row = ledger.begin(
            path=source,
            root=layout.inbox,
            size=len(RED),
            mtime_ns=0,
            mode=0o100644,
            sha256=sha(RED),
            faces=[],
            verdict="reject",
            reason="no face found",
            action="quarantine",
            destination=second,
            models={"detector": "colour", "gender": "none"},
            elapsed_ms=1.0,
        )
        ledger.complete(row, second)
        decision = ledger.get(row)
        assert decision is not None
        restore = ledger.begin_restore(decision)
        shutil.move(second, source)
        ledger.complete(restore, source, Identity.of(source.stat()))
    assert run_watch(layout, layout.config(), lambda: None, until=lambda: True) == 0
    assert source.read_bytes() == RED  # the restored file stays
    assert landed.exists()  # the stale link is left for a person, not "completed"
    states = [(r["action"], r["state"]) for r in layout.ledger_rows()]
    assert states == [("quarantine", "failed"), ("quarantine", "done"), ("restore", "done")]


@pytest.mark.parametrize("mode", ["scan", "watch"])
def test_one_writer_per_ledger(
    tmp_path: Path, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    made = Layout(tmp_path)
    made.upload("x.bmp", RED)
    with Ledger(made.inbox / ".facesieve" / "ledger.sqlite3", exclusive=True):
        if mode == "scan":
            code = run_scan(made, made.config())
            assert "in use by another scan or watch" in capsys.readouterr().err
        else:
            code = run_watch(made, made.config(), lambda: None, until=lambda: True)
    assert code == 5
    assert (made.inbox / "x.bmp").read_bytes() == RED
    assert made.ledger_rows() == []


# -- the real CLI, the real models ------------------------------------------------------


@pytest.mark.models
@pytest.mark.data
@pytest.mark.slow
def test_real_cli_against_planted_uploads(tmp_path: Path, deepface_home: Path) -> None:
    """One real scan, as root without CAP_DAC_*, quarantine on another filesystem:
    a setuid upload, a symlink to a secret, a symlinked folder, a slow writer, and
    a kept photo later replaced by a no-face photo of the same size and mtime."""
    if not other_fs_available(tmp_path):
        pytest.skip("no second filesystem at /dev/shm for the quarantine")
    face = DATA / "fairface" / labelled("fairface")[0]["file"]
    cat = DATA / "noface" / labelled("noface")[0]["file"]
    layout = Layout(tmp_path, xfs=True)
    try:
        # Trailing bytes after a JPEG's end are ignored: both photos can have one size.
        photo = face.read_bytes() + b"\0" * max(
            0, len(cat.read_bytes()) + 100 - face.stat().st_size
        )
        layout.upload("photo.jpg", photo)
        layout.upload("id.jpg", Path("/usr/bin/id").read_bytes(), 0o4755)
        (layout.inbox / "secret.jpg").symlink_to(layout.outside / "secret")
        (layout.inbox / "away").symlink_to(layout.outside, target_is_directory=True)
        slow = layout.inbox / "slow.jpg"
        layout.uploads["slow.jpg"] = cat.read_bytes()
        writer = _slow_writer(slow, cat.read_bytes(), pieces=4, pause=0.6, reopen=False)
        config = tmp_path / "c.toml"
        config.write_text(
            f'[folders]\nquarantine = "{layout.quarantine}"\n'
            "[watch]\nsettle_seconds = 1.5\n[images]\nunreadable_grace_seconds = 3\n"
        )
        writer.start()
        first = run_cli(
            "scan", str(layout.inbox), "--config", str(config), "--json", drop_read_override=True
        )
        writer.join()
        assert first.code == 0, first.stderr[-2000:]
        verdicts = {Path(r["path"]).name: r["verdict"] for r in first.records}
        assert verdicts == {"photo.jpg": "keep", "id.jpg": "not_image", "slow.jpg": "reject"}

        # The kept photo's bytes swapped for a cat padded to the same size, mtime put back.
        padded = cat.read_bytes()
        assert len(padded) <= len(photo)
        _rewrite_keeping_mtime(
            layout.inbox / "photo.jpg", padded + b"\0" * (len(photo) - len(padded))
        )
        layout.uploads["photo.jpg"] = (layout.inbox / "photo.jpg").read_bytes()
        second = run_cli(
            "scan", str(layout.inbox), "--config", str(config), "--json", drop_read_override=True
        )
        assert second.code == 0, second.stderr[-2000:]
        assert {Path(r["path"]).name: r["verdict"] for r in second.records} == {
            "photo.jpg": "reject"
        }
        assert layout.check() == []

        # A second writer on the same ledger is refused.
        with Ledger(layout.inbox / ".facesieve" / "ledger.sqlite3", exclusive=True):
            busy = run_cli("scan", str(layout.inbox), "--config", str(config))
        assert busy.code == 5 and "in use by another scan or watch" in busy.stderr
    finally:
        layout.cleanup()
