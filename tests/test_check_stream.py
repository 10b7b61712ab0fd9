"""`check --paths-from -` as a co-process: each path is answered as it arrives, so a
hook pays for loading the models once, not once per file (issue 17)."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import pytest

from .conftest import DATA, labelled

pytestmark = [pytest.mark.models, pytest.mark.data]

# The first answer waits for the models to load (seconds on a busy CPU); the others
# for one image each.
FIRST_ANSWER_SECONDS = 180.0
NEXT_ANSWER_SECONDS = 60.0


class Lines:
    """Lines from a pipe, each waited for with a deadline (never a bare sleep)."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._fd = pipe.fileno()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)
        self._pending = b""

    def next(self, seconds: float) -> bytes | None:
        """The next complete line, or None if none came within `seconds` (or at EOF)."""
        deadline = time.monotonic() + seconds
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not self._selector.select(left):
                return None
            block = os.read(self._fd, 1 << 16)
            if not block:
                return None
            self._pending += block
        line, self._pending = self._pending.split(b"\n", 1)
        return line

    def close(self) -> None:
        self._selector.close()


def photos() -> list[tuple[Path, str]]:
    """Four adult faces and a cat, with the verdict `--require face` gives each."""
    faces = [r["file"] for r in labelled("utkface") if int(r["age"]) >= 20][:4]
    cat = labelled("noface")[0]["file"]
    picks = [(DATA / "utkface" / name, "keep") for name in faces]
    picks.insert(2, (DATA / "noface" / cat, "reject"))
    return picks


def start(tmp_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    # stderr to a file: a full pipe nobody reads cannot block the process.
    with (tmp_path / "stderr.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "facesieve", "check", "--paths-from", "-", "--json", *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        )


def converse(tmp_path: Path, separator: bytes, *options: str) -> list[dict[str, Any]]:
    """Write one path, read its answer before writing the next; then close stdin."""
    answers: list[dict[str, Any]] = []
    with start(tmp_path, "--require", "face", *options) as process:
        assert process.stdin is not None and process.stdout is not None
        lines = Lines(process.stdout)
        try:
            for index, (path, _) in enumerate(photos()):
                process.stdin.write(os.fsencode(path) + separator)
                process.stdin.flush()
                wait = FIRST_ANSWER_SECONDS if index == 0 else NEXT_ANSWER_SECONDS
                line = lines.next(wait)
                assert line is not None, (
                    f"no answer for {path.name} within {wait:.0f} s while stdin stays open:\n"
                    + (tmp_path / "stderr.log").read_text(errors="replace")[-3000:]
                )
                answers.append(json.loads(line))
            process.stdin.close()
            assert process.wait(NEXT_ANSWER_SECONDS) == 1  # a cat among them: not all kept
            assert lines.next(1) is None  # nothing more than one answer a path
        finally:
            lines.close()
            if process.poll() is None:
                process.kill()
    return answers


@pytest.mark.parametrize(("separator", "options"), [(b"\n", ()), (b"\0", ("-0",))])
def test_each_path_is_answered_before_the_next_is_written(
    tmp_path: Path, deepface_home: Path, separator: bytes, options: tuple[str, ...]
) -> None:
    answers = converse(tmp_path, separator, *options)
    expected = photos()
    assert [Path(a["path"]).name for a in answers] == [p.name for p, _ in expected]
    assert [a["verdict"] for a in answers] == [v for _, v in expected]


def test_a_streamed_missing_path_is_reported_and_exits_2(
    tmp_path: Path, deepface_home: Path
) -> None:
    face = next(p for p, v in photos() if v == "keep")
    with start(tmp_path) as process:
        assert process.stdin is not None and process.stdout is not None
        lines = Lines(process.stdout)
        try:
            process.stdin.write(os.fsencode(face) + b"\n")
            process.stdin.flush()
            line = lines.next(FIRST_ANSWER_SECONDS)
            assert line is not None and json.loads(line)["verdict"] == "keep"
            # A missing path is reported on stderr and makes the exit code 2.
            process.stdin.write(os.fsencode(tmp_path / "absent.jpg") + b"\n")
            process.stdin.close()
            assert process.wait(NEXT_ANSWER_SECONDS) == 2
        finally:
            lines.close()
            if process.poll() is None:
                process.kill()
    assert "absent.jpg: not judged: no such file" in (tmp_path / "stderr.log").read_text()
