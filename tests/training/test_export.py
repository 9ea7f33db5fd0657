"""The exported graphs: names, dynamic batch axis, metadata, and onnxruntime matching torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from sklearn.datasets import load_diabetes, load_digits

from tests.training.conftest import MODELS, REPOSITORY
from training.architectures import DigitsCNN, load_trained

NAMES = {
    "digits_cnn": ("image", [1, 8, 8], "logits", [10]),
    "diabetes_mlp": ("features", [10], "prediction", [1]),
    "digits_autoencoder": ("image", [1, 8, 8], "reconstruction", [1, 8, 8]),
}

pytestmark = pytest.mark.torch


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _raw_inputs(name: str, rows: int) -> np.ndarray:
    """Raw data exactly as the data set stores it: what a client sends."""
    if name == "diabetes_mlp":
        return np.asarray(load_diabetes(scaled=False).data[:rows], dtype=np.float32)
    return np.asarray(load_digits().images[:rows], dtype=np.float32)[:, None, :, :]


@pytest.mark.parametrize("name", MODELS)
def test_graph_has_named_fp32_tensors_with_a_symbolic_batch_axis(tiny_repository: Path, name: str) -> None:
    model = onnx.load(str(tiny_repository / name / "1" / "model.onnx"))
    input_name, input_rest, output_name, output_rest = NAMES[name]
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert (graph_input.name, graph_output.name) == (input_name, output_name)
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph_output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    in_dims, out_dims = _dims(graph_input), _dims(graph_output)
    assert isinstance(in_dims[0], str)
    assert in_dims[0] == out_dims[0]
    assert (in_dims[1:], out_dims[1:]) == (input_rest, output_rest)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 17


@pytest.mark.parametrize("name", MODELS)
def test_no_stack_traces_with_machine_paths(tiny_repository: Path, name: str) -> None:
    model = onnx.load(str(tiny_repository / name / "1" / "model.onnx"))
    keys = {entry.key for node in model.graph.node for entry in node.metadata_props}
    assert "pkg.torch.onnx.stack_trace" not in keys
    assert "pkg.torch.onnx.name_scopes" in keys  # module paths for the weights view stay


def test_classifier_labels_are_in_the_metadata(tiny_repository: Path) -> None:
    model = onnx.load(str(tiny_repository / "digits_cnn" / "1" / "model.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["labels"]) == [str(d) for d in range(10)]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("rows", [1, 7])
def test_onnxruntime_matches_the_rebuilt_torch_module_on_raw_inputs(
    tiny_repository: Path, name: str, rows: int
) -> None:
    folder = tiny_repository / name / "1"
    inputs = _raw_inputs(name, rows)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {NAMES[name][0]: inputs})
    with torch.no_grad():
        expected = load_trained(folder)(torch.from_numpy(inputs)).numpy()
    assert got.shape == expected.shape
    assert got.shape[0] == rows
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_autoencoder_output_stays_on_the_pixel_scale(tiny_repository: Path) -> None:
    session = ort.InferenceSession(str(tiny_repository / "digits_autoencoder" / "1" / "model.onnx"))
    noisy = np.random.default_rng(0).uniform(0, 16, size=(4, 1, 8, 8)).astype(np.float32)
    (out,) = session.run(None, {"image": noisy})
    assert out.min() >= 0.0
    assert out.max() <= 16.0


def test_cnn_features_feed_the_pool_after_a_relu(tiny_repository: Path) -> None:
    """Class-activation maps need the post-ReLU map that the global average pool reduces."""
    module = load_trained(tiny_repository / "digits_cnn" / "1")
    assert isinstance(module, DigitsCNN)
    image = torch.from_numpy(_raw_inputs("digits_cnn", 3))
    with torch.no_grad():
        maps = module.features(image / 16.0)
        logits = module(image)
        recomputed = module.head(maps.mean(dim=(2, 3)))
    assert isinstance(module.features[-1], torch.nn.ReLU)
    assert maps.min() >= 0
    torch.testing.assert_close(logits, recomputed)


@pytest.mark.parametrize("version_dir", ["digits_cnn/1", "digits_cnn/2", "diabetes_mlp/1", "digits_autoencoder/1"])
def test_shipped_onnx_matches_its_rebuilt_torch_module(version_dir: str) -> None:
    folder = REPOSITORY / version_dir
    name = version_dir.split("/")[0]
    inputs = _raw_inputs(name, 16)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {NAMES[name][0]: inputs})
    with torch.no_grad():
        expected = load_trained(folder)(torch.from_numpy(inputs)).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
