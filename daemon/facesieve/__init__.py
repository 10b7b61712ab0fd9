"""facesieve: keep, review or quarantine images by the faces and perceived gender in them.

The Python API, fixed by `__all__`:

    import facesieve

    sieve = facesieve.Sieve.from_config("facesieve.toml")  # loads the models once
    sieve.keep("upload.jpg")                                # True: kept under the policy
    judgement = sieve.judge(image_bytes)                    # a Judgement: verdict, faces

`Sieve` judges as `facesieve check` does (see `facesieve.sieve`); one thread only.
Importing `facesieve` imports none of its modules: each name loads its module when
first used, and the model packages load only when a `Sieve` is built. Stand-in models
for tests are in `facesieve.testing`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .config import Config, load_config
    from .errors import ConfigError, FacesieveError, ModelLoadError
    from .judging.judge import Judgement
    from .judging.policy import Face, Verdict
    from .sieve import NotJudgedError, Sieve

__all__ = [
    "Config",
    "ConfigError",
    "Face",
    "FacesieveError",
    "Judgement",
    "ModelLoadError",
    "NotJudgedError",
    "Sieve",
    "Verdict",
    "__version__",
    "load_config",
]

# Each public name and the module it lives in, imported on first use (PEP 562).
_HOMES = {
    "Config": ".config",
    "load_config": ".config",
    "ConfigError": ".errors",
    "FacesieveError": ".errors",
    "ModelLoadError": ".errors",
    "Judgement": ".judging.judge",
    "Face": ".judging.policy",
    "Verdict": ".judging.policy",
    "NotJudgedError": ".sieve",
    "Sieve": ".sieve",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
