"""The sd_notify sender, checked against real datagram sockets standing in for systemd."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from facesieve.daemon.notify import Notifier

TIMEOUT = 2.0


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket in tmp_path playing systemd's notify socket."""
    path = tmp_path / "notify.sock"
    if len(str(path).encode()) >= 108:  # sun_path limit; pytest's tmp_path is usually shorter
        pytest.skip(f"tmp_path too long for an AF_UNIX address: {path}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(TIMEOUT)
    sock.bind(str(path))
    try:
        yield sock, str(path)
    finally:
        sock.close()


@pytest.fixture
def abstract_listener() -> Iterator[tuple[socket.socket, str]]:
    """The same, in the Linux abstract namespace, as systemd --user and containers may use."""
    name = f"facesieve-test-{os.getpid()}-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(TIMEOUT)
    sock.bind("\0" + name)
    try:
        yield sock, "@" + name
    finally:
        sock.close()


def receive(sock: socket.socket) -> bytes:
    return sock.recv(4096)


def assert_nothing_pending(sock: socket.socket) -> None:
    sock.settimeout(0.05)
    with pytest.raises(TimeoutError):
        sock.recv(4096)


def test_protocol_messages_are_exact(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    with Notifier.from_environment({"NOTIFY_SOCKET": path}) as notifier:
        assert notifier.enabled
        assert notifier.ready() is True
        assert receive(sock) == b"READY=1"
        assert notifier.ready("watching 3 folders") is True
        assert receive(sock) == b"READY=1\nSTATUS=watching 3 folders"
        assert notifier.status("42 images judged") is True
        assert receive(sock) == b"STATUS=42 images judged"
        assert notifier.watchdog() is True
        assert receive(sock) == b"WATCHDOG=1"
        assert notifier.stopping() is True
        assert receive(sock) == b"STOPPING=1"
        assert notifier.stopping("draining queue") is True
        assert receive(sock) == b"STOPPING=1\nSTATUS=draining queue"
    assert_nothing_pending(sock)


def test_send_upper_cases_keys_and_keeps_order(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    with Notifier.from_environment({"NOTIFY_SOCKET": path}) as notifier:
        assert notifier.send(status="busy", extend_timeout_usec=30_000_000, errno=0) is True
        assert receive(sock) == b"STATUS=busy\nEXTEND_TIMEOUT_USEC=30000000\nERRNO=0"


def test_newlines_in_values_cannot_inject_fields(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    with Notifier.from_environment({"NOTIFY_SOCKET": path}) as notifier:
        assert notifier.status("model failed\nREADY=1") is True
        assert receive(sock) == b"STATUS=model failed READY=1"


def test_unencodable_and_nul_characters_are_escaped(listener: tuple[socket.socket, str]) -> None:
    """File names decoded with surrogateescape must not make a status update raise."""
    sock, path = listener
    with Notifier.from_environment({"NOTIFY_SOCKET": path}) as notifier:
        assert notifier.status("bad\udcffname\0end") is True
        assert receive(sock) == b"STATUS=bad\\udcffname end"


def test_invalid_key_is_refused_not_raised(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    with Notifier.from_environment({"NOTIFY_SOCKET": path}) as notifier:
        assert notifier.send(**{"bad key": "x"}) is False
        assert notifier.send() is False
        assert_nothing_pending(sock)


def test_unicode_status_is_utf8(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    with Notifier.from_environment({"NOTIFY_SOCKET": path}) as notifier:
        assert notifier.status("geprüft: 3") is True
        assert receive(sock) == "STATUS=geprüft: 3".encode()


def test_abstract_namespace_address(abstract_listener: tuple[socket.socket, str]) -> None:
    sock, address = abstract_listener
    with Notifier.from_environment({"NOTIFY_SOCKET": address}) as notifier:
        assert notifier.enabled
        assert notifier.ready() is True
        assert receive(sock) == b"READY=1"
        assert notifier.watchdog() is True
        assert receive(sock) == b"WATCHDOG=1"


def test_send_after_close_reopens(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": path})
    assert notifier.watchdog() is True
    assert receive(sock) == b"WATCHDOG=1"
    notifier.close()
    notifier.close()  # idempotent
    assert notifier.watchdog() is True
    assert receive(sock) == b"WATCHDOG=1"
    notifier.close()


def test_concurrent_senders_deliver_whole_datagrams(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": path})
    per_thread = 20
    results: list[bool] = []
    results_lock = threading.Lock()

    def ping(kind: str) -> None:
        for _ in range(per_thread):
            ok = notifier.watchdog() if kind == "watchdog" else notifier.status("working")
            with results_lock:
                results.append(ok)

    threads = [threading.Thread(target=ping, args=(kind,)) for kind in ("watchdog", "status")]
    try:
        for thread in threads:
            thread.start()
        # Drain while they send: the kernel queues only ~10 datagrams per socket.
        received = [receive(sock) for _ in range(2 * per_thread)]
        for thread in threads:
            thread.join(timeout=10)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        notifier.close()
    assert all(results) and len(results) == 2 * per_thread
    assert sorted(set(received)) == [b"STATUS=working", b"WATCHDOG=1"]
    assert received.count(b"WATCHDOG=1") == per_thread


def test_full_queue_times_out_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch, listener: tuple[socket.socket, str]
) -> None:
    """A manager that stops reading must cost a False, not a stuck watchdog thread."""
    monkeypatch.setattr("facesieve.daemon.notify._SEND_TIMEOUT", 0.05)
    sock, path = listener
    with Notifier.from_environment({"NOTIFY_SOCKET": path}) as notifier:
        assert notifier.watchdog() is True
        # Far above net.unix.max_dgram_qlen: once the queue is full a send must give up.
        sent = 1
        while sent < 500 and notifier.watchdog():
            sent += 1
        assert sent < 500
        receive(sock)  # room again: the next send recovers on a fresh socket
        assert notifier.watchdog() is True


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}])
def test_disabled_notifier_returns_false(environ: dict[str, str]) -> None:
    notifier = Notifier.from_environment(environ)
    assert notifier.enabled is False
    assert notifier.ready("up") is False
    assert notifier.status("x") is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False
    assert notifier.send(READY=1) is False
    notifier.close()


def test_missing_socket_path_returns_false(tmp_path: Path) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "absent.sock")})
    assert notifier.enabled is True
    assert notifier.ready() is False
    assert notifier.watchdog() is False  # and again, after the failed socket was discarded
    notifier.close()


def test_unbound_abstract_address_returns_false() -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": f"@facesieve-absent-{uuid.uuid4().hex}"})
    assert notifier.watchdog() is False
    notifier.close()


@pytest.mark.parametrize("address", ["relative.sock", "@"])
def test_unsupported_address_returns_false(address: str) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": address})
    assert notifier.enabled is True
    assert notifier.ready() is False
    notifier.close()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "1000000"}, 0.5),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "not-a-pid"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "sixty"}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_PID": str(os.getpid())}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": "/run/systemd/notify", **environ})
    if expected is None:
        assert notifier.watchdog_interval is None
    else:
        assert notifier.watchdog_interval == pytest.approx(expected)


def test_watchdog_interval_without_notify_socket() -> None:
    # The interval is reported even when disabled; pinging then is a harmless no-op.
    notifier = Notifier.from_environment({"WATCHDOG_USEC": "10000000"})
    assert notifier.enabled is False
    assert notifier.watchdog_interval == pytest.approx(5.0)


def test_from_environment_reads_os_environ(
    monkeypatch: pytest.MonkeyPatch, listener: tuple[socket.socket, str]
) -> None:
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    with Notifier.from_environment() as notifier:
        assert notifier.enabled
        assert notifier.watchdog_interval == pytest.approx(2.0)
        # Whichever sender is used (libsystemd if installed, else built-in), systemd sees this.
        assert notifier.ready() is True
        assert receive(sock) == b"READY=1"


def test_failures_are_facesieve_log_events(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    notifier = Notifier(str(tmp_path / "no-manager-here.sock"))
    with capture_logs() as events:
        assert notifier.ready() is False
        assert notifier.watchdog() is False  # the same outage: not warned again
        assert Notifier("relative/path").status("x") is False
    notifier.close()
    assert [(e["event"], e["log_level"]) for e in events] == [
        ("notify_failed", "warning"),
        ("notify_failed", "debug"),
        ("notify_failed", "warning"),
    ]
    assert events[0]["problem"] == "send failed" and events[0]["message"] == "READY=1"
    assert "No such file" in events[0]["error"]
    assert events[2] == {
        "event": "notify_failed",
        "log_level": "warning",
        "problem": "unsupported NOTIFY_SOCKET address",
        "address": "relative/path",
    }
