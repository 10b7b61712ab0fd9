"""`facesieve check` for scripts: clamdscan's exit codes, any number of files, streamed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .cli_util import run_cli
from .conftest import DATA, labelled

pytestmark = [pytest.mark.models, pytest.mark.data]


def face_and_cat(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    person = next(r for r in labelled("utkface") if int(r["age"]) >= 20)["file"]
    face, cat = folder / "face.jpg", folder / "cat.jpg"
    shutil.copy2(DATA / "utkface" / person, face)
    shutil.copy2(DATA / "noface" / labelled("noface")[0]["file"], cat)
    return face, cat


def test_exit_codes_follow_clamdscan(tmp_path: Path, deepface_home: Path) -> None:
    face, cat = face_and_cat(tmp_path)
    kept = run_cli("check", str(face))
    assert kept.code == 0, kept.stderr[-2000:]
    found = run_cli("check", str(face), str(cat))
    assert found.code == 1, found.stderr[-2000:]
    missing = run_cli("check", str(face), str(tmp_path / "no-such.jpg"))
    assert missing.code == 2
    assert "no-such.jpg: not judged: no such file" in missing.stderr
    assert "vanished" not in missing.stderr
    nothing = run_cli("check")
    assert nothing.code == 2 and "IMAGE" in nothing.stderr


def test_paths_from_a_file_or_standard_input(tmp_path: Path, deepface_home: Path) -> None:
    face, cat = face_and_cat(tmp_path)
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"%s\n%s\n" % (os.fsencode(face), os.fsencode(cat)))
    run = run_cli("check", "--paths-from", str(listing), "--json")
    assert run.code == 1, run.stderr[-2000:]
    assert [Path(r["path"]).name for r in run.records] == ["face.jpg", "cat.jpg"]
    piped = subprocess.run(
        [sys.executable, "-m", "facesieve", "check", "--paths-from", "-", "-0", "--json"],
        input=os.fsencode(face) + b"\0",
        capture_output=True,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr[-2000:]
    assert b'"verdict": "keep"' in piped.stdout


@pytest.mark.slow
def test_two_thousand_files_in_one_call(tmp_path: Path, deepface_home: Path) -> None:
    # 1,500 files in one call died with SIGSEGV: onnxruntime parses the process's
    # command line at import, one stack frame per byte. ~200 KB of paths here.
    rows = labelled("utkface")
    folder = tmp_path / ("a-long-folder-name-as-uploads-often-have" * 2)
    folder.mkdir()
    paths = []
    for n in range(2000):
        path = folder / f"{n:04d}-{rows[n % len(rows)]['file']}"
        os.link(DATA / "utkface" / rows[n % len(rows)]["file"], path)
        paths.append(path)
    assert sum(len(str(p)) + 1 for p in paths) > 64 * 1024
    # --require man: the gender model loads, and with it onnxruntime.
    run = run_cli("check", *map(str, paths), "--json", "--require", "man")
    assert run.code in (0, 1), run.stderr[-3000:]
    assert [Path(r["path"]).name for r in run.records] == [p.name for p in paths]
    assert all(r["verdict"] in ("keep", "review", "reject") for r in run.records)


def test_a_symlinked_folder_the_caller_names_is_followed_but_a_symlinked_file_is_not(
    tmp_path: Path, deepface_home: Path
) -> None:
    # ../shared may itself sit behind a symlink; the caller's own path is trusted.
    face, _ = face_and_cat(tmp_path / "real")
    (tmp_path / "linked").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real" / "link.jpg").symlink_to(face)
    through = run_cli("check", "--json", str(tmp_path / "linked" / "face.jpg"))
    assert through.code == 0, through.stderr[-2000:]
    assert [r["verdict"] for r in through.records] == ["keep"]
    assert through.records[0]["path"] == str(face)
    symlinked_file = run_cli("check", str(tmp_path / "linked" / "link.jpg"))
    assert symlinked_file.code == 2
    assert "symlink: never followed" in symlinked_file.stderr
