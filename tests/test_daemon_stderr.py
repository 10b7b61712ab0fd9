"""The daemon tests read the daemon's stderr: a traceback there fails them unless
the test expects it. Here the check itself, on a real `facesieve watch` run whose
stderr gets a traceback written into it by the command it runs under."""

from __future__ import annotations

from pathlib import Path

import pytest

from .daemon_util import Daemon, write_config

# Writes a traceback to stderr, then runs the daemon (the rest of the command line).
PLANTED = (
    "sh",
    "-c",
    'printf "Traceback (most recent call last):\\n  File \\"x.py\\", line 1\\n'
    'PlantedError: on purpose\\n" >&2; exec "$@"',
    "sh",
)


def test_a_clean_run_leaves_nothing_on_stderr_to_complain_of(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", tmp_path / "missing")
    daemon = Daemon(config, tmp_path / "log.jsonl").start()
    assert daemon.process is not None
    daemon.process.wait(120)
    assert daemon.stop() == 3  # no inbox: refused, with no traceback
    assert daemon.unexpected_on_stderr() == []


def test_a_traceback_on_the_daemons_stderr_fails_the_test(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", tmp_path / "missing")
    daemon = Daemon(config, tmp_path / "log.jsonl", wrapper=PLANTED).start()
    assert daemon.process is not None
    daemon.process.wait(120)
    with pytest.raises(AssertionError, match="PlantedError: on purpose"):
        daemon.stop()


def test_a_traceback_the_test_expects_is_let_through(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", tmp_path / "missing")
    daemon = Daemon(
        config, tmp_path / "log.jsonl", wrapper=PLANTED, expect_on_stderr=(r"PlantedError",)
    ).start()
    assert daemon.process is not None
    daemon.process.wait(120)
    assert daemon.stop() == 3
