"""`scan --workers N` and `scan --engine ray`: the same verdicts as one process, files acted
on exactly once through kills, load failures that stop the run, nothing left running.

Real models, real photos, a real local Ray cluster (`ray.init(num_cpus=2)`, one per
session; the CLI runs connect to it with `--address`, except the runs that test the
cluster a scan starts itself).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from facesieve.errors import ExitCode
from facesieve.ledger.shards import shard_of

from .cli_util import tree
from .conftest import DATA, labelled
from .tools_util import in_ci

pytestmark = [pytest.mark.data, pytest.mark.models, pytest.mark.slow]

_FACES = ["fairface_0001.jpg", "fairface_0002.jpg", "fairface_0004.jpg", "fairface_0006.jpg"]
_ODD_FOLDER = os.fsdecode(b"d\xe9j\xe0")  # a folder name that is not UTF-8
_ODD_NAME = os.fsdecode(b"caf\xe9.jpg")


def _mixed(root: Path, *, odd: bool = False) -> list[Path]:
    """Faces, cats, a group, a broken file, a symlink; with `odd`, a name that is not UTF-8."""
    labelled("fairface")
    labelled("noface")
    faces, cats = root / "faces", root / "cats"
    faces.mkdir(parents=True)
    cats.mkdir()
    for name in _FACES:
        shutil.copy2(DATA / "fairface" / name, faces / name)
    for path in sorted((DATA / "noface").glob("*.jpg"))[:4]:
        shutil.copy2(path, cats / path.name)
    shutil.copy2(DATA / "groups" / "2008_007676.jpg", root / "group.jpg")
    (cats / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "link.jpg").symlink_to(faces / _FACES[0])
    if odd:
        (root / _ODD_FOLDER).mkdir()
        shutil.copy2(DATA / "fairface" / _FACES[1], root / _ODD_FOLDER / _ODD_NAME)
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _many(root: Path, count: int, *, folders: int = 6) -> None:
    """`count` images: the labelled ones again and again under other names, in `folders`."""
    labelled("fairface")
    sources = (
        sorted((DATA / "fairface").glob("*.jpg"))[:20]
        + sorted((DATA / "noface").glob("*.jpg"))[:10]
    )
    for n in range(count):
        folder = root / f"f{n % folders}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(sources[n % len(sources)], folder / f"img{n:04d}.jpg")


def _exact_path(record: dict[str, Any]) -> bytes:
    # A name that is not UTF-8 is printed readably; its exact bytes are in path_bytes.
    if "path_bytes" in record:
        return base64.b64decode(record["path_bytes"])
    return os.fsencode(record["path"])


def _verdicts(records: list[dict[str, Any]], root: Path) -> dict[str, str]:
    return {
        os.path.relpath(_exact_path(r), os.fsencode(root)).decode("utf-8", "surrogateescape"): r[
            "verdict"
        ]
        for r in records
    }


def _decisions(state: Path) -> list[tuple[str, str, str, str]]:
    """(path, verdict, action, state) of every row of every ledger file under `state`."""
    rows = []
    for file in sorted(state.glob("ledger*.sqlite3")):
        with sqlite3.connect(file) as db:
            rows += db.execute("SELECT path, verdict, action, state FROM decisions").fetchall()
    return sorted(rows)


# -- processes ----------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _command(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


class _RayWatch:
    """Notes every Ray process below a process while it runs (pid and start time), so
    that what outlives it can be told apart from other clusters on the machine."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.seen: dict[int, str] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._note, daemon=True)
        self._thread.start()

    def _note(self) -> None:
        while not self._done.wait(0.2):
            for pid in _descendants(self.root):
                fields = _stat(pid)
                command = _command(pid)
                if fields is not None and (b"ray::" in command or b"/ray/" in command):
                    self.seen.setdefault(pid, fields[19])

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def alive(self) -> list[int]:
        """The noted processes still running (same pid, same start time)."""
        return [
            pid
            for pid, start in self.seen.items()
            if (fields := _stat(pid)) is not None and fields[19] == start and fields[0] != "Z"
        ]


def _reapers_of(driver: int, seconds: float = 15) -> list[int]:
    """The reaper processes of `driver` still running after up to `seconds`."""
    wanted = b"facesieve.engines.reaper\x00" + str(driver).encode() + b"\x00"
    deadline = time.monotonic() + seconds
    while True:
        found = [
            int(entry)
            for entry in os.listdir("/proc")
            if entry.isdigit() and wanted in _command(int(entry))
        ]
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _outlived(watch: _RayWatch, seconds: float = 30) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and watch.alive():
        time.sleep(0.5)
    return watch.alive()


_CLUSTER = """
import logging, sys, ray
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test session closes this pipe
ray.shutdown()
"""


def _require_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        reason = "ray is not installed: pip install 'facesieve[ray]'"
        if in_ci():
            pytest.fail(f"{reason}; CI=true, so .ci/run must have installed it", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """One real local Ray cluster (`ray.init(num_cpus=2)`) for the session, held by a child
    process (Ray's own warnings stay out of the tests); CLI runs join it with --address."""
    _require_ray()
    holder = subprocess.Popen(
        [sys.executable, "-c", _CLUSTER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        address = holder.stdout.readline().strip()
        assert address, "the Ray cluster did not start"
        yield address
    finally:
        holder.stdin.close()
        try:
            holder.wait(timeout=60)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()
        holder.stdout.close()


# Ray 2.60 clusters require a token (~/.ray/auth_token, written by the cluster that
# starts first); a driver joining one with --address must be told to send it.
_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", RAY_AUTH_MODE="token")


def _scan(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "facesieve", "scan", *args],
        capture_output=True,
        text=True,
        errors="surrogateescape",
        timeout=timeout,
        env=_ENV,
        check=False,
    )


def _records(stdout: str) -> list[dict[str, Any]]:
    lines = stdout.splitlines()
    assert all(line.startswith("{") for line in lines), [
        line for line in lines if not line.startswith("{")
    ][:5]
    return [json.loads(line) for line in lines]


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "facesieve", "scan", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        errors="surrogateescape",
        env=_ENV,
    )


def _stop(process: subprocess.Popen[str]) -> None:
    """Kill if still running, reap, and close the pipe (an open one is a ResourceWarning)."""
    process.kill()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _read_records(process: subprocess.Popen[str], count: int) -> list[dict[str, Any]]:
    assert process.stdout is not None
    records = []
    while len(records) < count:
        line = process.stdout.readline()
        if not line:
            break
        records.append(json.loads(line))
    return records


# -- the process pool -----------------------------------------------------------------------


def test_two_workers_give_the_verdicts_of_one_and_act_the_same(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    _mixed(one)
    _mixed(two)
    first = _scan(str(one), "--workers", "1", "--json")
    second = _scan(str(two), "--workers", "2", "--json")
    assert first.returncode == second.returncode == 0, second.stderr[-2000:]
    verdicts = _verdicts(_records(first.stdout), one)
    assert len(verdicts) == 10  # the symlink is skipped, every other file decided
    assert set(verdicts.values()) == {"keep", "reject", "unreadable"}
    assert _verdicts(_records(second.stdout), two) == verdicts
    assert tree(two) == tree(one)
    rows_one = [(os.path.relpath(p, one), *rest) for p, *rest in _decisions(one / ".facesieve")]
    rows_two = [(os.path.relpath(p, two), *rest) for p, *rest in _decisions(two / ".facesieve")]
    assert rows_two == rows_one
    assert "workers_ready" in second.stderr
    # A rescan: every file left in place is known to the ledger; no worker is started.
    again = _scan(str(two), "--workers", "2", "--json")
    assert again.returncode == 0 and _records(again.stdout) == []
    assert "workers_ready" not in again.stderr


def test_a_model_that_cannot_load_in_a_worker_stops_the_scan_untouched(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    _mixed(inbox)
    empty = tmp_path / "home"
    empty.mkdir()
    config = tmp_path / "c.toml"
    config.write_text(f'[models]\ngender = "deepface"\nhome = "{empty}"\n')
    snapshot = tree(inbox)
    run = _scan(str(inbox), "--workers", "2", "--config", str(config), "--json", timeout=300)
    assert run.returncode == ExitCode.MODEL == 4
    assert "gender_model_weights.h5" in run.stderr
    assert run.stdout == ""
    assert tree(inbox) == snapshot
    assert _decisions(inbox / ".facesieve") == []


def test_sigterm_stops_a_pooled_scan_and_its_workers(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    _many(inbox, 300)
    scan = _start(str(inbox), "--workers", "2", "--json")
    try:
        assert len(_read_records(scan, 5)) == 5
        workers = [p for p in _descendants(scan.pid) if b"multiprocessing" in _command(p)]
        assert workers
        scan.send_signal(signal.SIGTERM)
        assert scan.wait(timeout=60) == ExitCode.INTERRUPTED
    finally:
        _stop(scan)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_stat(p) for p in workers):
        time.sleep(0.2)
    assert not [p for p in workers if _stat(p) is not None]
    # Every row the run wrote is finished: a stop between files, not in the middle of one.
    assert {state for *_, state in _decisions(inbox / ".facesieve")} <= {"done"}


def test_from_list_judges_the_listed_candidates_only(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    _mixed(inbox)
    outside = tmp_path / "outside.jpg"
    shutil.copy2(DATA / "fairface" / _FACES[0], outside)
    manifest = tmp_path / "list.txt"
    manifest.write_bytes(
        b"\n".join(
            [
                b"faces/" + _FACES[0].encode(),  # relative: below DIR
                os.fsencode(inbox / "cats" / "broken.jpg"),  # absolute
                os.fsencode(outside),  # not under DIR: never judged
                b"faces/missing.jpg",  # gone: skipped, not an error
                b"",
                b"../inbox/group.jpg\r",  # CRLF, and dots that stay inside DIR
            ]
        )
    )
    run = _scan(str(inbox), "--from-list", str(manifest), "--workers", "1", "--json")
    assert run.returncode == 0, run.stderr[-2000:]
    assert _verdicts(_records(run.stdout), inbox) == {
        f"faces/{_FACES[0]}": "keep",
        "cats/broken.jpg": "unreadable",
        "group.jpg": "keep",
    }
    assert outside.exists()
    assert "listed, but not a candidate under DIR" in run.stderr


# -- Ray ------------------------------------------------------------------------------------


@pytest.mark.ray
def test_ray_gives_the_verdicts_of_a_local_scan(tmp_path: Path, ray_address: str) -> None:
    local, cluster = tmp_path / "local", tmp_path / "cluster"
    _mixed(local)
    _mixed(cluster)
    first = _scan(str(local), "--workers", "1", "--json")
    second = _scan(str(cluster), "--engine", "ray", "--address", ray_address, "--json")
    assert first.returncode == second.returncode == 0, second.stderr[-3000:]
    verdicts = _verdicts(_records(first.stdout), local)
    assert _verdicts(_records(second.stdout), cluster) == verdicts  # stdout: results only
    assert tree(cluster) == tree(local)
    assert len(list((cluster / ".facesieve").glob("ledger-*.sqlite3"))) == 8
    assert not (cluster / ".facesieve" / "ledger.sqlite3").exists()
    rows = [(os.path.relpath(p, cluster), *r) for p, *r in _decisions(cluster / ".facesieve")]
    assert rows == [(os.path.relpath(p, local), *r) for p, *r in _decisions(local / ".facesieve")]

    # The sharded ledger reads as one; a second run settles every file in the driver.
    stats = subprocess.run(
        [sys.executable, "-m", "facesieve", "stats", str(cluster), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(stats.stdout)
    assert sum(figures["verdicts"].values()) == len(verdicts), figures
    again = _scan(str(cluster), "--engine", "ray", "--address", ray_address, "--json")
    assert again.returncode == 0 and _records(again.stdout) == []
    assert "ray_started" not in again.stderr  # nothing to judge: no cluster contacted


@pytest.mark.ray
def test_names_that_are_not_utf8_travel_to_the_actors_and_back(
    tmp_path: Path, ray_address: str
) -> None:
    inbox = tmp_path / "inbox"
    _mixed(inbox, odd=True)
    run = _scan(str(inbox), "--engine", "ray", "--address", ray_address, "--dry-run", "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    verdicts = _verdicts(_records(run.stdout), inbox)
    assert verdicts[f"{_ODD_FOLDER}/{_ODD_NAME}"] == verdicts[f"faces/{_FACES[1]}"] == "keep"
    assert len(verdicts) == 11


@pytest.mark.ray
def test_an_actor_killed_mid_run_leaves_every_file_decided_once(
    tmp_path: Path, ray_address: str
) -> None:
    inbox = tmp_path / "inbox"
    _many(inbox, 160)
    scan = _start(
        str(inbox), "--engine", "ray", "--address", ray_address, "--actors", "2", "--json"
    )
    try:
        first = _read_records(scan, 12)
        actors = [p for p in _descendants(os.getpid()) if b"RayJudge" in _command(p)]
        assert actors, "no judging actor found"
        os.kill(actors[0], signal.SIGKILL)
        rest = _read_records(scan, 10_000)
        assert scan.wait(timeout=300) == 0
    finally:
        _stop(scan)
    records = first + rest
    counts = Counter(r["path"] for r in records)
    rows = _decisions(inbox / ".facesieve")
    print(f"actor kill: {len(records)} results, {len(rows)} ledger rows, 160 files")
    assert len(counts) == 160 and set(counts.values()) == {1}
    assert len(rows) == 160 and len({row[0] for row in rows}) == 160
    assert {row[3] for row in rows} == {"done"}
    assert _stat(actors[0]) is None


@pytest.mark.ray
def test_a_killed_driver_then_a_rerun_equal_a_clean_run_and_leave_no_ray_process(
    tmp_path: Path,
) -> None:
    _require_ray()
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    _many(clean, 120)
    _many(killed, 120)
    # No --address: each run starts (and must stop) a cluster of its own.
    scan = _start(str(killed), "--engine", "ray", "--actors", "2", "--json")
    watch = _RayWatch(scan.pid)
    try:
        done_before_kill = len(_read_records(scan, 20))
        # The watch notes the cluster's processes every 0.2 s: wait until it has.
        deadline = time.monotonic() + 30
        while len(watch.seen) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        scan.send_signal(signal.SIGKILL)
        scan.wait(timeout=30)
    finally:
        watch.stop()
        _stop(scan)
    assert len(watch.seen) >= 5, "the driver's own cluster was not seen"
    # The kill lands mid-run: 20 results read of 120 files. Counted from the ledger,
    # so the rerun's share is known, not assumed.
    acted = sum(state == "done" for *_, state in _decisions(killed / ".facesieve"))
    assert acted < 120, f"the killed driver had acted on all {acted} files"
    assert _outlived(watch) == [], "Ray processes outlived their killed driver"
    assert _reapers_of(scan.pid) == [], "the reaper did not exit after its work"

    again = _start(str(killed), "--engine", "ray", "--actors", "2", "--json")
    watch = _RayWatch(again.pid)
    try:
        rerun = _read_records(again, 10_000)
        assert again.wait(timeout=300) == 0
    finally:
        watch.stop()
        _stop(again)
    # The rerun judges what the killed driver left undone (an interrupted move that
    # recovery finishes is not judged again): at least one file, at most 120 - acted,
    # on a cluster of its own.
    assert 0 < len(rerun) <= 120 - acted, (len(rerun), acted)
    assert watch.seen, f"the rerun judged {len(rerun)} files, but no Ray process was seen"
    assert _outlived(watch) == [], "Ray processes outlived the rerun"
    reference = _scan(str(clean), "--workers", "1", "--json")
    assert reference.returncode == 0
    print(
        f"driver kill: {done_before_kill} results before the kill, {acted} acted on, "
        f"{len(rerun)} on the rerun, 120 files; {len(watch.seen)} Ray processes, none left"
    )
    assert tree(killed) == tree(clean)
    done = [
        (os.path.relpath(p, killed), v, a)
        for p, v, a, s in _decisions(killed / ".facesieve")
        if s == "done"
    ]
    expected = [
        (os.path.relpath(p, clean), v, a) for p, v, a, _ in _decisions(clean / ".facesieve")
    ]
    assert sorted(done) == sorted(expected)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_an_actor_whose_model_cannot_load_stops_the_run_untouched(
    tmp_path: Path, ray_address: str
) -> None:
    inbox = tmp_path / "inbox"
    _mixed(inbox)
    empty = tmp_path / "home"
    empty.mkdir()
    config = tmp_path / "c.toml"
    config.write_text(f'[models]\ngender = "deepface"\nhome = "{empty}"\n')
    snapshot = tree(inbox)
    run = _scan(
        str(inbox),
        "--engine",
        "ray",
        "--address",
        ray_address,
        "--config",
        str(config),
        "--json",
        timeout=240,
    )
    assert run.returncode == ExitCode.MODEL == 4, run.stderr[-3000:]
    assert "gender_model_weights.h5" in run.stderr
    assert run.stdout == ""
    assert tree(inbox) == snapshot
    assert {s for *_, s in _decisions(inbox / ".facesieve")} == set()


@pytest.mark.ray
def test_two_shard_owners_on_one_tree_act_on_every_file_exactly_once(
    tmp_path: Path, ray_address: str
) -> None:
    inbox = tmp_path / "inbox"
    _many(inbox, 96, folders=32)
    files = sorted(p for p in inbox.rglob("*.jpg"))
    mine = {shard_of(p, 8) for p in files}
    assert mine & {0, 1} and mine & {4, 5, 6, 7}, "every folder hashed to one side"
    # Shards 0-1 are the first owner's, 4-7 the second's; 2-3 go to whichever locks first.
    owners = [
        _start(
            str(inbox), "--engine", "ray", "--address", ray_address, "--json", "--own-shards", own
        )
        for own in ("0-3", "2-7")
    ]
    outputs = []
    try:
        for owner in owners:
            outputs.append(_read_records(owner, 10_000))
            assert owner.wait(timeout=300) == 0
    finally:
        for owner in owners:
            _stop(owner)
    paths = Counter(r["path"] for out in outputs for r in out)
    rows = _decisions(inbox / ".facesieve")
    print(f"two owners: {[len(out) for out in outputs]} results, {len(rows)} ledger rows")
    assert all(outputs), "each owner acted on its own shards"
    assert len(paths) == 96 and set(paths.values()) == {1}
    assert len(rows) == 96 and len({row[0] for row in rows}) == 96
    assert {row[3] for row in rows} == {"done"}
