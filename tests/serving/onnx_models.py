"""Tiny ONNX models for lifecycle tests, built with onnx.helper; their output names their version."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WIDTH = 4


def _save(model: onnx.ModelProto, path: Path) -> None:
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, os.fspath(path))


def version_model(value: float, *, slow: int = 0) -> onnx.ModelProto:
    """``y = x + value`` for ``x`` FP32 [-1, 4]; ``slow`` > 0 adds input-dependent matmuls of that size."""
    nodes = [helper.make_node("Add", ["x", "offset"], ["base"])]
    inits = [numpy_helper.from_array(np.array([value], dtype=np.float32), "offset")]
    if slow:
        # Work that depends on the input, so onnxruntime cannot fold it away at load time.
        inits += [
            numpy_helper.from_array(np.array([slow, slow], dtype=np.int64), "square"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
            numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        ]
        nodes += [
            helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
            helper.make_node("Mul", ["total", "zero"], ["nothing"]),
            helper.make_node("Add", ["nothing", "one"], ["fill"]),
            helper.make_node("Expand", ["fill", "square"], ["m0"]),
            helper.make_node("MatMul", ["m0", "m0"], ["m1"]),
            helper.make_node("MatMul", ["m1", "m0"], ["m2"]),
            helper.make_node("MatMul", ["m2", "m0"], ["m3"]),
            helper.make_node("ReduceSum", ["m3"], ["heavy"], keepdims=0),
            helper.make_node("Mul", ["heavy", "zero"], ["ignored"]),
            helper.make_node("Add", ["base", "ignored"], ["y"]),
        ]
    else:
        nodes[0].output[0] = "y"
    graph = helper.make_graph(
        nodes,
        "version_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, WIDTH])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def write_version(root: Path, name: str, version: int, *, value: float | None = None, slow: int = 0) -> Path:
    """Write ``root/name/version/model.onnx`` whose output is ``x + value`` (default: the version)."""
    directory = root / name / str(version)
    _save(version_model(float(version if value is None else value), slow=slow), directory / "model.onnx")
    return directory


def publish_version(root: Path, staging: Path, name: str, version: int) -> Path:
    """Build a version in ``staging`` and rename it into the repository in one step, as a trainer would."""
    built = write_version(staging, name, version)
    target = root / name / str(version)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(built, target)
    return target


def retire_version(root: Path, trash: Path, name: str, version: int) -> None:
    """Take a version folder out of the repository in one rename, then delete it."""
    trash.mkdir(parents=True, exist_ok=True)
    moved = trash / f"{name}-{version}"
    os.rename(root / name / str(version), moved)
    shutil.rmtree(moved)


def write_config(root: Path, name: str, config: dict[str, object]) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "config.json").write_text(json.dumps(config), encoding="utf-8")


def infer_body(rows: int = 1) -> dict[str, object]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, WIDTH], "data": [0.0] * (rows * WIDTH)}]}
