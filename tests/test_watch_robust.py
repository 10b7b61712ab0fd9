"""The daemon against what stops a guard or slips past it: hostile files, arrivals
without close events, a vanished inbox or ledger, and `watch --dry-run`."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import DATA, labelled
from .daemon_util import Daemon, write_config
from .images_util import scan_bomb
from .wait_util import cpu_seconds, decoder_children

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]


def photos(count: int) -> list[Path]:
    rows = labelled("utkface")
    return [DATA / "utkface" / r["file"] for r in rows[:count]]


def decided(daemon: Daemon) -> dict[str, dict[str, object]]:
    return {Path(str(e["path"])).name: e for e in daemon.events("decision")}


def wait_until(condition, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def ended(daemon: Daemon, timeout: float) -> int:
    """Wait for the daemon to exit by itself; its exit code (killed if it does not)."""
    assert daemon.process is not None
    try:
        daemon.process.wait(timeout)
    except subprocess.TimeoutExpired:
        daemon.kill()
        raise
    return daemon.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_scan_bomb_holds_nothing_and_sigterm_still_stops_it(
    tmp_path: Path, deepface_home: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    # The scan limit is lifted: the time budget alone must hold the bomb.
    config = write_config(
        tmp_path / "c.toml",
        inbox,
        images={"decode_timeout": 10.0, "max_jpeg_scans": 100_000},
        watch={"stop_timeout": 10.0},
    )
    bomb = scan_bomb(9000, 5000)
    daemon = Daemon(config, tmp_path / "log.jsonl").start()
    try:
        daemon.wait_for("ready")
        (inbox / "bomb.jpg").write_bytes(bomb)
        for n, photo in enumerate(photos(5)):
            shutil.copyfile(photo, inbox / f"photo{n}.jpg")
        assert wait_until(lambda: len(decided(daemon)) >= 6, 90), daemon.events()[-5:]
        by_name = decided(daemon)
        assert by_name["bomb.jpg"]["verdict"] == "unreadable"
        assert "decode time budget" in str(by_name["bomb.jpg"]["reason"])
        assert all(by_name[f"photo{n}.jpg"]["verdict"] != "unreadable" for n in range(5))
        # One more photo, so that a warm decoder child is idle: its CPU time from
        # now on is the next image's.
        shutil.copyfile(photos(6)[5], inbox / "photo5.jpg")
        assert wait_until(lambda: "photo5.jpg" in decided(daemon), 60), daemon.events()[-5:]
        assert daemon.process is not None
        (child,) = decoder_children(daemon.process.pid)
        idle = cpu_seconds(child)
        # Now a bomb mid-decode when SIGTERM comes: out within stop_timeout. SIGTERM
        # is sent once the child has spent CPU on the bomb: the decode had started.
        (inbox / "bomb2.jpg").write_bytes(bomb)
        decoding = wait_until(lambda: cpu_seconds(child) - idle >= 0.2, 8)
        daemon.signal(signal.SIGTERM)
        # Exit 0 is the promise: the worker ended within stop_timeout (it exits 1
        # with stop_timeout logged otherwise); the 60 s here only catch a hang.
        code = daemon.stop(timeout=60)
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.kill()
    assert decoding, "the decoder child spent no time on bomb2 before SIGTERM"
    assert code == 0
    assert not daemon.events("stop_timeout")
    # Stopped mid-decode: not judged (the 10 s budget did not run out), not moved.
    assert "bomb2.jpg" not in decided(daemon)
    assert (inbox / "bomb2.jpg").read_bytes() == bomb


def test_a_name_that_is_not_utf8_is_judged_and_the_guard_goes_on(
    tmp_path: Path, deepface_home: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    daemon = Daemon(write_config(tmp_path / "c.toml", inbox), tmp_path / "log.jsonl").start()
    bad = os.fsdecode(b"bad\xff.jpg")
    try:
        daemon.wait_for("ready")
        shutil.copyfile(DATA / "noface" / labelled("noface")[0]["file"], inbox / bad)
        shutil.copyfile(photos(1)[0], inbox / "after.jpg")
        daemon.wait_for("decision", 2, timeout=60)
    finally:
        code = daemon.stop()
    assert code == 0
    names = {e.get("path_bytes") is not None for e in daemon.events("decision")}
    assert names == {True, False}
    assert (inbox / ".facesieve" / "quarantine" / bad).is_file()
    assert not daemon.events("worker_failed")


def test_arrivals_without_close_events_are_judged_at_once(
    tmp_path: Path, deepface_home: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    outside = tmp_path / "outside"
    (outside / "album").mkdir(parents=True)
    sources = photos(60)
    for n, photo in enumerate(sources[:30]):
        shutil.copyfile(photo, outside / "album" / f"m{n:02d}.jpg")
    config = write_config(
        tmp_path / "c.toml", inbox, watch={"reconcile_interval": 3600.0, "settle_seconds": 1.0}
    )
    daemon = Daemon(config, tmp_path / "log.jsonl").start()
    try:
        daemon.wait_for("ready")
        daemon.wait_for("reconciled")
        os.rename(outside / "album", inbox / "album")  # a folder moved in
        (inbox / "fresh").mkdir()  # a folder created and filled at once
        for n, photo in enumerate(sources[30:50]):
            shutil.copyfile(photo, inbox / "fresh" / f"c{n:02d}.jpg")
        for n, photo in enumerate(sources[50:55]):
            os.link(photo, inbox / f"link{n}.jpg")  # created, never closed
        expected = 30 + 20 + 5
        assert wait_until(lambda: len(decided(daemon)) >= expected, 60), (
            len(decided(daemon)),
            daemon.events()[-5:],
        )
    finally:
        code = daemon.stop()
    assert code == 0
    assert len(daemon.events("reconciled")) == 1  # no pass was needed: events did it
    assert max(daemon.decisions_by_path().values()) == 1


def test_hidden_folders_are_judged_and_ignore_matches_own_names(
    tmp_path: Path, deepface_home: Path
) -> None:
    inbox = tmp_path / "inbox"
    (inbox / ".hidden").mkdir(parents=True)
    (inbox / "x.tmp").mkdir()
    photo = photos(1)[0]
    shutil.copyfile(photo, inbox / ".hidden" / "a.jpg")
    shutil.copyfile(photo, inbox / "x.tmp" / "b.jpg")
    shutil.copyfile(photo, inbox / "c.jpg.part")
    shutil.copyfile(photo, inbox / "no-extension")
    daemon = Daemon(write_config(tmp_path / "c.toml", inbox), tmp_path / "log.jsonl").start()
    try:
        daemon.wait_for("decision", 3, timeout=90)
        shutil.copyfile(photo, inbox / ".hidden" / "later.jpg")
        daemon.wait_for("decision", 4, timeout=60)
        # A last file as a barrier (was: sleep 1 s): once it is decided, whatever
        # arrived before it has been judged or ignored.
        shutil.copyfile(photo, inbox / "barrier.jpg")
        daemon.wait_for("decision", 5, timeout=60)
    finally:
        code = daemon.stop()
    assert code == 0
    assert set(decided(daemon)) == {"a.jpg", "b.jpg", "no-extension", "later.jpg", "barrier.jpg"}
    assert len(daemon.events("decision")) == 5


def test_a_missing_inbox_is_refused_unless_created_on_purpose(
    tmp_path: Path, deepface_home: Path
) -> None:
    inbox = tmp_path / "inbxo"
    daemon = Daemon(write_config(tmp_path / "c.toml", inbox), tmp_path / "log.jsonl").start()
    assert ended(daemon, 120) == 3
    assert not inbox.exists()
    assert daemon.events("no_inbox")
    config = write_config(tmp_path / "c2.toml", inbox, watch={"create_inbox": True})
    daemon = Daemon(config, tmp_path / "log2.jsonl").start()
    try:
        daemon.wait_for("ready")
    finally:
        assert daemon.stop() == 0
    assert inbox.is_dir()


@pytest.mark.parametrize("how", ["renamed", "deleted"])
def test_an_inbox_renamed_or_deleted_is_rearmed_when_a_folder_is_back(
    tmp_path: Path, deepface_home: Path, how: str
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = write_config(
        tmp_path / "c.toml", inbox, ledger={"path": str(tmp_path / "ledger.sqlite3")}
    )
    daemon = Daemon(config, tmp_path / "log.jsonl").start()
    try:
        daemon.wait_for("ready")
        if how == "renamed":
            os.rename(inbox, tmp_path / "elsewhere")
            inbox.mkdir()  # and a new, empty one in its place
        else:
            shutil.rmtree(inbox)
            daemon.wait_for("inbox_lost", timeout=30)
            inbox.mkdir()
        daemon.wait_for("inbox_rearmed", timeout=30)
        shutil.copyfile(photos(1)[0], inbox / "after.jpg")
        daemon.wait_for("decision", timeout=60)
    finally:
        code = daemon.stop()
    assert code == 0
    assert len(daemon.events("inbox_lost")) == 1
    assert set(decided(daemon)) == {"after.jpg"}
    assert decided(daemon)["after.jpg"]["path"] == str(inbox / "after.jpg")


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_ledger_that_disappears_stops_the_worker_with_exit_5(
    tmp_path: Path, deepface_home: Path, how: str
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    ledger = tmp_path / "state" / "ledger.sqlite3"
    config = write_config(tmp_path / "c.toml", inbox, ledger={"path": str(ledger)})
    daemon = Daemon(config, tmp_path / "log.jsonl").start()
    daemon.wait_for("ready")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{ledger}{suffix}").unlink(missing_ok=True)
    if how == "replaced":
        sqlite3.connect(ledger).close()
    shutil.copyfile(photos(1)[0], inbox / "after.jpg")
    assert ended(daemon, 30) == 5
    assert (inbox / "after.jpg").exists()


def test_watch_dry_run_judges_and_logs_but_records_and_moves_nothing(
    tmp_path: Path, deepface_home: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cat = DATA / "noface" / labelled("noface")[0]["file"]
    shutil.copyfile(cat, inbox / "cat.jpg")
    config = write_config(tmp_path / "c.toml", inbox)
    daemon = Daemon(config, tmp_path / "log.jsonl", args=("--dry-run",)).start()
    try:
        daemon.wait_for("decision", timeout=90)
        shutil.copyfile(cat, inbox / "cat2.jpg")
        daemon.wait_for("decision", 2, timeout=60)
    finally:
        code = daemon.stop()
    assert code == 0
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == ["cat.jpg", "cat2.jpg"]
    assert all(e["dry_run"] is True and e["verdict"] == "reject" for e in decided(daemon).values())
    ledger = inbox / ".facesieve" / "ledger.sqlite3"
    if ledger.exists():
        with sqlite3.connect(ledger) as db:
            assert db.execute("SELECT count(*) FROM decisions").fetchone()[0] == 0


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_folders_past_the_inotify_watch_limit_are_an_error_and_are_polled(
    tmp_path: Path, deepface_home: Path
) -> None:
    # The limit is lowered in a user namespace of the daemon's own, so no other
    # process on the machine is affected: /proc/sys/user/max_inotify_watches.
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "true"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"user namespaces unavailable: {probe.stderr.decode().strip()}")
    inbox = tmp_path / "inbox"
    for n in range(100):
        (inbox / f"folder{n:03d}").mkdir(parents=True)
    config = write_config(
        tmp_path / "c.toml",
        inbox,
        watch={"reconcile_interval": 3600.0, "poll_interval": 1.0, "settle_seconds": 1.0},
        metrics={"address": f"127.0.0.1:{free_port()}"},
    )
    limit = 'echo 40 > /proc/sys/user/max_inotify_watches && exec "$@"'
    wrapper = ("unshare", "--user", "--map-root-user", "sh", "-c", limit, "sh")
    daemon = Daemon(config, tmp_path / "log.jsonl", wrapper=wrapper).start()
    try:
        daemon.wait_for("ready")
        failed = daemon.wait_for("watch_failed", 50, timeout=30)
        unwatched = [Path(str(e["path"])) for e in failed]
        assert all(e["level"] == "error" for e in failed)
        address = daemon.wait_for("metrics_serving")[0]["address"]
        figures = urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode()
        gauge = re.search(r"^facesieve_unwatched_folders (\S+)$", figures, re.MULTILINE)
        assert gauge is not None and float(gauge.group(1)) >= 50
        shutil.copyfile(photos(1)[0], unwatched[-1] / "polled.jpg")
        assert wait_until(lambda: "polled.jpg" in decided(daemon), 60), daemon.events()[-5:]
    finally:
        code = daemon.stop()
    assert code == 0
    assert len(daemon.events("reconciled")) == 1  # found by polling, not by a pass
