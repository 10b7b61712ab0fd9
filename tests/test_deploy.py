"""The systemd deployment files: the unit must verify cleanly and stay well sandboxed."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
UNIT = DEPLOY / "facesieve@.service"
INSTANCE = "facesieve@test.service"
BINARY = "/opt/facesieve/venv/bin/facesieve"
MAX_EXPOSURE = 2.5

# The one complaint `systemd-analyze verify` may have on a machine where facesieve is not
# installed: it checks that ExecStart= points at an executable file.
MISSING_BINARY = f"{INSTANCE}: Command {BINARY} is not executable: No such file or directory"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not on PATH (systemd is not installed)")
    return path


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SYSTEMD_COLORS": "0",
        "SYSTEMD_PAGER": "",
        "SYSTEMD_LOG_COLOR": "0",
        "SYSTEMD_LOG_LEVEL": "info",
    }
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _unit_settings(text: str) -> dict[str, list[str]]:
    """Key -> values in file order; unit files may repeat keys, so configparser won't do."""
    settings: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_verifies_with_only_the_missing_binary_complaint(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    shutil.copy(UNIT, tmp_path / UNIT.name)
    result = _run([analyze, "verify", str(tmp_path / INSTANCE)], cwd=tmp_path)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    if Path(BINARY).is_file() and os.access(BINARY, os.X_OK):
        assert lines == [], lines
        assert result.returncode == 0
    else:
        assert lines == [MISSING_BINARY], lines
        assert result.returncode != 0


def test_unit_verifies_cleanly_with_an_existing_binary(tmp_path: Path) -> None:
    """Same unit, ExecStart= pointed at a stub, so nothing at all may be reported."""
    analyze = _tool("systemd-analyze")
    stub = tmp_path / "bin" / "facesieve"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text()
    assert text.count(BINARY) == 1, "ExecStart= should be the only use of the binary path"
    (tmp_path / UNIT.name).write_text(text.replace(BINARY, str(stub)))
    result = _run([analyze, "verify", str(tmp_path / INSTANCE)], cwd=tmp_path)
    assert result.stdout.strip() == ""
    assert result.stderr.strip() == ""
    assert result.returncode == 0

    # Control: a bad line is only a warning (exit status 0), so the empty output above is
    # what proves the unit clean.
    broken = text.replace(BINARY, str(stub)).replace("[Service]\n", "[Service]\nBogusKey=1\n")
    (tmp_path / UNIT.name).write_text(broken)
    result = _run([analyze, "verify", str(tmp_path / INSTANCE)], cwd=tmp_path)
    assert "BogusKey" in result.stderr


def test_security_exposure_is_low(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    shutil.copy(UNIT, tmp_path / UNIT.name)
    result = _run([analyze, "security", "--offline=yes", str(tmp_path / INSTANCE)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    match = re.search(
        rf"Overall exposure level for {re.escape(INSTANCE)}: (\d+(?:\.\d+)?)", result.stdout
    )
    assert match is not None, result.stdout
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, result.stdout


def test_unit_keeps_the_contract_with_the_daemon() -> None:
    settings = _unit_settings(UNIT.read_text())
    expected = {
        "Type": ["notify"],
        "NotifyAccess": ["main"],
        "ExecStart": [f"{BINARY} watch --config /etc/facesieve/%i.toml"],
        "WatchdogSec": ["60"],
        "TimeoutStartSec": ["300"],
        "TimeoutStopSec": ["60"],
        "Restart": ["on-failure"],
        "RestartSec": ["5"],
        "RestartPreventExitStatus": ["3 4"],
        "User": ["facesieve"],
        "Group": ["facesieve"],
        "StateDirectory": ["facesieve facesieve/%i"],
        "ReadWritePaths": ["-/srv/facesieve"],
    }
    for key, values in expected.items():
        assert settings.get(key) == values, key
    environment = settings["Environment"]
    for assignment in (
        "DEEPFACE_HOME=/var/lib/facesieve/models",
        "TF_CPP_MIN_LOG_LEVEL=3",
        "PYTHONUNBUFFERED=1",
    ):
        assert assignment in environment
    # The ML runtimes JIT-compile kernels; this must stay off (see the unit's comment).
    assert "MemoryDenyWriteExecute" not in settings


def test_install_script_parses() -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not on PATH")
    script = DEPLOY / "install.sh"
    result = subprocess.run(
        [bash, "-n", str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in script.read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-tmpfiles must run as root to chown")
def test_sysusers_and_tmpfiles_apply_to_a_scratch_root(tmp_path: Path) -> None:
    sysusers = _tool("systemd-sysusers")
    tmpfiles = _tool("systemd-tmpfiles")
    root = tmp_path / "root"
    for kind in ("sysusers.d", "tmpfiles.d"):
        target = root / "etc" / kind
        target.mkdir(parents=True)
        shutil.copy(DEPLOY / kind / "facesieve.conf", target / "facesieve.conf")

    result = _run([sysusers, f"--root={root}", "facesieve.conf"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    passwd = (root / "etc" / "passwd").read_text().splitlines()
    entry = next(line for line in passwd if line.startswith("facesieve:"))
    _name, _, uid, gid, _, home, shell = entry.split(":")
    assert (home, shell) == ("/var/lib/facesieve", "/usr/sbin/nologin")

    result = _run([tmpfiles, f"--root={root}", "--create", "facesieve.conf"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for path, mode, owner in (
        ("etc/facesieve", 0o750, (0, int(gid))),
        ("var/lib/facesieve", 0o750, (int(uid), int(gid))),
        ("var/lib/facesieve/models", 0o750, (int(uid), int(gid))),
        ("srv/facesieve", 0o750, (int(uid), int(gid))),
    ):
        info = (root / path).stat()
        assert stat.S_ISDIR(info.st_mode), path
        assert stat.S_IMODE(info.st_mode) == mode, path
        assert (info.st_uid, info.st_gid) == owner, path
