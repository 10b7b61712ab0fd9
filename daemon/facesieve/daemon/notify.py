"""The systemd notify protocol (sd_notify), so `facesieve watch` can run as `Type=notify`.

systemd learns that the daemon is ready (models loaded), alive (watchdog pings) and stopping
through datagrams sent to the socket named in ``$NOTIFY_SOCKET``. Outside systemd the variable
is unset and every call here is a cheap no-op, so callers never need to check first.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Callable, Mapping
from types import TracebackType

from ..logs import get_logger

__all__ = ["Notifier"]

# A blocked sendto() (the manager not draining its queue) must not freeze the thread that
# pings the watchdog: a failed ping is recoverable, a thread stuck forever is not.
_SEND_TIMEOUT = 2.0

# sd_notify(3) assignments are environment-block style; anything else is rejected before it
# reaches the wire so a typo cannot silently become a message systemd ignores.
_KEY = re.compile(r"[A-Z][A-Z0-9_]*")

_UNSAFE_CHARS = str.maketrans({"\n": " ", "\r": " ", "\0": " "})

_LibsystemdNotify = Callable[[str], object]


def _libsystemd_notify() -> _LibsystemdNotify | None:
    """systemd-python is optional (the `[systemd]` extra); without it the built-in sender works."""
    try:
        from systemd import daemon
    except ImportError:
        return None
    notify: _LibsystemdNotify = daemon.notify
    return notify


def _parse_watchdog(environ: Mapping[str, str]) -> float | None:
    """Mirror sd_watchdog_enabled(3): the pid check stops a forked child from pinging for us."""
    raw_usec = environ.get("WATCHDOG_USEC", "").strip()
    try:
        usec = int(raw_usec)
    except ValueError:
        return None
    if usec <= 0:
        return None
    raw_pid = environ.get("WATCHDOG_PID", "").strip()
    if raw_pid:
        try:
            pid = int(raw_pid)
        except ValueError:
            return None
        if pid != os.getpid():
            return None
    # Pinging at half the timeout, as sd_watchdog_enabled(3) recommends, leaves a whole
    # interval of slack for a slow ping before systemd gives up on us.
    return usec / 2 / 1_000_000


def _socket_address(address: str) -> str | None:
    """Return what sendto() needs, or None for addresses sd_notify itself would refuse."""
    if address.startswith("@") and len(address) > 1:
        # Linux abstract namespace: the name starts with a NUL byte and has no file behind it.
        return "\0" + address[1:]
    if address.startswith("/"):
        return address
    return None


def _format_fields(fields: Mapping[str, str | int]) -> str | None:
    lines: list[str] = []
    for key, value in fields.items():
        name = key.upper()
        if not _KEY.fullmatch(name):
            return None
        text = str(int(value)) if isinstance(value, bool) else str(value)
        # A newline inside a value would start a new assignment: a STATUS text taken from an
        # exception message must not be able to inject READY=1 or STOPPING=1. NUL would be
        # refused by libsystemd's binding, and lone surrogates (undecodable file names) by the
        # UTF-8 encoder, each with an exception that send() must not raise.
        text = text.translate(_UNSAFE_CHARS)
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        lines.append(f"{name}={text}")
    return "\n".join(lines) if lines else None


class Notifier:
    """Sends sd_notify messages; a failure is logged and reported as False, never raised.

    A lost notification costs at worst a watchdog restart, while an exception escaping from a
    status update would take down a daemon that was otherwise working.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        watchdog_interval: float | None = None,
        use_libsystemd: bool = False,
    ) -> None:
        self._address = address or None
        self._watchdog_interval = watchdog_interval
        self._libsystemd = _libsystemd_notify() if use_libsystemd and self._address else None
        self._socket: socket.socket | None = None
        # The worker thread pings the watchdog while the main thread reports status; the lock
        # keeps lazy socket creation and close() from racing a send.
        self._lock = threading.Lock()
        self._failing = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Read the variables systemd sets for the main process of a `Type=notify` unit.

        libsystemd reads ``os.environ`` itself, so it is only used when that is the mapping we
        were given; an explicit mapping (tests, a supervisor passing its own) always gets the
        built-in sender so the address used is the one that was passed in.
        """
        use_libsystemd = environ is None
        env: Mapping[str, str] = os.environ if environ is None else environ
        return cls(
            env.get("NOTIFY_SOCKET") or None,
            watchdog_interval=_parse_watchdog(env),
            use_libsystemd=use_libsystemd,
        )

    @property
    def enabled(self) -> bool:
        """Whether a service manager is listening; when False every send is a no-op."""
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings, or None when systemd expects none from us."""
        return self._watchdog_interval

    def send(self, **fields: str | int) -> bool:
        """Send one datagram of ``KEY=value`` lines; keys are upper-cased (``ready=1``)."""
        if self._address is None:
            return False
        message = _format_fields(fields)
        if message is None:
            self._report_failure("invalid notify fields", fields=sorted(fields))
            return False
        with self._lock:
            try:
                sent = self._send_locked(self._address, message)
            except OSError as error:
                # The socket may be wedged (e.g. the peer was replaced); start afresh next time.
                self._close_locked()
                self._report_failure(
                    "send failed", message=message.split("\n", 1)[0], error=str(error)
                )
                return False
            if sent:
                self._failing = False
            return sent

    def ready(self, status: str | None = None) -> bool:
        """Tell systemd start-up is over, which ends TimeoutStartSec and starts the watchdog."""
        if status is None:
            return self.send(READY=1)
        return self.send(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        """Free-form text shown by `systemctl status`; meant for humans, not for parsing."""
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        """Prove liveness; a missing ping within WatchdogSec makes systemd kill and restart us."""
        return self.send(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        """Announce a graceful stop, so a slow shutdown is not mistaken for a hang."""
        if status is None:
            return self.send(STOPPING=1)
        return self.send(STOPPING=1, STATUS=status)

    def close(self) -> None:
        """Release the socket; a later send opens a new one, so closing twice is harmless."""
        with self._lock:
            self._close_locked()

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(address={self._address!r}, "
            f"watchdog_interval={self._watchdog_interval!r})"
        )

    def _send_locked(self, address: str, message: str) -> bool:
        if self._libsystemd is not None and os.environ.get("NOTIFY_SOCKET") == address:
            return bool(self._libsystemd(message))
        target = _socket_address(address)
        if target is None:
            self._report_failure("unsupported NOTIFY_SOCKET address", address=address)
            return False
        if self._socket is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.settimeout(_SEND_TIMEOUT)
            self._socket = sock
        payload = message.encode("utf-8")
        return self._socket.sendto(payload, target) == len(payload)

    def _close_locked(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _report_failure(self, problem: str, **details: object) -> None:
        # Warn once per run of failures: a dead manager would otherwise log on every ping.
        # Through facesieve's own (structlog) logger, so it reaches the JSON log and the
        # journal like every other event.
        log = get_logger()
        report = log.debug if self._failing else log.warning
        self._failing = True
        report("notify_failed", problem=problem, **details)
