"""facesieve: keep, review or quarantine images by the faces and perceived gender in them."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
