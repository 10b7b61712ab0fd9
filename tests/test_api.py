"""The Python API (`import facesieve`): its exact names, a cheap import, and `Sieve`
judging real photos with the real models, by path and by bytes, as `check` does."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import facesieve

from .conftest import DATA, labelled
from .test_startup import HEAVY

MEN = ("fairface_0001.jpg", "fairface_0007.jpg", "fairface_0010.jpg")
WOMEN = ("fairface_0002.jpg", "fairface_0004.jpg", "fairface_0016.jpg")


def test_the_public_names_are_exactly_these() -> None:
    assert facesieve.__all__ == [
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
    for name in facesieve.__all__:
        assert getattr(facesieve, name) is not None, name
    from facesieve.errors import FacesieveError
    from facesieve.judging.judge import Judgement

    assert facesieve.Judgement is Judgement and facesieve.FacesieveError is FacesieveError
    assert issubclass(facesieve.NotJudgedError, facesieve.FacesieveError)
    with pytest.raises(AttributeError):
        _ = facesieve.no_such_name  # type: ignore[attr-defined]


def test_importing_facesieve_and_its_api_imports_no_model_package() -> None:
    code = (
        "import sys, json, facesieve\n"
        "bare = sorted(m for m in sys.modules if m.startswith('facesieve.'))\n"
        "from facesieve import *\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & set(json.loads(sys.argv[1])))\n"
        "print(json.dumps({'bare': bare, 'heavy': heavy}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        check=True,
    )
    # `import facesieve` alone imports none of its modules; the API names, no model package.
    assert json.loads(result.stdout) == {"bare": [], "heavy": []}, result.stderr


@pytest.fixture(scope="module")
def sieves(deepface_home: Path) -> Iterator[dict[str, facesieve.Sieve]]:
    """One Sieve per `require`, each loading its models once for the module."""
    labelled("fairface")
    yield {require: facesieve.Sieve(require=require) for require in ("face", "man", "woman")}


@pytest.mark.models
@pytest.mark.data
def test_a_face_is_kept_and_a_cat_is_not(sieves: dict[str, facesieve.Sieve]) -> None:
    sieve = sieves["face"]
    face = DATA / "fairface" / MEN[2]
    cat = DATA / "noface" / labelled("noface")[0]["file"]
    assert sieve.keep(face) is True
    assert sieve.keep(str(cat)) is False
    judgement = sieve.judge(face)
    assert judgement.verdict is facesieve.Verdict.KEEP
    assert judgement.path == face.parent.resolve() / face.name and judgement.faces
    assert all(isinstance(f, facesieve.Face) and f.gender is None for f in judgement.faces)
    assert sieve.judge(cat).verdict is facesieve.Verdict.REJECT
    assert sieve.models["gender"] == "none"  # require = "face" loads no gender model


@pytest.mark.models
@pytest.mark.data
def test_men_and_women_on_labelled_fairface_photos(sieves: dict[str, facesieve.Sieve]) -> None:
    rows = {r["file"]: r["gender"] for r in labelled("fairface")}
    assert [rows[name] for name in MEN + WOMEN] == ["male"] * 3 + ["female"] * 3
    for name in MEN:
        photo = DATA / "fairface" / name
        assert sieves["man"].keep(photo), name
        assert sieves["woman"].judge(photo).verdict is facesieve.Verdict.REJECT, name
    for name in WOMEN:
        photo = DATA / "fairface" / name
        assert sieves["woman"].keep(photo), name
        assert sieves["man"].judge(photo).verdict is facesieve.Verdict.REJECT, name


@pytest.mark.models
@pytest.mark.data
def test_bytes_get_the_answer_their_file_gets(
    sieves: dict[str, facesieve.Sieve], tmp_path: Path
) -> None:
    from facesieve.sieve import BYTES_PATH

    photos = [DATA / "fairface" / n for n in MEN[:1] + WOMEN[:1]]
    photos.append(DATA / "noface" / labelled("noface")[0]["file"])
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_bytes(b"plain text, named .jpg\n" * 10)
    for sieve in sieves.values():
        for path in [*photos, not_an_image]:
            by_path, by_bytes = sieve.judge(path), sieve.judge(path.read_bytes())
            assert by_bytes.path == BYTES_PATH
            assert (by_bytes.verdict, by_bytes.reason, by_bytes.faces, by_bytes.sha256) == (
                by_path.verdict,
                by_path.reason,
                by_path.faces,
                by_path.sha256,
            ), path
    assert sieves["face"].judge(b"").verdict is facesieve.Verdict.UNREADABLE


@pytest.mark.models
@pytest.mark.data
def test_what_is_not_a_verdict_raises(sieves: dict[str, facesieve.Sieve], tmp_path: Path) -> None:
    sieve = sieves["face"]
    face = DATA / "fairface" / MEN[0]
    link = tmp_path / "link.jpg"
    link.symlink_to(face)
    os.mkfifo(tmp_path / "pipe.jpg")
    for path, reason in [
        (tmp_path / "missing.jpg", "no such file"),
        (link, "symlink: never followed"),
        (tmp_path / "pipe.jpg", "not a regular file"),
    ]:
        with pytest.raises(facesieve.NotJudgedError) as raised:
            sieve.keep(path)
        assert raised.value.reason == reason and raised.value.status == "skipped"
        again = pickle.loads(pickle.dumps(raised.value))
        assert (again.path, again.status, again.reason) == (path, "skipped", reason)
    # A symlinked folder the caller names is followed, as `check` follows it.
    (tmp_path / "photos").symlink_to(face.parent)
    assert sieve.keep(tmp_path / "photos" / face.name)
    assert sieve.judge(tmp_path / "photos" / face.name).path == face.parent.resolve() / face.name


@pytest.mark.models
@pytest.mark.data
def test_a_sieve_belongs_to_the_thread_that_built_it(sieves: dict[str, facesieve.Sieve]) -> None:
    errors: list[BaseException] = []

    def use() -> None:
        try:
            sieves["face"].keep(DATA / "fairface" / MEN[0])
        except RuntimeError as error:
            errors.append(error)

    thread = threading.Thread(target=use)
    thread.start()
    thread.join(60)
    assert len(errors) == 1 and "thread" in str(errors[0])


@pytest.mark.models
@pytest.mark.data
def test_from_config_reads_the_toml(tmp_path: Path, deepface_home: Path) -> None:
    config = tmp_path / "facesieve.toml"
    config.write_text('[policy]\nrequire = "woman"\n')
    sieve = facesieve.Sieve.from_config(config)
    assert sieve.config.policy.require == "woman"
    assert sieve.keep(DATA / "fairface" / WOMEN[0])
    assert not sieve.keep(DATA / "fairface" / MEN[0])
    with pytest.raises(facesieve.ConfigError):
        facesieve.Sieve.from_config(tmp_path / "absent.toml")


@pytest.mark.models
@pytest.mark.data
def test_bytes_over_the_size_limit_are_unreadable_as_their_file_is(deepface_home: Path) -> None:
    photo = DATA / "fairface" / MEN[0]
    limit = photo.stat().st_size - 1
    sieve = facesieve.Sieve(facesieve.Config(images={"max_file_bytes": limit}))
    by_path, by_bytes = sieve.judge(photo), sieve.judge(photo.read_bytes())
    assert by_path.verdict is facesieve.Verdict.UNREADABLE
    assert by_path.reason.endswith(f"too large: {limit + 1} bytes is over the {limit}-byte limit")
    assert (by_bytes.verdict, by_bytes.reason, by_bytes.sha256, by_bytes.size) == (
        by_path.verdict,
        by_path.reason,
        by_path.sha256,
        by_path.size,
    )
