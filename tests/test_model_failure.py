"""The seed script's failure: a model that cannot load is never a verdict."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from facesieve.errors import ExitCode

from .cli_util import run_cli, tree
from .conftest import DATA, labelled

pytestmark = [pytest.mark.data]


def test_missing_deepface_gender_weights_stop_the_scan_before_any_file_is_touched(
    tmp_path: Path,
) -> None:
    labelled("fairface")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("fairface_0010.jpg", "fairface_0002.jpg"):
        shutil.copy2(DATA / "fairface" / name, inbox / name)
    shutil.copy2(DATA / "noface" / "cat.4001.jpg", inbox / "cat.jpg")
    empty_home = tmp_path / "home"
    empty_home.mkdir()
    config = tmp_path / "c.toml"
    config.write_text(f'[models]\ngender = "deepface"\nhome = "{empty_home}"\n')
    before = {p: p.stat().st_mtime_ns for p in inbox.rglob("*")}
    snapshot = tree(inbox)

    run = run_cli("scan", str(inbox), "--config", str(config), "--require", "man", "--json")

    assert run.code == ExitCode.MODEL == 4
    assert "gender_model_weights.h5" in run.stderr
    assert run.records == []
    assert tree(inbox) == snapshot
    assert {p: p.stat().st_mtime_ns for p in inbox.rglob("*")} == before
    assert not (inbox / ".facesieve").exists()
    assert list(empty_home.iterdir()) == []  # no half-downloaded weights either


def test_bad_config_has_its_own_exit_code(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[policy]\nrequire = "men"\n')
    run = run_cli("scan", str(tmp_path), "--config", str(config))
    assert run.code == ExitCode.CONFIG == 3
    assert "policy.require" in run.stderr


def test_missing_provisionable_weights_name_the_fix(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[models]\ndetector = "opencv"\nhome = "{tmp_path / "home"}"\n')
    run = run_cli("check", str(tmp_path / "x.jpg"), "--config", str(config))
    assert run.code == ExitCode.MODEL
    assert "facesieve models --provision" in run.stderr
    provision = run_cli("models", "--config", str(config), "--provision")
    assert provision.code == 0, provision.stderr
    assert (
        tmp_path / "home" / ".deepface" / "weights" / "haarcascade_frontalface_default.xml"
    ).is_file()
