"""The inspection session and the serving runtime translate onnxruntime's errors at one boundary
(`service.serving.runtime.map_run_errors`): the same failure is the same error, and status, in both."""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from service.errors import InferenceFailed, InvalidInput, ServiceError
from service.inspection.session import InspectionSession
from service.serving.runtime import OnnxModel, SessionOptions


def _adder(path: Path) -> Path:
    """z = Relu(x + y), x [N, 3] and y [M, 3] with unrelated batch names: the graph accepts shapes the
    Add cannot broadcast."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "y"], ["s"]), helper.make_node("Relu", ["s"], ["z"])],
        "adder",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", 3]),
        ],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


X = np.zeros((2, 3), np.float32)
CASES = [
    ("wrong dtype", {"x": X.astype(np.float64), "y": X}, InvalidInput, HTTPStatus.BAD_REQUEST),
    ("wrong rank", {"x": X[None], "y": X}, InvalidInput, HTTPStatus.BAD_REQUEST),
    ("missing input", {"x": X}, InvalidInput, HTTPStatus.BAD_REQUEST),
    ("fails inside", {"x": X, "y": np.zeros((3, 3), np.float32)}, InferenceFailed, HTTPStatus.INTERNAL_SERVER_ERROR),
]


@pytest.mark.parametrize(("case", "feeds", "error", "status"), CASES, ids=[c[0] for c in CASES])
def test_the_same_onnxruntime_failure_is_the_same_error_when_serving_and_inspecting(
    tmp_path: Path, case: str, feeds: dict[str, np.ndarray], error: type[ServiceError], status: HTTPStatus
) -> None:
    path = _adder(tmp_path / "model.onnx")
    serving = OnnxModel.load(path, SessionOptions(), "adder version 1")
    inspecting = InspectionSession(path, label="adder version 1")

    with pytest.raises(ServiceError) as served:
        serving.run_sync(feeds)
    with pytest.raises(ServiceError) as inspected:
        inspecting.run(feeds, ["z"])

    assert type(served.value) is type(inspected.value) is error
    assert served.value.status_code == inspected.value.status_code == status
    assert "adder version 1" in inspected.value.message
