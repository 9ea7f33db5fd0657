"""Warm-up never refuses a model inference can serve; configured samples must run; batching only where
axis 0 really is a batch axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.errors import ModelLoadError
from service.serving.model_config import ModelConfig
from service.serving.runtime import OnnxModel, SessionOptions
from service.serving.warmup import guesses, rows_are_independent, warm_up


def _load(model: onnx.ModelProto, tmp_path: Path) -> OnnxModel:
    path = tmp_path / f"{model.graph.name}.onnx"
    onnx.save(model, path)
    return OnnxModel.load(path, SessionOptions(intra_op_threads=1), model.graph.name)


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           initializers: list[onnx.TensorProto], name: str) -> onnx.ModelProto:  # fmt: skip
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def reflect_pad_model() -> onnx.ModelProto:
    """Reflect padding of 32 needs more than 32 samples: a length of 1 fails inside the model."""
    return _model(
        [
            helper.make_node("Pad", ["wave", "pads"], ["padded"], mode="reflect"),
            helper.make_node("ReduceMean", ["padded", "axis1"], ["y"], keepdims=1),
        ],
        [helper.make_tensor_value_info("wave", TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [
            numpy_helper.from_array(np.array([0, 32, 0, 32], np.int64), "pads"),
            numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        ],
        "reflect",
    )


def time_first_model() -> onnx.ModelProto:
    """A running sum over axis 0 (time): stacking two requests along axis 0 mixes their sequences."""
    return _model(
        [helper.make_node("CumSum", ["seq", "axis0"], ["y"])],
        [helper.make_tensor_value_info("seq", TensorProto.FLOAT, ["time", "batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["time", "batch", 3])],
        [numpy_helper.from_array(np.array(0, np.int64), "axis0")],
        "time_first",
    )


def row_wise_model() -> onnx.ModelProto:
    return _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2), "w")],
        "row_wise",
    )


def test_a_model_that_needs_a_longer_input_warms_up_with_one(tmp_path: Path) -> None:
    model = _load(reflect_pad_model(), tmp_path)
    outcome = warm_up(model, ())
    assert outcome.warning is None
    assert outcome.feeds is not None
    assert outcome.feeds["wave"].shape == (1, 64)  # 1 and 16 fail, 64 runs; the batch axis stays 1


def test_a_model_no_guess_runs_is_served_with_a_warning(tmp_path: Path) -> None:
    # A fixed length of 8 can never be padded by 32: nothing to grow, so warm-up gives up, politely.
    fixed = _model(
        list(reflect_pad_model().graph.node),
        [helper.make_tensor_value_info("wave", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        list(reflect_pad_model().graph.initializer),
        "fixed",
    )
    model = _load(fixed, tmp_path)
    outcome = warm_up(model, ())
    assert outcome.feeds is None
    assert outcome.warning is not None
    assert "warm-up skipped" in outcome.warning


def test_configured_samples_must_run(tmp_path: Path) -> None:
    model = _load(reflect_pad_model(), tmp_path)
    config = ModelConfig.model_validate(
        {"warmup": [{"name": "one second", "inputs": {"wave": {"datatype": "FP32", "shape": [2, 16000], "values": "random"}}}]}
    )
    outcome = warm_up(model, config.warmup)
    assert outcome.feeds is not None
    assert outcome.feeds["wave"].shape == (2, 16000)
    short = ModelConfig.model_validate(
        {"warmup": [{"name": "too short", "inputs": {"wave": {"datatype": "FP32", "shape": [1, 4], "values": [1, 2, 3, 4]}}}]}
    )
    with pytest.raises(ModelLoadError, match="warm-up sample 'too short' failed"):
        warm_up(model, short.warmup)


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        ({"audio": {"datatype": "FP32", "shape": [1, 100]}}, "names inputs"),
        ({"wave": {"datatype": "INT64", "shape": [1, 100]}}, "is INT64"),
        ({"wave": {"datatype": "FP32", "shape": [1, 100, 1]}}, "has shape"),
        ({"wave": {"datatype": "FP32", "shape": [1, 3], "values": [1, 2]}}, "2 values"),
    ],
)
def test_a_sample_that_does_not_fit_the_signature_fails_the_load(tmp_path: Path, sample: dict[str, object], message: str) -> None:
    model = _load(reflect_pad_model(), tmp_path)
    config = ModelConfig.model_validate({"warmup": [{"name": "s", "inputs": sample}]})
    with pytest.raises(ModelLoadError, match=message):
        warm_up(model, config.warmup)


def test_a_sample_shape_must_be_concrete() -> None:
    with pytest.raises(ValueError, match="concrete"):
        ModelConfig.model_validate({"warmup": [{"name": "s", "inputs": {"x": {"datatype": "FP32", "shape": [-1, 3]}}}]})


def test_alike_named_dimensions_take_one_size(tmp_path: Path) -> None:
    state_model = _model(
        [helper.make_node("Gather", ["state", "zero"], ["h"], axis=0), helper.make_node("Add", ["audio", "h"], ["y"])],
        [
            helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "width"]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", "width"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "width"])],
        [numpy_helper.from_array(np.array(0, np.int64), "zero")],
        "state",
    )
    model = _load(state_model, tmp_path)
    first = next(iter(guesses(model.inputs)))
    assert {name: array.shape for name, array in first.items()} == {"audio": (1, 1), "state": (2, 1, 1)}
    grown = list(guesses(model.inputs))[2]
    assert {name: array.shape for name, array in grown.items()} == {"audio": (1, 64), "state": (2, 1, 64)}


def test_batching_is_checked_against_the_model_itself(tmp_path: Path) -> None:
    row_wise = _load(row_wise_model(), tmp_path)
    assert rows_are_independent(row_wise, {"x": np.zeros((1, 3), np.float32)}) is None
    time_first = _load(time_first_model(), tmp_path)
    reason = rows_are_independent(time_first, {"seq": np.zeros((1, 1, 3), np.float32)})
    assert reason is not None
    assert "not" in reason or "no batch axis" in reason


def three_rows_model() -> onnx.ModelProto:
    """``x`` [N, 4] reshaped to [3, -1]: runs for N = 3, never for the guesses' batch of 1."""
    return _model(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, None])],
        [numpy_helper.from_array(np.array([3, -1], np.int64), "shape")],
        "three_rows",
    )


async def test_a_model_served_without_warm_up_says_so_in_the_index_and_metadata(tmp_path: Path) -> None:
    from litestar.testing import AsyncTestClient

    from service.app import create_app
    from service.settings import Settings

    for name, model in (("three_rows", three_rows_model()), ("reflect", reflect_pad_model())):
        (tmp_path / name / "1").mkdir(parents=True)
        onnx.save(model, tmp_path / name / "1" / "model.onnx")
    async with AsyncTestClient(app=create_app(Settings(repository=tmp_path))) as client:
        index = {e["name"]: e for e in (await client.post("/v2/repository/index", json={})).json()}
        assert index["three_rows"]["state"] == "READY"
        assert index["three_rows"]["reason"].startswith("warning: warm-up skipped")
        assert index["reflect"] == {"name": "reflect", "version": "1", "state": "READY", "reason": ""}
        metadata = (await client.get("/v2/models/three_rows")).json()
        assert metadata["parameters"]["warnings"].startswith("warm-up skipped")
        assert "warnings" not in (await client.get("/v2/models/reflect")).json()["parameters"]
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 4], "data": list(range(12))}]}
        answer = await client.post("/v2/models/three_rows/infer", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["shape"] == [3, 4]
