"""Tiny real ONNX models for the deployment tests, written as a model repository."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18


def write_identity_chain(repository: Path, name: str, width: int, depth: int) -> Path:
    """`y = x @ I @ I ...` (`depth` dense MatMuls by the identity): exact output, tunable cost.

    Input `x` FP32 [-1, width], output `y` FP32 [-1, width]; y equals x bit for bit, so a test
    can check every answer, and each row costs depth * width**2 multiply-adds.
    """
    identity = numpy_helper.from_array(np.eye(width, dtype=np.float32), "identity")
    nodes = []
    previous = "x"
    for i in range(depth):
        output = "y" if i == depth - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [previous, "identity"], [output], name=f"matmul_{i}"))
        previous = output
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=[identity],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path = repository / name / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
