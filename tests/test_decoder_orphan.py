"""The decoder child whose parent is gone ends quietly.

A daemon killed (SIGKILL, the OOM killer) while its decoder child decodes leaves
the child to finish and send its reply into a closed socket. That is no error of
the child's: it ends, exit 0, and writes nothing to stderr (a traceback there is
what test_watch.py's kill -9 test found on the daemon's kept stderr).
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path

from PIL import Image

import facesieve
from facesieve.config import Config


def test_a_reply_nobody_reads_ends_the_child_without_a_traceback() -> None:
    images = Config().images
    buffer = io.BytesIO()
    # Large enough that the decode outlasts closing our end (~0.1 s of decoding).
    Image.effect_noise((3000, 3000), 64).convert("RGB").save(buffer, format="PNG")
    ours, theirs = socket.socketpair()
    package_root = str(Path(facesieve.__file__).resolve().parents[1])
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from facesieve.judging.decoder import serve; "
            "serve(int(sys.argv[1]), int(sys.argv[2]))",
            str(theirs.fileno()),
            str(images.decode_memory_mb),
        ],
        pass_fds=(theirs.fileno(),),
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=package_root),
    )
    theirs.close()
    conn = Connection(ours.detach())
    try:
        assert conn.recv() == "ready"
        conn.send((buffer.getvalue(), images.max_pixels, 10_000, images.max_jpeg_scans))
    finally:
        conn.close()  # the parent is gone before the reply
    _, stderr = child.communicate(timeout=60)
    assert stderr.decode(errors="replace") == ""
    assert child.returncode == 0
