"""A real `--require man` scan to review, `facesieve review` as a process, and a real browser.

The browser is Debian's chromium driven by Playwright (`executable_path`, no
browser download). Used by the review page's tests and by `bench/review_desk.py`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("FACESIEVE_CHROMIUM", "/usr/bin/chromium")


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str  # with the token, in the fragment

    @property
    def base(self) -> str:
        return self.url.split("#", 1)[0]

    @property
    def token(self) -> str:
        return self.url.split("token=", 1)[1]


@contextmanager
def review_server(*args: str) -> Iterator[Server]:
    """`facesieve review ARGS --address 127.0.0.1:0` until the block ends."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(
        [sys.executable, "-m", "facesieve", "review", *args, "--address", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not re.fullmatch(r"http://127\.0\.0\.1:\d+/#token=[\w-]{40,}", line):
            process.kill()
            _, err = process.communicate(timeout=30)
            raise AssertionError(f"facesieve review printed {line!r}; stderr: {err[-3000:]}")
        yield Server(process, line)
    finally:
        process.terminate()
        # communicate, not wait: it also closes the pipes (no ResourceWarning).
        try:
            process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate(timeout=15)


@contextmanager
def browser() -> Iterator[Any]:
    """A headless chromium; the test skips when chromium or Playwright is not installed.

    Under `CI=true` it fails instead (tests/tools_util.py).
    """
    import pytest

    from .tools_util import in_ci, require_tool

    executable = CHROMIUM if Path(CHROMIUM).is_file() else require_tool("chromium", "chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -c constraints.txt -e '.[dev]')"
        if in_ci():
            pytest.fail(f"{reason}; CI=true", pytrace=False)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def scan_for_review(inbox: Path, images: Sequence[Path], analyzer: Any, **config: Any) -> Any:
    """Copy `images` into `inbox` and scan it for real under `require = man`; the folders.

    The gender threshold is raised to 0.97 so that a few FairFace adults reach
    review: the default combined model was fit on FairFace, and at its 0.79 only
    2 of the first 40 adults would.
    """
    from facesieve.config import Config
    from facesieve.engines.local import Engine
    from facesieve.intake.inbox import Inbox
    from facesieve.judging.judge import Status
    from facesieve.ledger.store import Ledger

    inbox.mkdir(parents=True, exist_ok=True)
    for image in images:
        shutil.copy2(image, inbox / image.name)
    settings = Config.model_validate(
        {"policy": {"require": "man", "min_gender_confidence": 0.97}, **config}
    )
    folders = settings.resolve_folders(inbox)
    with Ledger(folders.ledger) as ledger:
        engine = Engine(settings, analyzer, folders=folders, ledger=ledger)
        paths = Inbox.of(settings, folders).walk()
        outcomes = list(engine.process_many(paths))
    assert all(o.status is Status.DECIDED for o in outcomes), outcomes
    return folders


def wait_shown(page: Any, decision_id: int | None) -> None:
    """Until the page shows `decision_id` (None: the empty queue), image decoded."""
    if decision_id is None:
        page.wait_for_selector("body[data-state=empty]", timeout=20_000)
    else:
        page.wait_for_selector(
            f'body[data-state=ready][data-current="{decision_id}"]', timeout=20_000
        )
