"""The observer's threads die; watching goes on. An exception on watchdog's inotify
reader, its emitter or its dispatcher ends that thread only: the guard's main loop
finds it dead, says so (`observer_died`, with the exception), counts it
(`facesieve_observer_deaths`) and starts a new observer, which walks the inbox again.
A file that arrives after the death is judged within seconds, not at the next
reconciliation pass (an hour away here).

An in-process guard with a stand-in model: this is plumbing (the real models are
exercised by test_watch.py). Each death is a real exception raised on the real
watchdog thread, from a wrapper around the method that thread runs.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from prometheus_client import generate_latest
from structlog.testing import capture_logs
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyEmitter
from watchdog.observers.inotify_c import InotifyFD

from facesieve.config import Config
from facesieve.daemon.guard import Guard
from facesieve.daemon.notify import Notifier
from facesieve.testing import NoFaces

# Far below the reconcile_interval (3600 s here, 300 s by default): only a new
# observer, or the pass it asks for, judges the file this soon.
BOUND = 15.0


class KilledByTheTestError(RuntimeError):
    """Raised on a watchdog thread, once, when the test says so."""


# The thread to kill -> (its name, its class, the method it runs for each event).
KILLS: dict[str, tuple[str, type, str]] = {
    "reader": ("facesieve-inotify", InotifyFD, "handle_event"),
    "emitter": ("facesieve-emitter", InotifyEmitter, "queue_events"),
    "dispatcher": ("facesieve-observer", BaseObserver, "dispatch_events"),
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def arm(monkeypatch: pytest.MonkeyPatch, kind: str) -> threading.Event:
    """A trigger: once set, the next call of the thread's method raises on that thread."""
    _, cls, method = KILLS[kind]
    original = getattr(cls, method)
    trigger = threading.Event()

    def dies_once(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if trigger.is_set():
            trigger.clear()
            raise KilledByTheTestError(f"the test killed the {kind}")
        return result

    monkeypatch.setattr(cls, method, dies_once)
    return trigger


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("kind", sorted(KILLS))
def test_a_dead_observer_thread_is_logged_counted_and_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = Config.model_validate(
        {
            "folders": {"inbox": str(inbox)},
            "watch": {"settle_seconds": 0, "stop_timeout": 10, "reconcile_interval": 3600},
            "metrics": {"address": f"127.0.0.1:{free_port()}"},
        }
    )
    guard = Guard(config, notifier=Notifier.from_environment({}), make_analyzer=lambda c: NoFaces())
    trigger = arm(monkeypatch, kind)
    quarantine = inbox / ".facesieve" / "quarantine"
    seen: dict[str, Any] = {}

    def drive() -> None:
        try:
            assert wait_until(guard.worker.started.is_set, 60)
            Image.new("RGB", (32, 32), (1, 2, 3)).save(inbox / "before.png")
            assert wait_until(lambda: (quarantine / "before.png").exists(), 30)
            trigger.set()
            Image.new("RGB", (32, 32), (4, 5, 6)).save(inbox / "trigger.png")
            assert wait_until(lambda: not trigger.is_set(), 30), "the thread was never killed"
            arrived = time.monotonic()
            Image.new("RGB", (32, 32), (7, 8, 9)).save(inbox / "after.png")
            judged = wait_until(lambda: (quarantine / "after.png").exists(), BOUND)
            seen["after"] = time.monotonic() - arrived if judged else None
            # the file whose event killed the thread: nothing is lost either
            seen["trigger"] = wait_until(lambda: (quarantine / "trigger.png").exists(), BOUND)
        except AssertionError as error:
            seen["failed"] = str(error)  # said by the test's own thread, below
        finally:
            guard.worker.stopping.set()  # as SIGTERM does; never a signal to a finished guard

    driver = threading.Thread(target=drive, name="test-driver")
    driver.start()
    with capture_logs() as events:
        code = guard.run()
    driver.join(30)

    assert "failed" not in seen, seen["failed"]
    assert code == 0
    assert seen["after"] is not None, f"after.png was not judged within {BOUND} s"
    died = [e for e in events if e["event"] == "observer_died"]
    assert [e["thread"] for e in died] == [KILLS[kind][0]]
    assert died[0]["error"].endswith(f"KilledByTheTestError: the test killed the {kind}")
    failed = [e for e in events if e["event"] == "thread_failed"]
    assert len(failed) == 1 and "KilledByTheTestError" in failed[0]["traceback"]
    assert [e["reason"] for e in events if e["event"] == "observer_started"] == [
        "observer restarted"
    ]
    assert guard._metrics is not None
    figures = generate_latest(guard._metrics.registry).decode()
    assert "\nfacesieve_observer_deaths_total 1.0\n" in figures
    assert "\nfacesieve_watching 1.0\n" in figures
    assert seen["trigger"], "trigger.png was not judged"
    assert sorted(p.name for p in quarantine.iterdir()) == [
        "after.png",
        "before.png",
        "trigger.png",
    ]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_systemds_watchdog_goes_unfed_while_no_observer_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from facesieve.daemon import guard as guard_module
    from facesieve.intake.observer import InboxObserver

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    address = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(address)
    receiver.settimeout(0.05)
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"})
    config = Config.model_validate(
        {"folders": {"inbox": str(inbox)}, "watch": {"stop_timeout": 10}}
    )
    guard = Guard(config, notifier=notifier, make_analyzer=lambda c: NoFaces())
    trigger = arm(monkeypatch, "dispatcher")
    # While set, a new observer cannot start (as when the kernel's inotify limits are hit).
    refused = threading.Event()
    start = InboxObserver.start

    def refusing_start(self: InboxObserver) -> None:
        if refused.is_set():
            raise OSError(24, "inotify instance limit reached")
        start(self)

    monkeypatch.setattr(InboxObserver, "start", refusing_start)
    monkeypatch.setattr(guard_module, "OBSERVER_RETRY", 0.3)
    pings: dict[str, int] = {"up": 0, "down": 0, "back": 0}
    seen: dict[str, str] = {}
    phase = {"now": "before"}

    def collect(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = receiver.recv(4096).decode()
            except TimeoutError:
                continue
            if "WATCHDOG=1" in data and phase["now"] in pings:
                pings[phase["now"]] += 1

    def drive() -> None:
        try:
            assert wait_until(guard.worker.started.is_set, 60)
            phase["now"] = "up"
            collect(1.0)
            refused.set()
            trigger.set()
            Image.new("RGB", (32, 32)).save(inbox / "trigger.png")
            assert wait_until(lambda: guard._observer is None, 10), "the observer never died"
            phase["now"] = "down"
            collect(1.5)  # several failed starts, 0.3 s apart
            refused.clear()
            assert wait_until(lambda: guard._observer is not None, 10)
            phase["now"] = "back"
            collect(1.0)
        except AssertionError as error:
            seen["failed"] = str(error)  # said by the test's own thread, below
        finally:
            guard.worker.stopping.set()  # as SIGTERM does; never a signal to a finished guard

    driver = threading.Thread(target=drive, name="test-driver")
    driver.start()
    try:
        with capture_logs() as events:
            code = guard.run()
    finally:
        driver.join(30)
        receiver.close()
        notifier.close()
    assert "failed" not in seen, seen["failed"]
    assert code == 0
    assert pings["up"] >= 3  # every 0.2 s while watching
    assert pings["down"] == 0  # none while no observer runs: systemd's watchdog would fire
    assert pings["back"] >= 3
    names = [e["event"] for e in events]
    assert names.count("observer_died") == 1
    assert names.count("observer_start_failed") >= 3
    assert "watching_down" in names
    assert names.count("observer_started") == 1
