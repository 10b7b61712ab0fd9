"""Log output: JSON lines off a terminal, journal fields under journald."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import structlog

from facesieve import logs
from facesieve.logs import configure_logging, get_logger


@pytest.fixture(autouse=True)
def _restore_structlog() -> Any:
    yield
    structlog.reset_defaults()


def test_json_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging(stream=stream)
    get_logger().info("decision", path="/in/a.jpg", verdict="keep", faces=[{"box": [1, 2, 3, 4]}])
    event = json.loads(stream.getvalue())
    assert event["event"] == "decision"
    assert event["path"] == "/in/a.jpg" and event["verdict"] == "keep"
    assert event["level"] == "info" and "timestamp" in event


def test_levels_below_the_configured_one_are_dropped() -> None:
    stream = io.StringIO()
    configure_logging(stream=stream, level="warning")
    get_logger().info("decision", path="/in/a.jpg")
    assert stream.getvalue() == ""


def test_journal_fields_under_journald(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(logs, "_journal_sender", lambda: lambda m, **f: sent.append((m, f)))
    stream = io.StringIO()
    configure_logging(stream=stream, journal=True)
    get_logger().warning("decision", path="/in/a.jpg", verdict="reject", faces=[])
    assert stream.getvalue() == ""  # the journal got it instead of stdout
    message, fields = sent[0]
    assert message == "decision"
    assert fields["PATH"] == "/in/a.jpg" and fields["VERDICT"] == "reject"
    assert fields["FACES"] == "[]" and fields["PRIORITY"] == "4"
    assert fields["SYSLOG_IDENTIFIER"] == "facesieve"


def test_no_journal_without_journal_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    assert logs._journal_sender() is None
