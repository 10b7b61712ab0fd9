"""Every figure the manual quotes has its command, commit and load in docs/figures.toml,
and `tools/figures.py` finds the ones that do not or that went stale (issue 21)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tools"))

import figures  # noqa: E402  (tools/figures.py)


def test_every_quoted_figure_has_an_entry_naming_an_existing_bench() -> None:
    done = subprocess.run(
        [sys.executable, str(PROJECT / "tools" / "figures.py"), "--check"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(PROJECT / "daemon")),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.endswith(" problems\n") and ", 0 problems" in done.stdout


def test_the_listing_names_each_figure_with_its_command() -> None:
    registry = figures.load_registry()
    rows = figures.listing(registry)
    assert len(rows) == 2 + len(registry.figures)
    daemon = next(row for row in rows if row.startswith("| daemon |"))
    assert "`python bench/watch_latency.py`" in daemon and "| 0b9c743 |" in daemon


def _git(root: Path, *args: str) -> str:
    git = shutil.which("git")
    assert git, "git is needed to tell a stale figure"
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.invalid",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.invalid",
    )
    done = subprocess.run(
        [git, *args], cwd=root, capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip()


def _commit(root: Path, message: str) -> str:
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", message)
    return _git(root, "rev-parse", "--short=12", "HEAD")


def _project(tmp_path: Path, page: str) -> Path:
    """A tiny project: one bench with one option, one code module, one doc page."""
    root = tmp_path / "project"
    (root / "bench").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "code").mkdir()
    (root / "README.md").write_text("# tiny\n\nNo figures here.\n")
    (root / "bench" / "speed.py").write_text('OPTIONS = ["--repeat"]\n')
    (root / "code" / "judge.py").write_text("def judge():\n    return 1\n")
    (root / "docs" / "speed.md").write_text(page)
    _git(root, "init", "-q")
    return root


PAGE = "# Speed\n\n## Measured (`python bench/speed.py`)\n\nOne image takes 12.5 ms.\n"
SECTION = "Measured (`python bench/speed.py`)"


def _figure(commit: str, command: str = "python bench/speed.py --repeat 3") -> figures.Figure:
    return figures.Figure(
        id="speed",
        doc="docs/speed.md",
        section=SECTION,
        command=command,
        measured_at=commit,
        date="2026-12-04",
        load="load average 1",
        code=["code"],
    )


def test_a_section_quoting_figures_without_an_entry_fails_the_check(tmp_path: Path) -> None:
    root = _project(tmp_path, PAGE)
    problems = figures.check(figures.Registry([], [], {}), root)
    assert problems == [
        f"docs/speed.md \u00a7 {SECTION!r} quotes figures (12.5 ms) with no entry in "
        "docs/figures.toml"
    ]


def test_an_entry_naming_a_bench_or_option_that_does_not_exist_fails(tmp_path: Path) -> None:
    root = _project(tmp_path, PAGE)
    commit = _commit(root, "measured")
    assert figures.check(figures.Registry([_figure(commit)], [], {}), root) == []
    missing = _figure(commit, "python bench/gone.py")
    assert figures.check(figures.Registry([missing], [], {}), root) == [
        "speed: bench/gone.py does not exist",
        f"speed: docs/speed.md \u00a7 {SECTION!r} does not name 'python bench/gone.py'",
    ]
    option = _figure(commit, "python bench/speed.py --images 5")
    assert figures.check(figures.Registry([option], [], {}), root) == [
        "speed: bench/speed.py has no option --images"
    ]
    unknown = _figure(commit, "facesieve measure-everything")
    assert "speed: `facesieve measure-everything` is no facesieve command" in figures.check(
        figures.Registry([unknown], [], {}), root
    )


def test_a_figure_measured_before_a_change_must_say_so(tmp_path: Path) -> None:
    root = _project(tmp_path, PAGE)
    measured = _commit(root, "measured")
    (root / "code" / "judge.py").write_text("def judge():\n    return 2\n")
    change = figures.Change(_commit(root, "a new model"), "a new model", ["speed"])
    registry = figures.Registry([_figure(measured)], [change], {})
    problems = figures.check(registry, root)
    assert len(problems) == 1 and problems[0].startswith(
        f"speed: measured at {measured}, before a new model; its section must say so"
    )
    (root / "docs" / "speed.md").write_text(
        PAGE + f"\nMeasured at {measured}, before a new model; re-measure with\n"
        "`python bench/speed.py`.\n"
    )
    assert figures.check(registry, root) == []


def test_stale_lists_a_changed_module_but_not_a_moved_one(tmp_path: Path) -> None:
    root = _project(tmp_path, PAGE)
    measured = _commit(root, "measured")
    registry = figures.Registry([_figure(measured)], [], {})
    assert figures.stale(registry, root) == []
    (root / "code" / "judging").mkdir()
    _git(root, "mv", "code/judge.py", "code/judging/judge.py")
    _commit(root, "reorganised, text unchanged")
    assert figures.stale(registry, root) == []
    (root / "code" / "judging" / "judge.py").write_text("def judge():\n    return 3\n")
    edited = _commit(root, "judge changed")
    [line] = figures.stale(registry, root)
    assert line.startswith(f"speed (docs/speed.md \u00a7 {SECTION}), measured at {measured}; ")
    assert "since then 2 lines changed in 1 files of its code (last: " in line
    assert line.endswith("re-measure with `python bench/speed.py --repeat 3`")
    assert f"(last: {edited[:7]}" in line


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("took 167.5 s on 1,934 images", ["167.5 s"]),
        (
            "98.0% (48/49) right, 1.28x faster, 65 images/s",
            ["98.0%", "48/49", "1.28x", "65 images/s"],
        ),
        ("see issue 21 and commit 6053358, `bench/x.py`, 2026-11-30", []),
    ],
)
def test_what_counts_as_a_figure(text: str, found: list[str]) -> None:
    assert figures.FIGURE.findall(text) == found
