"""CI must not pass without the programs the tests run, nor without the labelled data:
`.ci/run`, `require_tool` and `labelled`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from . import conftest
from .conftest import labelled
from .tools_util import require_tool

CI_RUN = Path(__file__).resolve().parents[1] / ".ci" / "run"
# What .ci/run itself runs besides the tools it checks for.
CI_RUN_NEEDS = ("dirname", "id", "sort")
TOOLS = {
    "bash": "bash",
    "chromium": "chromium",
    "setpriv": "util-linux",
    "systemd-analyze": "systemd",
    "systemd-sysusers": "systemd",
    "systemd-tmpfiles": "systemd",
}
ABSENT = "facesieve-no-such-tool"


def test_require_tool_skips_a_missing_tool_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"{ABSENT} is not on PATH"):
        require_tool(ABSENT, "nothing")


def test_require_tool_fails_a_missing_tool_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=f"{ABSENT} is not on PATH.*CI=true"):
        require_tool(ABSENT, "nothing")


def test_require_tool_finds_a_present_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert require_tool("sh", "dash") == shutil.which("sh")


def _path_with(folder: Path, names: list[str]) -> str:
    """A PATH of one folder holding links to exactly these programs (and no apt-get)."""
    folder.mkdir()
    for name in names:
        target = shutil.which(name)
        assert target is not None, name
        (folder / name).symlink_to(target)
    return str(folder)


def _check_tools(path: str, ci: bool, data: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env["PATH"] = path
    if data is not None:
        env["FACESIEVE_TEST_DATA"] = str(data)
    if ci:
        env["CI"] = "true"
    bash = require_tool("bash", "bash")
    return subprocess.run(
        [bash, str(CI_RUN), "--check-tools"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_ci_run_fails_in_ci_when_a_tool_is_missing(tmp_path: Path) -> None:
    present = [name for name in TOOLS if name != "chromium" and shutil.which(name)]
    path = _path_with(tmp_path / "bin", [*CI_RUN_NEEDS, *present])

    in_ci = _check_tools(path, ci=True)
    assert in_ci.returncode == 1, in_ci.stderr
    assert "ci: error: still missing Debian packages the tests need:" in in_ci.stderr
    assert "chromium" in in_ci.stderr

    # The same machine outside CI: a warning, and the tests that need chromium skip.
    outside = _check_tools(path, ci=False)
    assert outside.returncode == 0, outside.stderr
    assert "ci: warning: missing" in outside.stderr
    assert "chromium" in outside.stderr


def test_ci_run_passes_in_ci_with_every_tool(tmp_path: Path) -> None:
    labelled("fairface")  # under CI=true .ci/run checks the data too
    for name, package in TOOLS.items():
        require_tool(name, package)
    path = _path_with(tmp_path / "bin", [*CI_RUN_NEEDS, *TOOLS])
    result = _check_tools(path, ci=True)
    assert result.returncode == 0, result.stderr
    assert "ci: every tool the tests need is here" in result.stdout


# -- the labelled data: ../shared/data --------------------------------------------------


def _every_tool(tmp_path: Path) -> str:
    for name, package in TOOLS.items():
        require_tool(name, package)
    return _path_with(tmp_path / "bin", [*CI_RUN_NEEDS, *TOOLS])


def test_ci_run_fails_in_ci_when_the_labelled_data_is_missing(tmp_path: Path) -> None:
    path = _every_tool(tmp_path)
    missing = tmp_path / "no-shared-data"

    in_ci = _check_tools(path, ci=True, data=missing)
    assert in_ci.returncode == 1, in_ci.stderr
    assert f"ci: error: the labelled test data is missing from {missing}:" in in_ci.stderr
    assert "fairface/labels.csv" in in_ci.stderr and "CI=true" in in_ci.stderr

    # Outside CI: a warning naming what is missing, and the tests behind labelled() skip.
    outside = _check_tools(path, ci=False, data=missing)
    assert outside.returncode == 0, outside.stderr
    assert f"ci: warning: the labelled test data is missing from {missing}:" in outside.stderr
    assert "the tests that need it will skip" in outside.stderr


def test_ci_run_fails_in_ci_when_one_labelled_folder_is_missing(tmp_path: Path) -> None:
    path = _every_tool(tmp_path)
    partial = tmp_path / "data"
    for folder in ("fairface", "groups", "noface"):
        (partial / folder).mkdir(parents=True)
        (partial / folder / "labels.csv").write_text("file\n")
    result = _check_tools(path, ci=True, data=partial)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("labels.csv") == 1 and "utkface/labels.csv" in result.stderr


def test_ci_run_passes_in_ci_with_the_labelled_data(tmp_path: Path) -> None:
    labelled("fairface")  # the data is here (or, under CI=true, this fails)
    path = _every_tool(tmp_path)
    result = _check_tools(path, ci=True)  # ../shared/data, or FACESIEVE_TEST_DATA
    assert result.returncode == 0, result.stderr
    place = os.environ.get("FACESIEVE_TEST_DATA", "../shared/data")
    assert f"ci: the labelled test data is here ({place})" in result.stdout


def test_ci_run_checks_every_labelled_folder_the_tests_read() -> None:
    """.ci/run's list is the set of folders `labelled("...")` is called with in tests/."""
    script = CI_RUN.read_text()
    listed = re.search(r"^DATA_FOLDERS=\(([^)]*)\)$", script, re.MULTILINE)
    assert listed is not None
    read = set()
    for test in Path(__file__).parent.glob("*.py"):
        read.update(re.findall(r"labelled\(\"([\w-]+)\"\)", test.read_text()))
    assert set(listed.group(1).split()) == read


def test_labelled_skips_outside_ci_and_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(conftest, "DATA", tmp_path / "no-shared-data")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="labelled images not found"):
        conftest.labelled("fairface")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"labelled images not found.*CI=true"):
        conftest.labelled("fairface")
