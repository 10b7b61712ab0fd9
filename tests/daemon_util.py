"""Running `facesieve watch` as a real subprocess and following what it logs.

The daemon's stderr is kept beside its log (`<log>.stderr`): a traceback there (a
thread that died, an exception nothing caught) fails the test when the daemon is
stopped or killed, unless the test said it expects it (`expect_on_stderr`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any


class Daemon:
    """`python -m facesieve watch --config CONFIG`, logging JSON lines to a file."""

    def __init__(
        self,
        config: Path,
        log: Path,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        wrapper: tuple[str, ...] = (),
        expect_on_stderr: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self.args = args
        self.wrapper = wrapper  # a command the daemon runs under (e.g. unshare ...)
        self.log = log
        self.stderr = log.with_name(log.name + ".stderr")
        # Regular expressions of tracebacks a test provokes on purpose.
        self.expect_on_stderr = expect_on_stderr
        self.env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
        self.process: subprocess.Popen[bytes] | None = None
        self._terminated = False

    def start(self) -> Daemon:
        self._out = self.log.open("ab")
        self._err = self.stderr.open("ab")
        self.process = subprocess.Popen(
            [
                *self.wrapper,
                sys.executable,
                "-m",
                "facesieve",
                "watch",
                "--config",
                str(self.config),
                *self.args,
            ],
            stdout=self._out,
            stderr=self._err,
            env=self.env,
        )
        return self

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        if not self.log.exists():
            return found
        for line in self.log.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written
            if name is None or event.get("event") == name:
                found.append(event)
        return found

    def wait_for(self, name: str, count: int = 1, timeout: float = 120.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name)
            if len(found) >= count:
                return found
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"daemon exited with {self.process.returncode} "
                    f"waiting for {count} {name!r}: {self.events()[-5:]}"
                )
            time.sleep(0.1)
        raise AssertionError(
            f"timed out waiting for {count} {name!r} events; have {len(self.events(name))}"
        )

    def decisions_by_path(self) -> Counter[str]:
        return Counter(e["path"] for e in self.events("decision"))

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self._terminated |= signum in (signal.SIGTERM, signal.SIGINT)
        self.process.send_signal(signum)

    def stop(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        if self.process.poll() is None and not self._terminated:
            self.signal(signal.SIGTERM)  # once: a second one means "stop at once"
        code = self.process.wait(timeout)
        self._close()
        self.check_stderr()
        return code

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(30)
        self._close()
        self.check_stderr()

    def _close(self) -> None:
        self._out.close()
        self._err.close()

    def unexpected_on_stderr(self) -> list[str]:
        """Each traceback (or thread death) on the daemon's stderr no test expects."""
        if not self.stderr.exists():
            return []
        text = self.stderr.read_text(errors="replace")
        found = []
        # A traceback runs from its header to its first unindented line (the exception).
        for match in _TRACEBACK.finditer(text):
            block = match.group(0)
            if not any(re.search(pattern, block) for pattern in self.expect_on_stderr):
                found.append(block)
        return found

    def check_stderr(self) -> None:
        unexpected = self.unexpected_on_stderr()
        assert not unexpected, f"the daemon's stderr ({self.stderr}): " + "\n".join(unexpected)


_TRACEBACK = re.compile(
    r"^(?:Exception in thread .*\n)?Traceback \(most recent call last\):\n(?:[ \t].*\n)*.*$",
    re.MULTILINE,
)


def write_config(path: Path, inbox: Path, **sections: dict[str, Any]) -> Path:
    lines = ["[folders]", f'inbox = "{inbox}"']
    for section, values in sections.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path
