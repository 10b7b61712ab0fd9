"""The guard's threads in-process, with a stand-in model: the queue, overflow into
reconciliation, a clean stop on SIGTERM, and no thread left behind.

The real models are exercised by test_watch.py; this one is about plumbing only.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from PIL import Image
from structlog.testing import capture_logs

from facesieve.config import Config, load_config
from facesieve.daemon.guard import Guard
from facesieve.daemon.notify import Notifier
from facesieve.testing import HangsOnce, NoFaces, SlowNoFaces

from .wait_util import wait_for


def done_rows(ledger: Path) -> int:
    """Done rows in the daemon's ledger; 0 until it exists with its tables (the file
    appears a moment before the schema is written, and a poll may fall in between)."""
    if not ledger.exists():
        return 0
    with sqlite3.connect(ledger) as db:
        try:
            row = db.execute("SELECT count(*) FROM decisions WHERE state = 'done'").fetchone()
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return 0
            raise
        return int(row[0])


def test_overflowing_queue_stop_and_no_thread_leak(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = Config.model_validate(
        {
            "folders": {"inbox": str(inbox)},
            "watch": {"queue_size": 2, "settle_seconds": 0, "stop_timeout": 10},
        }
    )
    guard = Guard(config, notifier=Notifier.from_environment({}), make_analyzer=lambda c: NoFaces())
    ledger = inbox / ".facesieve" / "ledger.sqlite3"
    before = set(threading.enumerate())
    seen: dict[str, int] = {}

    def feed_then_stop(events: list[dict[str, Any]]) -> None:
        # Files written once the guard is ready (its watches are in place), not after
        # a guessed 0.3 s.
        wait_for(lambda: any(e["event"] == "ready" for e in events), 60)
        for index in range(60):
            Image.new("RGB", (32, 32), (index, 0, 0)).save(inbox / f"img_{index:02d}.png")
        wait_for(lambda: done_rows(ledger) >= 60, 60)
        seen["done"] = done_rows(ledger)
        os.kill(os.getpid(), signal.SIGTERM)

    with capture_logs() as events:
        feeder = threading.Thread(target=feed_then_stop, args=(events,))
        feeder.start()
        code = guard.run()
    feeder.join(30)

    assert code == 0
    reasons = {e.get("reason") for e in events if e["event"] == "reconcile_requested"}
    assert "queue full" in reasons  # 60 files into a queue of 2: the inbox is the backlog
    assert sum(e["event"] == "decision" for e in events) == 60
    assert seen["done"] == 60
    assert len(list((inbox / ".facesieve" / "quarantine").glob("*.png"))) == 60
    assert list(inbox.glob("*.png")) == []
    wait_for(lambda: not set(threading.enumerate()) - before, 5)
    assert set(threading.enumerate()) - before == set()


def test_process_many_leaves_no_decoder_thread(tmp_path: Path) -> None:
    from facesieve.engines.local import Engine

    for index in range(10):
        Image.new("RGB", (16, 16)).save(tmp_path / f"{index}.png")
    before = set(threading.enumerate())
    engine = Engine(Config(), NoFaces())
    outcomes = list(engine.process_many(sorted(tmp_path.glob("*.png"))))
    assert [o.verdict.value for o in outcomes if o.verdict] == ["reject"] * 10
    assert set(threading.enumerate()) - before == set()


def test_watchdog_pings_stop_while_a_model_call_hangs(tmp_path: Path) -> None:
    import socket

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    address = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(address)
    receiver.settimeout(0.05)
    model = HangsOnce()
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"})
    config = Config.model_validate(
        {"folders": {"inbox": str(inbox)}, "watch": {"stop_timeout": 10}}
    )
    guard = Guard(config, notifier=notifier, make_analyzer=lambda c: model)
    pings = {"idle": 0, "stalled": 0, "released": 0}  # WATCHDOG=1 datagrams per phase

    def collect(phase: str, enough: int | None, seconds: float) -> None:
        """Count pings into `phase` until `enough` have come, or for `seconds`."""
        end = time.monotonic() + seconds
        while (enough is None or pings[phase] < enough) and time.monotonic() < end:
            try:
                data = receiver.recv(4096).decode()
            except TimeoutError:
                continue
            pings[phase] += "WATCHDOG=1" in data

    def drain() -> None:
        """Drop the datagrams already sent (the socket has a 0.05 s timeout)."""
        while True:
            try:
                receiver.recv(4096)
            except TimeoutError:
                return

    def drive(events: list[dict[str, Any]]) -> None:
        collect("idle", 3, 30)  # healthy and idle: the worker waits on the queue, pings go
        Image.new("RGB", (32, 32)).save(inbox / "hang.png")
        model.entered.wait(30)
        # Once the heartbeat is two intervals old the guard says so and stops pinging.
        wait_for(lambda: any(e["event"] == "worker_stalled" for e in events), 30)
        drain()  # what was sent before the stall was logged
        # No ping may come while the call hangs. Watching 1 s (5 intervals) is the
        # test itself: there is no event for a ping that is not sent.
        collect("stalled", None, 1.0)
        model.release.set()
        collect("released", 2, 30)  # and they resume once the worker moves again
        os.kill(os.getpid(), signal.SIGTERM)

    try:
        with capture_logs() as events:
            driver = threading.Thread(target=drive, args=(events,))
            driver.start()
            code = guard.run()
    finally:
        model.release.set()
        driver.join(30)
        receiver.close()
        notifier.close()
    assert code == 0
    assert pings["idle"] >= 3
    assert any(e["event"] == "worker_stalled" for e in events)
    assert pings["stalled"] == 0
    assert pings["released"] >= 2


def test_ledger_elapsed_ms_counts_the_model_call_of_a_lone_image(tmp_path: Path) -> None:
    from facesieve.engines.local import Engine
    from facesieve.ledger.store import Ledger

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    Image.new("RGB", (32, 32)).save(inbox / "alone.png")
    folders = Config().resolve_folders(inbox)
    model = SlowNoFaces(0.2)
    with Ledger(folders.ledger) as ledger:
        engine = Engine(Config(), model, folders=folders, ledger=ledger)
        outcome = engine.process(inbox / "alone.png")
        [row] = list(ledger.rows())
    assert outcome.verdict is not None and outcome.verdict.value == "reject"
    assert row.elapsed_ms is not None
    assert row.elapsed_ms >= model.seconds * 1000
    assert outcome.elapsed_ms >= model.seconds * 1000


def test_watch_logs_files_decided_under_another_policy_at_start_and_on_sighup(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for index in range(5):
        Image.new("RGB", (32, 32), (index, 0, 0)).save(inbox / f"img_{index}.png")
    config_file = tmp_path / "facesieve.toml"
    settings = '[folders]\ninbox = "inbox"\n[watch]\nsettle_seconds = 0\n[policy]\nrequire = "{}"\n'
    config_file.write_text(settings.format("face"))
    config = load_config(config_file)
    guard = Guard(
        config,
        config_path=config_file,
        notifier=Notifier.from_environment({}),
        make_analyzer=lambda c: NoFaces(),
    )
    ledger = inbox / ".facesieve" / "ledger.sqlite3"

    def stale_events(events: list[dict[str, Any]]) -> list[int]:
        return [e["files"] for e in events if e["event"] == "decided_under_other_policy"]

    def change_policy_then_stop(events: list[dict[str, Any]]) -> None:
        wait_for(lambda: done_rows(ledger) >= 5, 60)
        config_file.write_text(settings.format("man"))
        os.kill(os.getpid(), signal.SIGHUP)
        wait_for(lambda: len(stale_events(events)) >= 2, 60)
        os.kill(os.getpid(), signal.SIGTERM)

    with capture_logs() as events:
        helper = threading.Thread(target=change_policy_then_stop, args=(events,))
        helper.start()
        code = guard.run()
    helper.join(30)

    assert code == 0
    # At start nothing was decided yet; after SIGHUP every file (quarantined: no face) was
    # decided under the policy that `require = man` replaced.
    assert stale_events(events) == [0, 5]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_sigterm_while_the_models_load_never_reports_ready(tmp_path: Path) -> None:
    import socket

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    address = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(address)
    receiver.settimeout(0.05)
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": address})
    loading = threading.Event()

    def slow_load(config: Config) -> NoFaces:
        loading.set()
        threading.Event().wait(1.5)  # a model load, uninterruptible from outside
        return NoFaces()

    config = Config.model_validate(
        {
            "folders": {"inbox": str(inbox)},
            "watch": {"stop_timeout": 10},
            "metrics": {"address": f"127.0.0.1:{free_port()}"},
        }
    )
    guard = Guard(config, notifier=notifier, make_analyzer=slow_load)

    def terminate_during_load() -> None:
        loading.wait(30)
        os.kill(os.getpid(), signal.SIGTERM)

    driver = threading.Thread(target=terminate_during_load)
    driver.start()
    try:
        with capture_logs() as events:
            code = guard.run()
    finally:
        driver.join(30)
        notifier.close()
    messages = []
    while True:
        try:
            messages.append(receiver.recv(4096).decode())
        except TimeoutError:
            break
    receiver.close()
    names = [e["event"] for e in events]
    assert code == 0
    assert not any("READY=1" in m for m in messages), messages
    assert any("STOPPING=1" in m for m in messages), messages
    assert not {"ready", "metrics_serving", "metrics_unavailable"} & set(names)
    assert "stopped_while_loading" in names
    assert not (inbox / ".facesieve" / "ledger.sqlite3").exists()  # nothing was touched
