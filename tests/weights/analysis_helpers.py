"""Models and waits shared by the background-analysis tests."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.weights.conftest import init

SHAPES = ((96, 64), (64, 80), (80, 40))


def mlp_weights(seed: int = 0, shapes: tuple[tuple[int, int], ...] = SHAPES) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_t(4, size=shape) * 0.1).astype(np.float32) for shape in shapes]


def write_mlp(folder: Path, weights: list[np.ndarray], external: bool = False) -> Path:
    """x -> MatMul W0 -> Relu -> MatMul W1 -> ... (weights stored [in, out])."""
    nodes, inits = [], []
    current = "x"
    for i, weight in enumerate(weights):
        inits.append(init(f"w{i}", weight))
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [f"h{i}"], name=f"/fc{i}/MatMul"))
        current = f"h{i}"
        if i < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"r{i}"]))
            current = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", weights[0].shape[0]])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, ["N", weights[-1].shape[1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    if external:
        onnx.save(model, str(path), save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


def wait_done(poll: Any, timeout_s: float = 120.0) -> dict[str, Any]:
    """Call ``poll()`` until the job it returns is done (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status: dict[str, Any] = poll()
        if status["state"] == "done":
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"analysis not done after {timeout_s} s: {status}")
        time.sleep(0.05)


def thread_nices(pid: int) -> list[int]:
    """The nice value of every thread of a process (Linux keeps it per thread)."""
    nices = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        nices.append(int(fields[16]))  # field 19 of stat; fields[0] is field 3
    return nices


class Exploding:
    """Unpickles as a hard exit: stands for an analysis process killed mid-work (OOM, a crash in a
    native library). Only the analysis process unpickles a task, so only it dies."""

    name = "exploding"

    def __reduce__(self) -> tuple[Any, ...]:
        return (os._exit, (3,))


class Sleeping:
    """Unpickles as a ten-minute sleep: an analysis process busy for longer than any test."""

    name = "sleeping"

    def __reduce__(self) -> tuple[Any, ...]:
        return (time.sleep, (600,))
