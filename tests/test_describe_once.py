"""`describe()` is called for every image judged: it must not hash the weights each time.

The models' fingerprint (each gender part's weights' sha256) is computed once, when
the models load; describing them afterwards reads no file and hashes nothing.
"""

from __future__ import annotations

import builtins
import hashlib
import pathlib
from typing import Any

import pytest

from facesieve.judging.gender import FACERES_ONNX


@pytest.mark.models
def test_describe_reads_and_hashes_no_weights_after_load(
    analyzer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = analyzer.describe()
    faceres = hashlib.sha256(FACERES_ONNX.read_bytes()).hexdigest()
    assert first["gender:hse/faceres"].endswith(f"sha256:{faceres}")

    opened: list[str] = []
    hashed: list[str] = []
    real_open, real_path_open, real_sha256 = builtins.open, pathlib.Path.open, hashlib.sha256

    def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    def counting_path_open(self: pathlib.Path, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(self))
        return real_path_open(self, *args, **kwargs)

    def counting_sha256(*args: Any, **kwargs: Any) -> Any:
        hashed.append("sha256")
        return real_sha256(*args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(pathlib.Path, "open", counting_path_open)
    monkeypatch.setattr(hashlib, "sha256", counting_sha256)
    described = [analyzer.describe() for _ in range(5)]
    monkeypatch.undo()

    weights = [p for p in opened if p.endswith((".onnx", ".json", ".dat", ".h5"))]
    assert weights == []
    assert hashed == []
    assert all(d == first for d in described)


@pytest.mark.models
def test_a_description_handed_out_cannot_change_the_next(analyzer: Any) -> None:
    mine = analyzer.describe()
    mine["gender"] = "tampered"
    assert analyzer.describe()["gender"] == "combined"
