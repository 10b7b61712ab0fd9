"""Decoding under a budget: a child process with a time limit and a memory limit.

A crafted image can make a C decoder run for minutes (a JPEG with thousands of
tiny progressive scans) or allocate gigabytes; inside the daemon's process it
would hold the worker, the watchdog pings and SIGTERM hostage. So images are
decoded in one long-lived child process (started once, reused for every file,
restarted after it is killed): over `decode_timeout` seconds it is killed and
the image is `unreadable` ("over the decode time budget"); its address space is
capped at its own size plus `decode_memory_mb`, so an allocation past that
fails in the child, not in the daemon. A stop request kills it at once.

This module imports nothing heavy at the top: the child is a fresh interpreter
(never a fork of a process holding TensorFlow's threads) that imports only the
image stack.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DecodeInterruptedError, SlowDecodeError, UnreadableImageError

if TYPE_CHECKING:
    from ..config import ImagesConfig
    from .images import DecodedImage

__all__ = ["Decoder", "shared_decoder"]

_POLL = 0.05  # seconds between looks at the stop flag while a decode runs
_START_TIMEOUT = 120.0  # a fresh interpreter importing numpy, Pillow and OpenCV


class Decoder:
    """Decodes image bytes in a child process; one decode at a time, any thread."""

    def __init__(self, images: ImagesConfig) -> None:
        self._images = images
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self.restarts = 0  # children killed for a budget or a stop; for tests and metrics
        self._reply: tuple[str, Any] = ("", None)
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def decode(
        self,
        data: bytes,
        should_stop: Callable[[], bool] = lambda: False,
        *,
        max_side: int | None = None,
        first_budget: float | None = None,
    ) -> DecodedImage:
        """Decode like `images.decode_image`, within the time and memory budget.

        `max_side`: the longest side wanted (a thumbnail, a page's picture); by
        default the models' `detect_max_side`. `first_budget`: seconds after which
        the decode is given up as slow (`SlowDecodeError`), when shorter than the
        decode budget: the caller decodes it again later with the full budget.

        Raises:
            UnreadableImageError: not an image, or over the time or memory budget.
            DecodeInterruptedError: `should_stop` said yes before the decode ended;
                nothing is known about the image.
            SlowDecodeError: over `first_budget`; nothing is known about the image.
        """
        with self._lock:
            # A child that dies on an image is given one more chance with a fresh
            # child, so that a child lost for another reason is never a verdict.
            for attempt in (1, 2):
                died = self._attempt(data, should_stop, max_side, first_budget)
                if died is None:
                    break
                if attempt == 2:
                    raise UnreadableImageError(died)
        kind, payload = self._reply
        self._reply = ("", None)
        if kind == "image":
            return payload  # type: ignore[no-any-return]
        if kind == "unreadable":
            raise UnreadableImageError(str(payload))
        raise RuntimeError(f"decoder failed: {payload}")

    def _attempt(
        self,
        data: bytes,
        should_stop: Callable[[], bool],
        max_side: int | None,
        first_budget: float | None = None,
    ) -> str | None:
        """One decode by the child; the reply is left in `_reply`. Returns why the child
        died on it, or None."""
        images = self._images
        side = images.detect_max_side if max_side is None else max_side
        conn = self._connection()
        try:
            conn.send((data, images.max_pixels, side, images.max_jpeg_scans))
        except OSError:
            self._kill()
            return "the decoder process died before it got the image twice"
        started = time.monotonic()
        deadline = started + images.decode_timeout
        slow_at = None
        if first_budget is not None and first_budget < images.decode_timeout:
            slow_at = started + first_budget
        while not conn.poll(_POLL):
            if should_stop():
                self._kill()
                raise DecodeInterruptedError("stopped during decoding")
            if slow_at is not None and time.monotonic() >= slow_at:
                self._kill()
                raise SlowDecodeError(f"over the first decode budget ({first_budget:g} s)")
            if time.monotonic() >= deadline:
                self._kill()
                raise UnreadableImageError(
                    f"over the decode time budget ({images.decode_timeout:g} s)"
                )
            if self._process is not None and self._process.poll() is not None:
                break
        try:
            self._reply = conn.recv()
        except (EOFError, OSError):
            self._kill()
            if should_stop():
                raise DecodeInterruptedError("stopped during decoding") from None
            # Killed by the kernel or a C abort: the child's memory cap is the
            # usual cause. The daemon itself is untouched.
            return (
                f"the decoder died on this image twice; over the memory budget "
                f"({images.decode_memory_mb} MB) or a decoder crash"
            )
        return None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(OSError):
                    self._conn.send(None)
            self._kill(count=False)

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connection(self) -> Connection:
        if self._conn is not None and self._process is not None and self._process.poll() is None:
            return self._conn
        self._kill(count=False)
        ours, theirs = socket.socketpair()
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = "1"
        command = [
            sys.executable,
            "-c",
            "import sys; from facesieve.judging.decoder import serve; "
            "serve(int(sys.argv[1]), int(sys.argv[2]))",
            str(theirs.fileno()),
            str(self._images.decode_memory_mb),
        ]
        try:
            process = subprocess.Popen(
                command, pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL
            )
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        if not conn.poll(_START_TIMEOUT):
            process.kill()
            process.wait()
            conn.close()
            raise RuntimeError("the decoder process did not start")
        try:
            conn.recv()  # "ready": imports done, memory cap set
        except (EOFError, OSError) as error:
            process.wait()
            conn.close()
            raise RuntimeError(f"the decoder process failed to start ({error})") from error
        self._process, self._conn = process, conn
        # A decoder dropped without close() still ends its child (at collection or exit).
        self._finalizer = weakref.finalize(self, _end_child, process, conn)
        return conn

    def _kill(self, *, count: bool = True) -> None:
        if self._process is not None and count:
            self.restarts += 1
        if self._finalizer is not None:
            self._finalizer()
        self._process, self._conn, self._finalizer = None, None, None


def _end_child(process: subprocess.Popen[bytes], conn: Connection) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()
    conn.close()


def serve(fd: int, memory_mb: int) -> None:
    """The child's entry point: answer decode requests on the connection `fd`."""
    _serve(Connection(fd), memory_mb)


def _serve(conn: Connection, memory_mb: int) -> None:
    """The child: import the image stack, cap the address space, decode until told to stop."""
    import resource
    import signal

    import cv2

    # Ctrl-C and systemd's SIGTERM reach this child too; the parent decides when it
    # ends (a decode cut short by them must not read as "the decoder died on it"),
    # and the kernel ends it with the parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(
        target=_exit_with_parent,
        args=(os.getppid(),),
        name="facesieve-decoder-parent",
        daemon=True,
    ).start()

    from .images import decode_image  # noqa: F401 - the image stack loads before the cap

    cv2.setNumThreads(1)
    # The cap counts from the child's own size after its imports.
    baseline = _address_space_bytes()
    limit = baseline + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    conn.send("ready")
    while True:
        try:
            request: Any = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        reply = _decode_reply(request, memory_mb)
        del request  # the bytes: not held while the answer is sent
        if not _answer(conn, reply, memory_mb):
            return  # the parent is gone (killed while this decoded): nobody to answer


def _decode_reply(request: Any, memory_mb: int) -> tuple[str, object]:
    """The answer to one decode request: the image, why the bytes are unreadable, or
    an error about this installation (never a verdict)."""
    from .images import decode_image  # imported already by _serve, before the cap

    data, max_pixels, max_side, max_scans = request
    try:
        image = decode_image(data, max_pixels=max_pixels, max_side=max_side, max_scans=max_scans)
        return ("image", image)
    except UnreadableImageError as error:
        return ("unreadable", str(error))
    except MemoryError:
        return ("unreadable", f"over the decode memory budget ({memory_mb} MB)")
    except ImportError as error:
        # The image stack itself is broken (a plugin missing): about this
        # installation, not these bytes, so never a verdict.
        return ("error", f"{type(error).__name__}: {error}")
    except Exception as error:  # noqa: BLE001 - the bytes broke the decoder: a verdict
        # The decoder read nothing but the bytes in hand (no file, no network), so
        # whatever else it raises (struct.error, TypeError, KeyError, ... from a
        # crafted header) is about them. Reported as an error, the file would
        # never be judged and could stay in the inbox for ever.
        text = str(error)
        if "memory" in text.lower() or "alloc" in text.lower():
            return ("unreadable", f"over the decode memory budget ({memory_mb} MB): {text}")
        return ("unreadable", f"the decoder failed on it: {type(error).__name__}: {text}")


def _answer(conn: Connection, reply: tuple[str, object], memory_mb: int) -> bool:
    """Send `reply` (a reply too big to pickle is an over-budget verdict); False when
    the parent is gone."""
    try:
        try:
            conn.send(reply)
        except MemoryError:
            conn.send(("unreadable", f"over the decode memory budget ({memory_mb} MB)"))
    except OSError:
        return False
    return True


def _exit_with_parent(parent: int) -> None:
    # Not PR_SET_PDEATHSIG: it fires when the *thread* that started the child
    # ends (a read-ahead pool's thread), not the process. Pillow releases the GIL
    # while it decodes, so this runs even during a long decode.
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _address_space_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


_shared: dict[ImagesConfig, Decoder] = {}
_shared_lock = threading.Lock()


def shared_decoder(images: ImagesConfig) -> Decoder:
    """The process's decoder for these settings: one child process, reused by every
    judge in the process (started on first use, ended at exit)."""
    with _shared_lock:
        decoder = _shared.get(images)
        if decoder is None:
            for old in _shared.values():
                old.close()  # settings changed (a reload): one child at a time
            _shared.clear()
            decoder = _shared[images] = Decoder(images)
        return decoder
