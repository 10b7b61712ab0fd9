"""An uploader's attacks on the inbox, runnable against `scan` and `watch` in-process.

Each attack plants uploads as an uploader would (files owned by `UPLOADER`), and
may strike once at the moment facesieve acts (between the judgement and the
action, or between its checks and its link), through a hook on the function that
runs there. `check` lists every violation of the safety rules:
  - nothing outside the inbox read (atime), changed, moved, created or deleted;
  - no setuid/setgid file written by facesieve;
  - every upload's final bytes in exactly one place (inbox or a facesieve folder);
  - every completed ledger row's sha256 is the content now where the row says.

Used by tests/test_safe_inbox.py and by bench/safe_inbox.py (the rounds count).
The stand-in model (`facesieve.testing.ColourModel`) is used because the attacks are about files,
not faces: green images show a face, everything else shows none.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import signal
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from facesieve.acting import apply
from facesieve.acting import moves as actions
from facesieve.config import Config
from facesieve.daemon.notify import Notifier
from facesieve.testing import ColourModel

UPLOADER = 5002  # the uploader's uid: owns every upload
OTHER_FS = Path("/dev/shm")


def bmp(colour: tuple[int, int, int], side: int = 64) -> bytes:
    """An uncompressed image: every colour gives the same number of bytes."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(buffer, format="BMP")
    return buffer.getvalue()


RED = bmp((200, 10, 10))  # no face: rejected
GREEN = bmp((10, 200, 10))  # a face: kept
GARBAGE = b"\x00garbage, not an image\x00" * 40  # resized by `garbage_like`
SECRET = b"the daemon user's private key\n" * 20


def garbage_like(target: Path) -> bytes:
    """Garbage as long as a symlink to `target` is: its lstat will show the same size."""
    size = len(os.fsencode(target))
    return (GARBAGE * (size // len(GARBAGE) + 1))[:size]


def swap_for_symlink(path: Path, target: Path) -> None:
    """Replace `path` by a symlink to `target` with `path`'s mtime (touch -h)."""
    info = path.lstat()
    path.unlink()
    path.symlink_to(target)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_noatime(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOATIME)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def other_fs_available(near: Path) -> bool:
    return OTHER_FS.is_dir() and os.stat(OTHER_FS).st_dev != os.stat(near).st_dev


@dataclass
class Layout:
    """An inbox, a folder outside it with a victim's files, and where quarantine lies."""

    base: Path
    xfs: bool = False
    inbox: Path = field(init=False)
    outside: Path = field(init=False)
    quarantine: Path = field(init=False)
    uploads: dict[str, bytes] = field(default_factory=dict)  # name -> final bytes
    # Bytes facesieve never judged (swapped in after the read): never deleted.
    protected: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.inbox = self.base / "inbox"
        self.outside = self.base / "outside"
        self.inbox.mkdir(parents=True)
        self.inbox.chmod(0o777)  # deploy/ makes it writable for the uploaders' group
        self.outside.mkdir()
        if self.xfs:
            self._other = Path(
                os.path.join(OTHER_FS, f"facesieve-q-{os.getpid()}-{id(self)}-{time.time_ns()}")
            )
            self._other.mkdir(mode=0o750)
            self.quarantine = self._other / "quarantine"
        else:
            self.quarantine = self.inbox / ".facesieve" / "quarantine"
        self.victims = {"x.bmp": GREEN, "x.jpg": GREEN, "photo.bmp": GREEN, "secret": SECRET}
        for name, data in self.victims.items():
            (self.outside / name).write_bytes(data)
        (self.outside / "secret").chmod(0o600)
        self._age_outside()
        self.before = self.outside_state()

    def _age_outside(self) -> None:
        # atime well before mtime: any read or listing moves it (relatime), so "never
        # read" is checkable.
        for path in [*(self.outside / name for name in self.victims), self.outside]:
            info = path.lstat()
            os.utime(path, ns=(info.st_mtime_ns - 10**12, info.st_mtime_ns), follow_symlinks=False)

    def outside_state(self) -> dict[str, tuple[Any, ...]]:
        """The victim's files, stat and bytes, read without moving their atime."""
        found: dict[str, tuple[Any, ...]] = {}
        for path in [self.outside, *(self.outside / name for name in self.victims)]:
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            data = _read_noatime(path) if stat.S_ISREG(info.st_mode) else b""
            found[str(path)] = (
                sha(data),
                info.st_mode,
                info.st_ino,
                info.st_mtime_ns,
                info.st_atime_ns,
            )
        return found

    def config(self, **sections: dict[str, Any]) -> Config:
        data: dict[str, Any] = {
            "folders": {"inbox": str(self.inbox)},
            # The attacks strike at the moment of acting; writers have tests of their own.
            "watch": {"settle_seconds": 0, "stop_timeout": 20, "reconcile_interval": 3600},
            "images": {"unreadable_grace_seconds": 0},
        }
        if self.xfs:
            data["folders"]["quarantine"] = str(self.quarantine)
        for section, values in sections.items():
            data.setdefault(section, {}).update(values)
        return Config.model_validate(data)

    def upload(
        self, relative: str, data: bytes, mode: int = 0o644, *, like: Path | None = None
    ) -> Path:
        """Write a file as the uploader does: their file, in their folder.

        `like`: with that file's mtime (and, the caller sees to it, its size), as an
        uploader makes an upload look like a file it means to hit.
        """
        path = self.inbox / relative
        for parent in reversed(path.relative_to(self.inbox).parents[:-1]):
            folder = self.inbox / parent
            if not folder.exists():
                folder.mkdir()
                os.chown(folder, UPLOADER, UPLOADER)
        self.uploads[relative] = data  # first: facesieve may act before this returns
        # All through the descriptor, so that nothing follows a symlink the strike put
        # at this name once the file is closed (and facesieve, woken, acted).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.fchown(fd, UPLOADER, UPLOADER)
            os.fchmod(fd, mode)
            os.write(fd, data)
            if like is not None:
                info = like.lstat()
                os.utime(fd, ns=(info.st_atime_ns, info.st_mtime_ns))
        finally:
            os.close(fd)
        return path

    def replaced(self, relative: str, data: bytes) -> None:
        """The uploader put other bytes at `relative`: those must survive, judged or not."""
        self.uploads[relative] = data
        self.protected.add(sha(data))

    def places(self) -> list[Path]:
        """Every regular file in the inbox and facesieve's folders (not the ledger)."""
        found: list[Path] = []
        for folder in [self.inbox] + ([self.quarantine] if self.xfs else []):
            if not folder.exists():
                continue
            for path in folder.rglob("*"):
                if path.is_symlink() or not path.is_file():
                    continue
                if path.parent == self.inbox / ".facesieve" and "ledger" in path.name:
                    continue
                found.append(path)
        return found

    def ledger_rows(self) -> list[dict[str, Any]]:
        ledger = self.inbox / ".facesieve" / "ledger.sqlite3"
        if not ledger.exists():
            return []
        with sqlite3.connect(ledger) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM decisions ORDER BY id")]

    def check(self, *, deleted_ok: bool = False) -> list[str]:
        """Every violation of the rules, as readable lines (empty: the attack failed)."""
        problems = []
        after = self.outside_state()
        for path, state in self.before.items():
            if path not in after:
                problems.append(f"outside: {path} is gone")
            elif after[path] != state:
                what = ["content", "mode", "inode", "mtime", "atime (read or listed)"]
                changed = [w for w, a, b in zip(what, state, after[path], strict=True) if a != b]
                problems.append(f"outside: {path} changed: {', '.join(changed)}")
        # Listed last: the listing itself moves the folder's atime.
        for path in set(map(str, self.outside.rglob("*"))) - set(self.before):
            problems.append(f"outside: {path} was created")
        contents: dict[str, list[Path]] = {}
        for path in self.places():
            info = path.lstat()
            if info.st_mode & (stat.S_ISUID | stat.S_ISGID) and info.st_uid != UPLOADER:
                problems.append(f"setuid/setgid file owned by uid {info.st_uid}: {path}")
            copied = self.xfs and self.quarantine in path.parents
            if copied and (info.st_mode & 0o7000 or info.st_mode & 0o777 & ~0o640):
                problems.append(f"copy wider than 0640 or special bits: {path}")
            contents.setdefault(sha(path.read_bytes()), []).append(path)
        if sha(SECRET) in contents:
            problems.append(f"the victim's secret was copied: {contents[sha(SECRET)]}")
        for relative, data in self.uploads.items():
            where = contents.get(sha(data), [])
            excused = deleted_ok and not where and sha(data) not in self.protected
            if len(where) != 1 and not excused:
                problems.append(f"upload {relative}: its bytes are in {len(where)} places: {where}")
        for row in self.ledger_rows():
            if row["state"] != "done" or row["action"] in ("keep", "restore"):
                continue
            if row["action"] == "delete":
                if row["sha256"] not in {sha(d) for d in self.uploads.values()} | {sha(RED)}:
                    problems.append(f"ledger #{row['id']} deleted bytes it never judged")
                continue
            destination = Path(row["destination"])
            if not destination.is_file() or sha(destination.read_bytes()) != row["sha256"]:
                problems.append(f"ledger #{row['id']}: {destination} is not the content recorded")
        return problems

    def cleanup(self) -> None:
        if self.xfs:
            shutil.rmtree(self._other, ignore_errors=True)


# -- striking at the moment of acting --------------------------------------------------


@contextlib.contextmanager
def patched(owner: Any, name: str, replacement: Any) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def before_acting(strike: Callable[[Path], None], times: int = 1) -> Iterator[list[Path]]:
    """Run `strike(path)` after a file was judged, right before facesieve acts on it."""
    real = apply.check_unchanged
    struck: list[Path] = []

    def hooked(held: Any, root: Any, parts: Any) -> None:
        if len(struck) < times:
            struck.append(held.path)
            strike(held.path)
        real(held, root, parts)

    with patched(apply, "check_unchanged", hooked):
        yield struck


@contextlib.contextmanager
def at_the_link(strike: Callable[[], None], times: int = 1) -> Iterator[list[int]]:
    """Run `strike()` after facesieve's last check, right before its link() call.

    facesieve holds a read lease on the file there (acting/lease.py), so a writer's
    open waits until facesieve lets go, after breaking the lease. The strike runs
    as another process's would: in a thread of its own, waited for until it is
    done or its open is breaking the lease (then facesieve goes on, and sees it).
    """
    real = os.link
    struck: list[int] = []
    strikers: list[threading.Thread] = []

    def hooked(*args: Any, **kwargs: Any) -> None:
        if len(struck) < times:
            struck.append(1)
            striker = threading.Thread(target=strike, name="facesieve-test-strike")
            strikers.append(striker)
            striker.start()
            _until_done_or_breaking(striker)
        real(*args, **kwargs)

    try:
        with patched(actions.os, "link", hooked):
            yield struck
    finally:
        for striker in strikers:
            striker.join(timeout=60)


def _until_done_or_breaking(striker: threading.Thread, timeout: float = 10.0) -> None:
    """Wait until `striker` finished, or a lease this process holds is being broken."""
    deadline = time.monotonic() + timeout
    mine = f" {os.getpid()} "
    while striker.is_alive() and time.monotonic() < deadline:
        locks = Path("/proc/locks").read_text().splitlines()
        if any("BREAKING" in line and mine in line for line in locks):
            return
        striker.join(timeout=0.01)


# -- running facesieve in-process --------------------------------------------------------


def run_scan(layout: Layout, config: Config) -> int:
    """`facesieve scan` as the CLI runs it, with the stand-in model."""
    from facesieve import cli
    from facesieve.judging import analyzer

    config_path = layout.base / f"scan-{time.time_ns()}.toml"
    config_path.write_text(_toml(config))
    with patched(analyzer, "load_analyzer", lambda c: ColourModel()):
        return cli.main(["scan", str(layout.inbox), "--config", str(config_path), "--workers", "1"])


def _toml(config: Config) -> str:
    lines = []
    data = config.model_dump(mode="json", exclude_defaults=True)
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, str):
                lines.append(f'{key} = "{value}"')
            elif isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            else:
                lines.append(f"{key} = {value!r}".replace("'", '"'))
    return "\n".join(lines) + "\n"


def run_watch(
    layout: Layout,
    config: Config,
    during: Callable[[], None],
    *,
    until: Callable[[], bool],
    timeout: float = 60.0,
) -> int:
    """`facesieve watch` in this process: `during()` runs once the guard is ready,
    then it is stopped with SIGTERM when `until()` holds (or after `timeout`)."""
    from facesieve.daemon.guard import Guard

    guard = Guard(
        config, notifier=Notifier.from_environment({}), make_analyzer=lambda c: ColourModel()
    )

    def drive() -> None:
        deadline = time.monotonic() + timeout
        while not guard.worker.started.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # the start-up pass
        try:
            during()
            while not until() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
        finally:
            # What the SIGTERM handler does, without a signal that could outlive the guard.
            guard._on_signal(signal.SIGTERM, None)

    driver = threading.Thread(target=drive)
    driver.start()
    try:
        return guard.run()
    finally:
        driver.join(timeout + 30)


def done_for(layout: Layout, name: str) -> bool:
    return any(
        Path(r["path"]).name == name and r["state"] in ("done",) for r in layout.ledger_rows()
    )
