"""Promises of docs/daemon.md, docs/engines.md and docs/review-desk.md that had no test.

Each test here fails if its promise breaks. The guard runs in-process with a stand-in
model where only plumbing is at stake (signals, reloads, the metrics port, reconciling);
a real kernel, real files and real sockets everywhere. What needs a process of its own
(an exit code of 130, a user namespace) runs as one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from structlog.testing import capture_logs

from facesieve.config import Config, load_config
from facesieve.daemon.guard import Guard
from facesieve.daemon.notify import Notifier
from facesieve.testing import NoFaces

from .conftest import DATA, PROJECT, labelled
from .daemon_util import Daemon, write_config
from .tools_util import require_tool

Events = list[dict[str, Any]]


# Set once the guard under test has returned: a wait for its events is over then.
_returned = threading.Event()


def wait_for(events: Events, name: str, count: int = 1, timeout: float = 60) -> Events:
    """The first `count` events called `name`, polled until `timeout` seconds pass or
    the guard returns."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in list(events) if e["event"] == name]
        if len(found) >= count:
            return found
        if _returned.is_set():
            raise AssertionError(f"the guard returned before {count} {name!r} events")
        time.sleep(0.02)
    raise AssertionError(f"no {count} {name!r} events in {timeout} s: {list(events)[-5:]}")


def guarded(
    guard: Guard,
    drive: Callable[[Events], None],
    from_start: Callable[[Events], None] | None = None,
) -> tuple[int, Events]:
    """`guard.run()` here (signals reach only the main thread), `drive(events)` beside it
    once the guard is ready (and `from_start(events)` from before it starts); SIGTERM
    once the driver is done. Returns the exit code and every event logged."""
    failures: list[BaseException] = []
    _returned.clear()

    def driver(events: Events) -> None:
        try:
            wait_for(events, "ready")
            drive(events)
        except BaseException as error:  # noqa: BLE001 - re-raised below, in the test's thread
            failures.append(error)
        finally:
            if not _returned.is_set():
                os.kill(os.getpid(), signal.SIGTERM)

    # A SIGTERM that comes after the guard put its handlers back must not end pytest.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        with capture_logs() as events:
            threads = [threading.Thread(target=driver, args=(events,), name="test-driver")]
            if from_start is not None:
                threads.append(
                    threading.Thread(target=from_start, args=(events,), name="test-early")
                )
            for thread in reversed(threads):
                thread.start()
            try:
                code = guard.run()
            finally:
                _returned.set()
                for thread in threads:
                    thread.join(30)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if failures:
        raise failures[0]
    return code, events


def arrive(inbox: Path, name: str, colour: tuple[int, int, int] = (200, 0, 0)) -> Path:
    """A complete image lands in the inbox (written beside it, then renamed in)."""
    staged = inbox.parent / f"staged-{name}"
    Image.new("RGB", (32, 32), colour).save(staged)
    staged.rename(inbox / name)
    return inbox / name


def decided(events: Events, path: Path) -> list[int]:
    """Where in `events` the decisions on `path` are."""
    return [i for i, e in enumerate(events) if e["event"] == "decision" and e["path"] == str(path)]


def index_of(events: Events, name: str) -> int:
    return next(i for i, e in enumerate(events) if e["event"] == name)


# -- SIGHUP with an invalid config: reload_failed, and the guard goes on judging -----------


def test_an_invalid_config_on_sighup_is_logged_and_the_guard_goes_on(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config_path = tmp_path / "facesieve.toml"
    valid = (
        f'[folders]\ninbox = "{inbox}"\n[policy]\nmin_face_size = 40\n'
        "[watch]\nsettle_seconds = 0\nstop_timeout = 20\n"
    )
    config_path.write_text(valid)
    guard = Guard(
        load_config(config_path),
        config_path=config_path,
        notifier=Notifier.from_environment({}),
        make_analyzer=lambda c: NoFaces(),
    )
    broken = {
        "not TOML": valid + "[policy\n",
        "not valid": valid.replace("min_face_size = 40", "min_face_size = -5"),
        "gone": None,
    }

    def drive(events: Events) -> None:
        for count, text in enumerate(broken.values(), start=1):
            if text is None:
                config_path.unlink()
            else:
                config_path.write_text(text)
            os.kill(os.getpid(), signal.SIGHUP)
            wait_for(events, "reload_failed", count)
        # Still guarding, under the policy it had.
        arrive(inbox, "after.png")
        wait_for(events, "decision", 1)

    code, events = guarded(guard, drive)

    assert code == 0
    failed = [e for e in events if e["event"] == "reload_failed"]
    assert [e["log_level"] for e in failed] == ["error"] * 3
    assert "is not valid TOML" in failed[0]["error"]
    assert "policy.min_face_size" in failed[1]["error"]
    assert "cannot read config file" in failed[2]["error"]
    assert not [e for e in events if e["event"] in ("reloaded", "reload_partial")]
    assert guard.config.policy.min_face_size == 40
    last_failure = max(i for i, e in enumerate(events) if e["event"] == "reload_failed")
    [after] = decided(events, inbox / "after.png")
    assert after > last_failure
    assert events[after]["verdict"] == "reject"
    assert not (inbox / "after.png").exists()  # acted on: quarantined, no face
    assert "stopped" in {e["event"] for e in events}


# -- the metrics port taken: metrics_unavailable, and the guard goes on judging ----------


def test_a_metrics_port_taken_is_logged_and_the_guard_goes_on(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        config = Config.model_validate(
            {
                "folders": {"inbox": str(inbox)},
                "watch": {"settle_seconds": 0, "stop_timeout": 20},
                "metrics": {"address": address},
            }
        )
        guard = Guard(
            config, notifier=Notifier.from_environment({}), make_analyzer=lambda c: NoFaces()
        )

        def drive(events: Events) -> None:
            wait_for(events, "metrics_unavailable")
            arrive(inbox, "after.png")
            wait_for(events, "decision")

        code, events = guarded(guard, drive)

    assert code == 0
    [unavailable] = [e for e in events if e["event"] == "metrics_unavailable"]
    assert unavailable["log_level"] == "error" and unavailable["address"] == address
    assert "metrics_serving" not in {e["event"] for e in events}
    assert index_of(events, "ready") < index_of(events, "metrics_unavailable")
    [after] = decided(events, inbox / "after.png")
    assert after > index_of(events, "metrics_unavailable")
    assert "stopped" in {e["event"] for e in events}


# -- a kernel inotify overflow triggers a reconciliation pass ----------------------------

MAX_QUEUED = Path("/proc/sys/fs/inotify/max_queued_events")
BURSTS = 5


def _overflow_config(inbox: Path) -> Config:
    return Config.model_validate(
        {
            "folders": {"inbox": str(inbox)},
            # A queue big enough that no "queue full" pass hides the overflow's.
            "watch": {
                "settle_seconds": 0,
                "stop_timeout": 20,
                "queue_size": 10_000,
                "reconcile_interval": 3600,
            },
        }
    )


def _reasons(events: Events) -> list[str]:
    return [e["reason"] for e in events if e["event"] == "reconcile_requested"]


def test_watchdogs_overflow_log_line_triggers_a_reconciliation_pass(tmp_path: Path) -> None:
    """The line watchdog logs on IN_Q_OVERFLOW (its inotify_c module) asks for a pass."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    guard = Guard(
        _overflow_config(inbox),
        notifier=Notifier.from_environment({}),
        make_analyzer=lambda c: NoFaces(),
    )

    def drive(events: Events) -> None:
        wait_for(events, "reconciled")  # the start-up pass is over
        # A warning not about an overflow asks for nothing.
        logging.getLogger("watchdog.observers.inotify_c").warning("something else happened")
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost"
        )
        wait_for(events, "reconciled", 2)

    code, events = guarded(guard, drive)
    assert code == 0
    assert _reasons(events) == ["start", "inotify overflow"]
    assert len([e for e in events if e["event"] == "reconciled"]) == 2


def _set_max_queued(value: int) -> None:
    MAX_QUEUED.write_text(f"{value}\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="lowering fs.inotify.max_queued_events needs root")
def test_a_real_inotify_overflow_triggers_a_reconciliation_and_loses_no_file(
    tmp_path: Path,
) -> None:
    """A kernel event queue of 16 for the guard's inotify instance, bursts of 100 files.

    fs.inotify.max_queued_events is global but read once, when an inotify instance is
    made: it is lowered only until the guard's observer has started (milliseconds) and
    restored at once, so no other instance on the machine is made with it.
    """
    try:
        original = int(MAX_QUEUED.read_text())
        _set_max_queued(original)
    except OSError as error:
        pytest.skip(f"cannot set {MAX_QUEUED}: {error}")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    guard = Guard(
        _overflow_config(inbox),
        notifier=Notifier.from_environment({}),
        make_analyzer=lambda c: NoFaces(),
    )
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 0, 0)).save(buffer, "PNG")
    picture = buffer.getvalue()
    restored = threading.Event()
    written: list[int] = []

    def restore_once_watching(events: Events) -> None:
        # Requested right after observer.start(), which made the inotify instance.
        deadline = time.monotonic() + 30
        try:
            while not (_returned.is_set() or time.monotonic() > deadline):
                if "start" in _reasons(events):
                    break
                time.sleep(0.001)
        finally:
            _set_max_queued(original)
            restored.set()

    def drive(events: Events) -> None:
        assert restored.wait(30)
        wait_for(events, "reconciled")  # the start-up pass is over
        # Three events a file into a queue of 16: one burst overflows it, since the
        # reader thread waits for the GIL; a few more bursts if it ever keeps up.
        for burst in range(BURSTS):
            for index in range(100):
                with (inbox / f"burst_{burst}_{index:02d}.png").open("wb") as handle:
                    handle.write(picture)
            written.append(100)
            with contextlib.suppress(AssertionError):
                wait_for(events, "reconciled", 2, timeout=5)
                break
        wait_for(events, "decision", sum(written), timeout=120)

    try:
        _set_max_queued(16)
        code, events = guarded(guard, drive, from_start=restore_once_watching)
    finally:
        _set_max_queued(original)
    assert int(MAX_QUEUED.read_text()) == original

    assert code == 0
    assert "inotify overflow" in _reasons(events)
    paths = [e["path"] for e in events if e["event"] == "decision"]
    assert len(paths) == len(set(paths)) == sum(written)  # each file once, none lost
    assert list(inbox.glob("burst_*.png")) == []  # all quarantined (no face)


# -- a second SIGTERM/SIGINT during a slow stop exits 130 at once -----------------------

_HANGING_GUARD = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from facesieve.config import load_config
    from facesieve.daemon.guard import Guard
    from facesieve.daemon.notify import Notifier
    from facesieve.logs import configure_logging
    from facesieve.testing import HangsOnce

    config_path, entered = Path(sys.argv[1]), Path(sys.argv[2])

    configure_logging(format="json", stream=sys.stdout)
    guard = Guard(
        load_config(config_path),
        config_path=config_path,
        notifier=Notifier.from_environment({}),
        # entered: the model call began, so a stop now waits for it
        make_analyzer=lambda config: HangsOnce(timeout=300, entered_file=entered),
    )
    sys.exit(guard.run())
    """
)


@pytest.mark.parametrize(("first", "second"), [("SIGTERM", "SIGINT"), ("SIGINT", "SIGTERM")])
def test_a_second_signal_during_a_slow_stop_exits_130(
    tmp_path: Path, first: str, second: str
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    upload = arrive(inbox, "slow.png")
    config = write_config(
        tmp_path / "c.toml", inbox, watch={"settle_seconds": 0, "stop_timeout": 300}
    )
    entered = tmp_path / "entered"
    script = tmp_path / "hanging_guard.py"
    script.write_text(_HANGING_GUARD)
    log = tmp_path / "log.jsonl"
    errors = tmp_path / "stderr.txt"
    daemon = Daemon(config, log)
    env = dict(daemon.env, PYTHONPATH=str(PROJECT / "daemon"))
    with log.open("ab") as out, errors.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, str(script), str(config), str(entered)],
            stdout=out,
            stderr=err,
            env=env,
        )
        daemon.process = process
        try:
            deadline = time.monotonic() + 60
            while not entered.exists():
                assert process.poll() is None, errors.read_text()
                assert time.monotonic() < deadline, "the model call never began"
                time.sleep(0.05)
            process.send_signal(getattr(signal, first))
            daemon.wait_for("stopping", timeout=30)
            # Stopping, and waiting for the hung model call (up to stop_timeout, 300 s).
            assert process.poll() is None
            started = time.monotonic()
            process.send_signal(getattr(signal, second))
            code = process.wait(30)
            waited = time.monotonic() - started
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(30)
    stderr = errors.read_text()
    assert code == 130, stderr
    assert waited < 30
    assert "Traceback" not in stderr, stderr
    assert "stopped" not in {e["event"] for e in daemon.events()}
    assert upload.exists()  # cut short before acting: the file stays for the next start


# -- the periodic reconcile_interval pass finds a file no event announced -----------------


@pytest.mark.models
@pytest.mark.data
@pytest.mark.slow
def test_the_reconcile_interval_pass_judges_a_file_that_came_without_an_event(
    tmp_path: Path, deepface_home: Path
) -> None:
    """A file moved into a folder inotify has no watch on (a user namespace's
    max_inotify_watches, as in test_watch_robust) and never polled (poll_interval of an
    hour): no event, no poll, only the timer's pass can find it."""
    unshare = require_tool("unshare", "util-linux")
    probe = subprocess.run(
        [unshare, "--user", "--map-root-user", "true"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"user namespaces unavailable: {probe.stderr.decode().strip()}")
    photo = DATA / "utkface" / labelled("utkface")[0]["file"]
    inbox = tmp_path / "inbox"
    for n in range(60):
        (inbox / f"folder{n:03d}").mkdir(parents=True)
    config = write_config(
        tmp_path / "c.toml",
        inbox,
        watch={"reconcile_interval": 3.0, "poll_interval": 3600.0, "settle_seconds": 0.0},
    )
    limit = 'echo 30 > /proc/sys/user/max_inotify_watches && exec "$@"'
    wrapper = (unshare, "--user", "--map-root-user", "sh", "-c", limit, "sh")
    daemon = Daemon(config, tmp_path / "log.jsonl", wrapper=wrapper).start()
    try:
        daemon.wait_for("ready", timeout=300)
        unwatched = Path(str(daemon.wait_for("watch_failed", timeout=30)[-1]["path"]))
        # Two timer passes over an inbox without the file: passes are running.
        daemon.wait_for("reconciled", 3, timeout=60)
        staged = tmp_path / "missed.jpg"
        shutil.copyfile(photo, staged)
        arrived = len(daemon.events())
        staged.rename(unwatched / "missed.jpg")
        deadline = time.monotonic() + 90
        while not [e for e in daemon.events("decision") if e["path"].endswith("missed.jpg")]:
            assert time.monotonic() < deadline, daemon.events()[-5:]
            assert daemon.process is not None and daemon.process.poll() is None
            time.sleep(0.1)
    finally:
        code = daemon.stop()
    assert code == 0
    events = daemon.events()
    at = next(i for i, e in enumerate(events) if e.get("path", "").endswith("missed.jpg"))
    assert events[at]["event"] == "decision" and events[at]["path"] == str(unwatched / "missed.jpg")
    between = [e for e in events[arrived:at] if e["event"] == "reconcile_requested"]
    assert [e["reason"] for e in between][-1:] == ["timer"]
    assert "folder_arrived" not in {e["event"] for e in events}


# -- the review page: CSP on every answer, images re-encoded as JPEG ----------------------

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
    "img-src blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


@pytest.mark.data
def test_the_review_page_sends_only_re_encoded_jpeg_pixels(tmp_path: Path) -> None:
    from facesieve.ledger.store import Ledger
    from facesieve.people.page import create_app

    from .test_restore import judged

    photo = DATA / "fairface" / labelled("fairface")[0]["file"]
    original = Image.open(photo).convert("RGB")
    exif = Image.Exif()
    exif[0x010E] = "description: <script>alert(1)</script>"  # ImageDescription
    exif[0x010F] = "a camera that tells on its owner"  # Make
    payload = b"<html><script>alert('appended after the image')</script></html>"
    with_exif = io.BytesIO()
    original.save(with_exif, "JPEG", quality=95, exif=exif)
    as_png = io.BytesIO()
    original.save(as_png, "PNG")
    uploads = {"tagged.jpg": with_exif.getvalue() + payload, "lossless.png": as_png.getvalue()}
    assert Image.open(io.BytesIO(uploads["tagged.jpg"])).getexif()  # there to be dropped

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    folders = Config().resolve_folders(inbox)
    with Ledger(folders.ledger) as ledger:
        rows = {
            name: judged(ledger, folders, name, "review", content=data)
            for name, data in uploads.items()
        }
    token = "t" * 40
    client = create_app(Config(), folders, token, "tester").test_client()

    header = {"X-Facesieve-Token": token}
    for answer in (client.get("/"), client.get("/api/queue", headers=header)):
        assert answer.status_code == 200
        assert answer.headers["Content-Security-Policy"] == CSP
    for name, row in rows.items():
        assert row.destination is not None
        assert Path(row.destination).read_bytes() == uploads[name]  # in review, as uploaded
        answer = client.get(f"/image/{row.id}", headers=header)
        assert answer.status_code == 200, name
        assert answer.headers["Content-Security-Policy"] == CSP
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.mimetype == "image/jpeg"
        body = answer.get_data()
        assert body != uploads[name] and body.startswith(b"\xff\xd8")
        assert b"Exif" not in body and payload not in body and b"script" not in body
        shown = Image.open(io.BytesIO(body))
        assert shown.format == "JPEG"
        assert not shown.getexif() and "exif" not in shown.info
        assert shown.size == original.size
        # The same picture, only its pixels: close to the original everywhere.
        difference = np.abs(
            np.asarray(shown.convert("RGB"), dtype=np.int16) - np.asarray(original, dtype=np.int16)
        )
        assert float(difference.mean()) < 4


# -- Ray refuses --rejudge, before Ray is ever imported ----------------------------------


@pytest.mark.parametrize("rejudge", [["--rejudge"], ["--rejudge", "all"]])
def test_ray_refuses_rejudge_before_starting_ray(tmp_path: Path, rejudge: list[str]) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    arrive(folder, "kept.png")
    script = (
        "import sys\n"
        "from facesieve.cli.main import main\n"
        "code = main(sys.argv[1:])\n"
        "print('ray imported:', 'ray' in sys.modules)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "scan", str(folder), "--engine", "ray", *rejudge],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(os.environ, PYTHONPATH=str(PROJECT / "daemon")),
    )
    assert result.returncode == 3, result.stderr
    assert "--rejudge" in result.stderr and "not with --engine ray" in result.stderr
    assert "ray imported: False" in result.stdout
    assert (folder / "kept.png").exists()
    assert not (folder / ".facesieve").exists()  # no ledger, no shard, nothing touched
