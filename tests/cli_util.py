"""Running the real CLI as a subprocess, and reading back what it printed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tools_util import require_tool


@dataclass
class Run:
    code: int
    records: list[dict[str, Any]]  # --json lines from stdout
    events: list[dict[str, Any]]  # JSON log lines from stderr
    stderr: str


def run_cli(*args: str, drop_read_override: bool = False, timeout: float = 600) -> Run:
    """`python -m facesieve ARGS`, with JSON logs on stderr.

    `drop_read_override`: when running as root, run without CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH, so that file permissions apply to the scan as they would
    to any service user.
    """
    command = [sys.executable, "-m", "facesieve", *args]
    if drop_read_override and os.geteuid() == 0:
        setpriv = require_tool("setpriv", "util-linux")
        command = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--", *command]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    events = []
    for line in result.stderr.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return Run(result.returncode, records, events, result.stderr)


def tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every regular file below root (symlinks not followed)."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        if path.suffix in (".sqlite3", ".sqlite3-wal", ".sqlite3-shm") or "ledger" in path.name:
            continue
        found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found
