"""Programs the tests run from the machine: a test skips when one is missing, except in CI.

CI (`CI=true`, as `.ci/run` runs) installs every one of them; a missing one there must fail
the test, or CI would stay green without ever running it.
"""

from __future__ import annotations

import os
import shutil

import pytest

__all__ = ["in_ci", "require_tool"]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def require_tool(name: str, package: str) -> str:
    """The path of `name` on PATH; otherwise skip the test, or fail it under `CI=true`."""
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} is not on PATH (Debian: apt-get install -y {package})"
    if in_ci():
        pytest.fail(f"{reason}; CI=true, so .ci/run must have installed it", pytrace=False)
    pytest.skip(reason)
