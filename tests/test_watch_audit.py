"""The unwatched-folder audit reads watchdog's private attributes; when a watchdog
upgrade renames them the audit cannot run, and that must be said, not swallowed.

The real inotify limit is exercised by test_watch_robust.py; here watchdog's
observer is a stand-in shaped as a renamed watchdog would be.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from facesieve.config import Config
from facesieve.daemon.guard import Guard
from facesieve.daemon.notify import Notifier
from facesieve.intake.observer import InboxObserver
from facesieve.testing import NoFaces

RENAMED = {
    # the emitter keeps its inotify group under another name
    "emitter": SimpleNamespace(emitters=[SimpleNamespace(_group=SimpleNamespace())]),
    # the group keeps its watched paths under another name
    "group": SimpleNamespace(emitters=[SimpleNamespace(_inotify=SimpleNamespace(_paths={}))]),
}


@pytest.mark.parametrize("renamed", sorted(RENAMED))
def test_an_audit_that_cannot_run_is_logged_once_and_shown_as_a_metric(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, renamed: str
) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    config = Config.model_validate(
        {"folders": {"inbox": str(inbox)}, "metrics": {"address": "127.0.0.1:9464"}}
    )
    guard = Guard(config, notifier=Notifier.from_environment({}), make_analyzer=lambda c: NoFaces())
    observer = InboxObserver(
        guard.inbox,
        config.watch,
        guard.settler,
        offer=lambda path: None,
        reconcile=lambda why: None,
    )
    monkeypatch.setattr(observer, "_observer", RENAMED[renamed])
    guard._observer = observer
    with capture_logs() as events:
        guard._audit_watches()
        guard._audit_watches()  # every arrival audits again: said once, not each time

    said = [e for e in events if e["event"] == "watch_audit_unavailable"]
    assert len(said) == 1
    assert said[0]["log_level"] == "error"
    assert "watchdog" in said[0]["reason"]
    assert observer.audit_available is False
    assert guard._metrics is not None
    figures = generate_latest(guard._metrics.registry).decode()
    assert "\nfacesieve_watch_audit_available 0.0\n" in figures


def test_a_working_audit_says_nothing_and_shows_available(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = Config.model_validate(
        {"folders": {"inbox": str(inbox)}, "metrics": {"address": "127.0.0.1:9464"}}
    )
    guard = Guard(config, notifier=Notifier.from_environment({}), make_analyzer=lambda c: NoFaces())
    observer = InboxObserver(
        guard.inbox,
        config.watch,
        guard.settler,
        offer=lambda path: None,
        reconcile=lambda why: None,
    )
    observer.start()
    try:
        guard._observer = observer
        with capture_logs() as events:
            guard._audit_watches()
    finally:
        observer.stop()
        observer.join(10)
    assert not [e for e in events if e["event"] == "watch_audit_unavailable"]
    assert observer.audit_available is True
    assert guard._metrics is not None
    figures = generate_latest(guard._metrics.registry).decode()
    assert "\nfacesieve_watch_audit_available 1.0\n" in figures
