"""CI must not pass without the programs the tests run: `.ci/run` and `require_tool`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

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


def _check_tools(path: str, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env["PATH"] = path
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
    for name, package in TOOLS.items():
        require_tool(name, package)
    path = _path_with(tmp_path / "bin", [*CI_RUN_NEEDS, *TOOLS])
    result = _check_tools(path, ci=True)
    assert result.returncode == 0, result.stderr
    assert "ci: every tool the tests need is here" in result.stdout
