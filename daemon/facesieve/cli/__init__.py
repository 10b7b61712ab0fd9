"""The command line. `main(argv)` is callable from tests."""

from __future__ import annotations

from .main import main

__all__ = ["main"]
