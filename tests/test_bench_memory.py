"""The benches' measures: memory of a process tree counted once (PSS), and the scan
engines compared with each other, never a run with itself (issue 21)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import engines  # noqa: E402  (bench/engines.py)
import proctree  # noqa: E402  (bench/proctree.py)

# A parent that starts a child, both the same interpreter with numpy loaded, then waits:
# the two share the interpreter's and numpy's pages.
_FAMILY = (
    "import subprocess, sys, numpy\n"
    "child = subprocess.Popen([sys.executable, '-c', "
    "'import numpy, sys; print(1, flush=True); sys.stdin.read()'], "
    "stdout=subprocess.PIPE, stdin=subprocess.PIPE)\n"
    "assert child.stdout.readline()\n"
    "print(2, flush=True)\n"
    "sys.stdin.read()\n"
    "child.stdin.close(); child.wait()\n"
)


def test_a_tree_is_counted_in_pss_so_shared_pages_count_once() -> None:
    family = subprocess.Popen(
        [sys.executable, "-c", _FAMILY], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert family.stdout is not None and family.stdout.readline() == b"2\n"
        deadline = time.monotonic() + 30
        while len(proctree.descendants(family.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = proctree.tree_memory(family.pid)
        alone = proctree.process_memory(family.pid)
    finally:
        family.communicate(b"")
    assert tree.processes == 2
    # Summed RSS counts the pages the two share twice; PSS splits them between the two.
    assert tree.uss <= tree.pss < tree.rss
    assert tree.pss > alone.pss > 0


def _result(label: str, verdicts: dict[str, str], seconds: float) -> engines.Result:
    return engines.Result(
        label.split("#")[0], label, seconds, 1.0, len(verdicts), 10.0, 0, 0, verdicts, 0
    )


def test_engines_compare_two_different_runs_and_count_every_difference() -> None:
    w1 = _result("w1#1", {"a.jpg": "keep", "b.jpg": "reject", "c.jpg": "keep"}, 10.0)
    w2 = _result("w2#2", {"a.jpg": "keep", "b.jpg": "review", "d.jpg": "keep"}, 5.0)
    line = engines.compare(w1, w2)
    assert line.startswith("w2#2 against w1#1: verdicts the same for 1/4 paths")
    assert "(2 judged by one run only)" in line
    assert "w2#2 ran 2.00x w1#1's speed over the whole run" in line


@pytest.mark.parametrize("runs", [["w1", "w2", "ray2"], ["w1", "w1"]])
def test_engines_pairs_never_a_run_with_itself(runs: list[str]) -> None:
    results = [_result(f"{name}#{n + 1}", {"a.jpg": "keep"}, 1.0) for n, name in enumerate(runs)]
    pairs = [engines.compare(a, b) for a, b in engines.pairs(results)]
    assert len(pairs) == len(runs) * (len(runs) - 1) // 2
    assert all(
        line.split(" against ")[0] != line.split(" against ")[1].split(":")[0] for line in pairs
    )
