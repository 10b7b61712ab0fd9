"""Shared fixtures: the labelled data where it lies, a DeepFace home, the real analyzer."""

from __future__ import annotations

import csv
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .tools_util import in_ci

PROJECT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACESIEVE_TEST_DATA", PROJECT.parent / "shared" / "data"))


def labelled(folder: str) -> list[dict[str, str]]:
    """Rows of `DATA/folder/labels.csv`; the test skips when the data is absent, except
    under `CI=true`, where it fails (as `require_tool` does: CI must run these tests)."""
    labels = DATA / folder / "labels.csv"
    if not labels.is_file():
        reason = f"labelled images not found at {labels} (../shared/data is not here)"
        if in_ci():
            pytest.fail(f"{reason}; CI=true, so the data must be there", pytrace=False)
        pytest.skip(reason)
    with labels.open(newline="") as handle:
        return list(csv.DictReader(handle))


def is_adult(folder: str, row: dict[str, str]) -> bool:
    from facesieve.evaluation.evaluate import is_child

    return is_child(row) is not True


@pytest.fixture(scope="session")
def deepface_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty DeepFace home: nothing there that a test did not put there."""
    home = tmp_path_factory.mktemp("deepface-home")
    previous = os.environ.get("DEEPFACE_HOME")
    os.environ["DEEPFACE_HOME"] = str(home)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    yield home
    if previous is None:
        os.environ.pop("DEEPFACE_HOME", None)
    else:
        os.environ["DEEPFACE_HOME"] = previous


@pytest.fixture(scope="session")
def analyzer(deepface_home: Path):  # type: ignore[no-untyped-def]
    """The real default detector and gender model, loaded once for the session."""
    from facesieve.config import Config
    from facesieve.judging.analyzer import load_analyzer

    return load_analyzer(Config(), gender=True)


@pytest.fixture(scope="session")
def mtcnn_analyzer(deepface_home: Path):  # type: ignore[no-untyped-def]
    """DeepFace's MTCNN with the default gender model, loaded once for the session."""
    from facesieve.config import Config
    from facesieve.judging.analyzer import load_analyzer

    return load_analyzer(Config(models={"detector": "mtcnn"}), gender=True)


def copy_images(destination: Path, picks: dict[str, list[str]]) -> list[Path]:
    """Copy named images from the shared data into a test folder."""
    copied = []
    destination.mkdir(parents=True, exist_ok=True)
    for folder, names in picks.items():
        for name in names:
            target = destination / name
            shutil.copy2(DATA / folder / name, target)
            copied.append(target)
    return copied


def facesieve_command() -> list[str]:
    return [sys.executable, "-m", "facesieve"]
