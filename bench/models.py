"""The benchmark's models: plain MLPs built with onnx.helper from seeded random weights."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT = "input"
OUTPUT = "output"


@dataclass(frozen=True, slots=True)
class MlpShape:
    name: str
    widths: tuple[int, ...]
    """Input width, hidden widths, output width."""

    @property
    def features(self) -> int:
        return self.widths[0]


SMALL = MlpShape("mlp_small", (784, 512, 512, 10))
"""Request-bound: about 0.8 MFLOP per sample, so serving overhead dominates."""
WIDE = MlpShape("mlp_wide", (784, 4096, 4096, 10))
"""Compute-bound: about 40 MFLOP per sample, so onnxruntime's batched throughput is the limit."""


def build(shape: MlpShape, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    current = INPUT
    layers = list(zip(shape.widths[:-1], shape.widths[1:], strict=True))
    for index, (fan_in, fan_out) in enumerate(layers):
        weight = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        bias = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        initializers += [numpy_helper.from_array(weight, f"w{index}"), numpy_helper.from_array(bias, f"b{index}")]
        last = index == len(layers) - 1
        out = OUTPUT if last else f"h{index}"
        gemm_out = out if last else f"g{index}"
        nodes.append(helper.make_node("Gemm", [current, f"w{index}", f"b{index}"], [gemm_out]))
        if not last:
            nodes.append(helper.make_node("Relu", [gemm_out], [out]))
        current = out
    graph = helper.make_graph(
        nodes,
        shape.name,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", shape.features])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", shape.widths[-1]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def write_repository(root: Path, shapes: tuple[MlpShape, ...] = (SMALL, WIDE)) -> Path:
    """A model repository with version 1 of each model (no manifest: nothing to verify)."""
    for shape in shapes:
        folder = root / shape.name / "1"
        folder.mkdir(parents=True, exist_ok=True)
        onnx.save(build(shape), folder / "model.onnx")
        (root / shape.name / "config.json").write_text(json.dumps({}))
    return root


def sample(shape: MlpShape, rows: int = 1, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, shape.features), dtype=np.float32)
