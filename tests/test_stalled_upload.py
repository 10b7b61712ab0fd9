"""A stalled upload is never acted on (issue 18): a writer that keeps its file open.

A real writer process writes half an image, keeps the file open and waits (a slow
client); `scan` runs meanwhile, with no unreadable grace to hide behind. The file
must stay where it is with every byte (the read lease on the held descriptor
cannot be taken while a writer has it open), also with the quarantine on another
filesystem, where acting would copy the half and unlink the name; once the writer
finishes and closes, a later scan judges the whole file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from facesieve.acting.lease import ReadLease, StillWrittenError
from facesieve.intake.safefs import Identity

from .cli_util import run_cli
from .conftest import DATA, labelled
from .safe_attacks import (
    RED,
    UPLOADER,
    Layout,
    done_for,
    other_fs_available,
    patched,
    run_scan,
    run_watch,
    sha,
)
from .tools_util import require_tool

_WRITER = r"""
import os, sys, time
path, go, half = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = sys.stdin.buffer.read()
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.fchown(fd, int(sys.argv[4]), int(sys.argv[4]))
os.write(fd, data[:half])
os.fsync(fd)
print("half", flush=True)
deadline = time.monotonic() + 120
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.05)
os.write(fd, data[half:])
os.close(fd)
"""


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """The CLI points the logs at this test's captured stderr, which closes after it."""
    yield
    structlog.reset_defaults()


class Writer:
    """A slow client in its own process: half the bytes, then a pause, file open."""

    def __init__(self, path: Path, data: bytes) -> None:
        self.go = path.parent.parent / f"go-{path.name}"
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(self.go), *self._sizes(data)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(data)
        self.process.stdin.close()
        assert self.process.stdout.readline() == b"half\n"

    @staticmethod
    def _sizes(data: bytes) -> list[str]:
        return [str(len(data) // 2), str(UPLOADER)]

    def finish(self) -> None:
        self.go.touch()
        assert self.process.wait(timeout=60) == 0

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture(params=["same-fs", "xfs"])
def layout(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Layout]:
    xfs = request.param == "xfs"
    if xfs and not other_fs_available(tmp_path):
        pytest.skip("no second filesystem at /dev/shm for the quarantine")
    made = Layout(tmp_path, xfs=xfs)
    yield made
    made.cleanup()


def _events(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """The JSON log lines the in-process CLI wrote to stderr so far."""
    lines = capsys.readouterr().err.splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def _rows(layout: Layout, name: str) -> list[tuple[str, str, int]]:
    return [
        (r["state"], r["sha256"], r["size"])
        for r in layout.ledger_rows()
        if Path(r["path"]).name == name
    ]


def test_scan_leaves_a_stalled_upload_alone_until_it_is_closed(
    layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    path = layout.inbox / "slow.bmp"
    layout.uploads["slow.bmp"] = RED
    config = layout.config(images={"unreadable_grace_seconds": 0})
    writer = Writer(path, RED)
    try:
        assert run_scan(layout, config) == 0
        logs = _events(capsys)
        # Not moved, not deleted, no byte lost: the writer still has it open.
        assert path.read_bytes() == RED[: len(RED) // 2]
        assert not [r for r in _rows(layout, "slow.bmp") if r[0] == "done"]
        deferred = [e for e in logs if e["event"] == "deferred"]
        assert deferred and all("still open for writing" in e["reason"] for e in deferred)
        writer.finish()
    finally:
        writer.kill()
    assert path.read_bytes() == RED
    assert run_scan(layout, config) == 0
    assert layout.check() == []
    assert [r for r in _rows(layout, "slow.bmp") if r[0] == "done"] == [
        ("done", sha(RED), len(RED))
    ]
    assert not path.exists()  # rejected: quarantined whole


def test_watch_leaves_a_stalled_upload_alone_until_it_is_closed(layout: Layout) -> None:
    """The guard sees the half file arrive at once (no settle time, no grace) and
    judges it unreadable; it acts only once the writer closed it, on every byte."""
    path = layout.inbox / "slow.bmp"
    layout.uploads["slow.bmp"] = RED
    config = layout.config(images={"unreadable_grace_seconds": 0})
    writers: list[Writer] = []
    checked: list[bytes] = []

    def upload() -> None:
        writers.append(Writer(path, RED))

    def until() -> bool:
        if not writers:
            return False
        if not checked and time.monotonic() - started[0] > 3.0:
            # 3 s of looking at it: still there, half.
            checked.append(path.read_bytes() if path.exists() else b"gone from the inbox")
            writers[0].finish()
        return bool(checked) and done_for(layout, "slow.bmp")

    started = [time.monotonic()]
    try:
        assert run_watch(layout, config, upload, until=until) == 0
    finally:
        for writer in writers:
            writer.kill()
    assert checked == [RED[: len(RED) // 2]]
    assert layout.check() == []
    assert [r for r in _rows(layout, "slow.bmp") if r[0] == "done"] == [
        ("done", sha(RED), len(RED))
    ]


def test_a_writer_that_opens_the_file_while_it_is_copied_keeps_it(
    layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    """A writer opening the file after the lease was taken breaks it: the copy (or
    the link) is taken back before the source name goes, and the file is judged again."""
    path = layout.upload("late.bmp", RED)
    config = layout.config(images={"unreadable_grace_seconds": 0})
    real = ReadLease.check
    opened: list[int] = []

    def check(self: ReadLease) -> None:
        if not opened:
            # O_NONBLOCK: the open breaks the lease and fails with EWOULDBLOCK at once
            # instead of waiting (this thread holds the lease) for lease-break-time.
            try:
                opened.append(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except BlockingIOError:
                opened.append(-1)
        real(self)

    with patched(ReadLease, "check", check):
        assert run_scan(layout, config) == 0
    logs = _events(capsys)
    assert opened
    assert any("opened for writing while acted on" in e.get("reason", "") for e in logs)
    assert layout.check() == []
    assert [r for r in _rows(layout, "late.bmp") if r[0] == "done"] == [
        ("done", sha(RED), len(RED))
    ]


def test_without_a_lease_a_copy_across_waits_until_the_file_is_quiet(
    layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    """No lease (here: leases refused as on NFS, EINVAL): a move on one filesystem
    proceeds (the inode itself moves), a copy to another filesystem waits."""
    path = layout.upload("nolease.bmp", RED)
    config = layout.config(images={"unreadable_grace_seconds": 0})
    real_take = ReadLease.take

    def refused(fd: int, identity: Identity, **kw: float) -> ReadLease:
        made = real_take(fd, identity, **kw)
        made.release()
        made.missing = "no read lease (EINVAL: its filesystem has no leases)"
        made.quiet = 3600.0  # the upload is seconds old: far from quiet
        return made

    with patched(ReadLease, "take", staticmethod(refused)):
        assert run_scan(layout, config) == 0
    logs = _events(capsys)
    assert [e["event"] for e in logs].count("no_lease") == 1
    done = [r for r in _rows(layout, "nolease.bmp") if r[0] == "done"]
    if layout.xfs:
        assert path.read_bytes() == RED and done == []
    else:
        assert not path.exists() and done == [("done", sha(RED), len(RED))]
    assert layout.check() == []


def test_the_lease_says_who_writes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    reader = os.open(path, os.O_RDONLY)
    writer = os.open(path, os.O_WRONLY)
    try:
        identity = Identity.of(os.fstat(reader))
        with pytest.raises(StillWrittenError, match="still open for writing"):
            ReadLease.take(reader, identity)
        # Open for writing but unchanged past the limit: acted on, said so.
        stale = ReadLease.take(reader, identity, open_limit=-1.0)
        assert stale.open_for_writing and not stale.held
        os.close(writer)
        writer = -1
        with ReadLease.take(reader, identity) as lease:
            assert lease.held
            lease.check()
            with pytest.raises(BlockingIOError):
                os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # breaks the lease
            with pytest.raises(StillWrittenError, match="opened for writing"):
                lease.check()
    finally:
        os.close(reader)
        if writer >= 0:
            os.close(writer)


# -- the real CLI, the real models ------------------------------------------------------


@pytest.mark.models
@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_real_cli_scan_keeps_a_stalled_upload_whole(
    tmp_path: Path, deepface_home: Path, workers: str
) -> None:
    """A real no-face photo, half written and held open, quarantine on another
    filesystem, no unreadable grace: the first scan leaves it, the second (after the
    writer closed it) quarantines all of its bytes. One process and the pool."""
    if not other_fs_available(tmp_path):
        pytest.skip("no second filesystem at /dev/shm for the quarantine")
    photo = (DATA / "noface" / labelled("noface")[0]["file"]).read_bytes()
    layout = Layout(tmp_path, xfs=True)
    path = layout.inbox / "photo.jpg"
    layout.uploads["photo.jpg"] = photo
    config = tmp_path / "c.toml"
    config.write_text(
        f'[folders]\nquarantine = "{layout.quarantine}"\n[images]\nunreadable_grace_seconds = 0\n'
    )
    scan = ("scan", str(layout.inbox), "--config", str(config), "--json", "--workers", workers)
    writer = Writer(path, photo)
    try:
        started = time.monotonic()
        first = run_cli(*scan, drop_read_override=True)
        assert first.code == 0, first.stderr[-2000:]
        assert path.read_bytes() == photo[: len(photo) // 2], time.monotonic() - started
        assert [r for r in first.records if r.get("action")] == []
        writer.finish()
        second = run_cli(*scan, drop_read_override=True)
        assert second.code == 0, second.stderr[-2000:]
        assert [(r["verdict"], r["action"]) for r in second.records] == [("reject", "quarantine")]
        assert layout.check() == []
        quarantined = Path(second.records[0]["destination"])
        assert quarantined.read_bytes() == photo
    finally:
        writer.kill()
        layout.cleanup()


def test_a_service_user_without_cap_lease_gets_no_lease_and_says_why() -> None:
    """Not the file's owner and no CAP_LEASE (the unit grants it): EACCES, said so;
    with the capability as the unit gives it (ambient), the lease is taken."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run as another user")
    setpriv = require_tool("setpriv", "util-linux")
    with tempfile.TemporaryDirectory(prefix="facesieve-lease-") as folder:
        os.chmod(folder, 0o755)  # pytest's tmp_path lies in a folder only root enters
        upload = Path(folder) / "upload.bmp"
        upload.write_bytes(RED)  # root's file, as an uploader's is not facesieve's
        said = _probe_as_nobody(setpriv, upload)
    assert said["without"] == (
        "False no read lease (EACCES: not the file's owner and no CAP_LEASE)"
    )
    assert said["with"] == "True None"


def _probe_as_nobody(setpriv: str, upload: Path) -> dict[str, str]:
    probe = (
        "import os, sys\n"
        "from facesieve.acting.lease import ReadLease\n"
        "from facesieve.intake.safefs import Identity\n"
        "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
        "lease = ReadLease.take(fd, Identity.of(os.fstat(fd)))\n"
        "print(lease.held, lease.missing)\n"
    )
    user = ["--reuid=65534", "--regid=65534", "--clear-groups"]
    runs = {
        "without": [*user, "--inh-caps=-all", "--bounding-set=-all"],
        "with": [*user, "--inh-caps=+lease", "--ambient-caps=+lease", "--bounding-set=-all,+lease"],
    }
    said = {}
    for name, caps in runs.items():
        result = subprocess.run(
            [setpriv, *caps, sys.executable, "-c", probe, str(upload)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=dict(os.environ),
        )
        assert result.returncode == 0, result.stderr
        said[name] = result.stdout.strip()
    return said
