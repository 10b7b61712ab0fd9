"""The systemd deployment files: the unit must verify cleanly and stay well sandboxed."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from .tools_util import require_tool

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
UNIT = DEPLOY / "facesieve@.service"
METRICS_DROP_IN = DEPLOY / "facesieve@.service.d" / "metrics.conf"
INSTANCE = "facesieve@test.service"
BINARY = "/opt/facesieve/venv/bin/facesieve"
MAX_EXPOSURE = 2.5
# The metrics drop-in opens loopback IP; it must not cost more than that.
MAX_EXPOSURE_WITH_METRICS = 1.5

# The one complaint `systemd-analyze verify` may have on a machine where facesieve is not
# installed: it checks that ExecStart= points at an executable file.
MISSING_BINARY = f"{INSTANCE}: Command {BINARY} is not executable: No such file or directory"


def _tool(name: str) -> str:
    return require_tool(name, "systemd")


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


def _unit_with_metrics(folder: Path, unit_text: str, drop_in_text: str) -> Path:
    """The unit and the metrics drop-in laid out as systemd finds them; returns the instance."""
    folder.mkdir()
    (folder / UNIT.name).write_text(unit_text)
    drop_ins = folder / f"{UNIT.name}.d"
    drop_ins.mkdir()
    (drop_ins / METRICS_DROP_IN.name).write_text(drop_in_text)
    return folder / INSTANCE


def _exposure(output: str) -> float:
    match = re.search(rf"Overall exposure level for {re.escape(INSTANCE)}: (\d+(?:\.\d+)?)", output)
    assert match is not None, output
    return float(match.group(1))


def test_unit_with_metrics_drop_in_verifies_cleanly(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    stub = tmp_path / "bin" / "facesieve"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit_text = UNIT.read_text().replace(BINARY, str(stub))
    drop_in_text = METRICS_DROP_IN.read_text()
    instance = _unit_with_metrics(tmp_path / "good", unit_text, drop_in_text)
    result = _run([analyze, "verify", str(instance)], cwd=instance.parent)
    assert (result.stdout.strip(), result.stderr.strip(), result.returncode) == ("", "", 0)

    # Control: verify reads the drop-in, so a bad line in it is reported.
    broken = drop_in_text.replace("[Service]\n", "[Service]\nBogusKey=1\n")
    instance = _unit_with_metrics(tmp_path / "broken", unit_text, broken)
    result = _run([analyze, "verify", str(instance)], cwd=instance.parent)
    assert "BogusKey" in result.stderr


def test_metrics_drop_in_opens_only_loopback(tmp_path: Path) -> None:
    """Scored with and without the drop-in: it must be what opens the network, and only that."""
    analyze = _tool("systemd-analyze")
    base = tmp_path / "base"
    base.mkdir()
    shutil.copy(UNIT, base / UNIT.name)
    without = _run([analyze, "security", "--offline=yes", str(base / INSTANCE)], cwd=base)
    instance = _unit_with_metrics(
        tmp_path / "metrics", UNIT.read_text(), METRICS_DROP_IN.read_text()
    )
    with_metrics = _run([analyze, "security", "--offline=yes", str(instance)], cwd=instance.parent)
    assert without.returncode == 0 and with_metrics.returncode == 0, with_metrics.stderr

    assert _exposure(without.stdout) <= MAX_EXPOSURE
    assert _exposure(with_metrics.stdout) <= MAX_EXPOSURE_WITH_METRICS
    assert _exposure(with_metrics.stdout) > _exposure(without.stdout)
    for finding in (
        "Service may allocate Internet sockets",
        "Service has access to the host's network",
        "Service defines IP address allow list with only localhost entries",
    ):
        assert finding not in without.stdout
        assert finding in with_metrics.stdout
    for untouched in (
        "Service cannot allocate packet sockets",
        "Service cannot allocate netlink sockets",
    ):
        assert untouched in with_metrics.stdout


def test_metrics_drop_in_settings() -> None:
    settings = _unit_settings(METRICS_DROP_IN.read_text())
    assert settings == {
        "PrivateNetwork": ["no"],
        "RestrictAddressFamilies": ["", "AF_UNIX AF_INET AF_INET6"],
        "IPAddressDeny": ["any"],
        "IPAddressAllow": ["localhost"],
        "SocketBindDeny": ["any"],
        "SocketBindAllow": ["tcp:9464"],
    }
    # The port it lets the daemon bind is the one the docs tell admins to configure.
    readme = (DEPLOY / "README.md").read_text()
    assert 'address = "127.0.0.1:9464"' in readme
    assert "facesieve@.service.d/metrics.conf" in readme


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
    # Read leases on the uploaders' files (acting/lease.py): that capability, no other.
    assert settings["CapabilityBoundingSet"] == ["CAP_LEASE"]
    assert settings["AmbientCapabilities"] == ["CAP_LEASE"]


def test_install_script_parses() -> None:
    bash = require_tool("bash", "bash")
    script = DEPLOY / "install.sh"
    result = subprocess.run(
        [bash, "-n", str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    # Debian's Python, named, never whichever python3 is first on root's PATH.
    assert "\nPYTHON=/usr/bin/python3\n" in text
    assert re.findall(r"^\s*python3? ", text, flags=re.MULTILINE) == []
    assert '"$PYTHON" -m venv' in text
    # The tested versions.
    assert '-c "$SRC/constraints.txt"' in text


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
