"""publish(): any nn.Module becomes a complete, checked version, or nothing is written at all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from service.serving.repository import describe_example, example_names, scan_model
from tests.torch_zoo import GRUClassifier, LSTMRegressor, TiedLanguageModel, TwoHeads, trained_like
from tests.training.conftest import read_manifest
from training.errors import ExportError, ParityError, UsageError
from weightserve import Example, PublishedVersion, PublishError, publish

RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(0, 1, size=(6, 1, 8, 8)).astype(np.float32)
FEATURES = RNG.normal(size=(6, 5)).astype(np.float32)

pytestmark = pytest.mark.torch


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _two_heads(**options: Any) -> PublishedVersion:
    return publish(
        trained_like(TwoHeads()),
        {"image": IMAGES, "features": FEATURES},
        options.pop("repository"),
        "two_heads",
        input_names=["image", "features"],
        output_names=["logits", "value"],
        **options,
    )


class ExportsSomethingElse(nn.Module):
    """Adds 1 to one value, but only inside the exported graph: a parity failure at a known place."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = x * 2
        if torch.onnx.is_in_onnx_export():
            y = y + nn.functional.one_hot(torch.tensor(2), 4).to(y.dtype)
        return x + 1, y


class FixedBatch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(6, -1).sum(dim=1)


def test_a_published_version_is_complete_and_served_as_it_was_trained(tmp_path: Path) -> None:
    published = _two_heads(
        repository=tmp_path,
        task={"kind": "classification", "labels": ["a", "b", "c"]},
        metrics={"accuracy": 0.5},
        data={"name": "random"},
        hyperparameters={"epochs": 0},
        seed=7,
    )

    folder = tmp_path / "two_heads" / "1"
    assert (published.name, published.version, published.path) == ("two_heads", 1, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.onnx", "weights.safetensors"]
    manifest = read_manifest(folder)
    assert manifest == published.manifest
    assert [(t["name"], t["datatype"], t["shape"]) for t in manifest["inputs"]] == [
        ("image", "FP32", [-1, 1, 8, 8]), ("features", "FP32", [-1, 5]),
    ]  # fmt: skip
    assert [(t["name"], t["shape"]) for t in manifest["outputs"]] == [("logits", [-1, 3]), ("value", [-1, 1])]
    assert manifest["task"] == {"kind": "classification", "labels": ["a", "b", "c"]}
    assert (manifest["metrics"], manifest["dataset"], manifest["seed"]) == ({"accuracy": 0.5}, {"name": "random"}, 7)
    assert manifest["hyperparameters"] == {"epochs": 0}
    assert set(manifest["versions"]) >= {"torch", "onnx", "onnxruntime", "opset", "exporter"}
    assert manifest["versions"]["onnxruntime"] == ort.__version__
    # The example batch of 6 and generated batches of 1, 3 and 7.
    assert [(c["inputs"], c["batch_size"]) for c in manifest["parity"]["checks"]] == [
        ("example", 6), ("generated", 1), ("generated", 3), ("generated", 7),
    ]  # fmt: skip
    assert published.parity.max_abs_diff == manifest["parity"]["max_abs_diff"] <= 1e-4
    relations = {e["state_dict_key"]: e["relation"] for e in manifest["tensors"]}
    assert relations["conv.0.weight"] == relations["conv.0.bias"] == "folded"
    assert relations["classes.weight"] == "identical"
    model = onnx.load(str(folder / "model.onnx"))
    assert json.loads({p.key: p.value for p in model.metadata_props}["labels"]) == ["a", "b", "c"]

    rebuilt = TwoHeads()
    rebuilt.load_state_dict(load_file(str(folder / "weights.safetensors")))
    image, features = RNG.uniform(0, 1, (5, 1, 8, 8)).astype(np.float32), RNG.normal(size=(5, 5)).astype(np.float32)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, value = session.run(None, {"image": image, "features": features})
    with torch.no_grad():
        expected = rebuilt.eval()(torch.from_numpy(image), torch.from_numpy(features))
    np.testing.assert_allclose(logits, expected[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(value, expected[1].numpy(), atol=1e-5)
    assert [v.version for v in scan_model(tmp_path / "two_heads").versions] == [1]


def test_each_publish_is_the_next_version_and_the_module_keeps_its_mode(tmp_path: Path) -> None:
    module = TwoHeads().train()
    first = publish(
        module, [IMAGES, FEATURES], tmp_path, "m", input_names=["image", "features"], output_names=["l", "v"]
    )
    second = publish(
        module, [IMAGES, FEATURES], tmp_path, "m", input_names=["image", "features"], output_names=["l", "v"],
        finetuned_from=1,
    )  # fmt: skip
    assert (first.version, second.version) == (1, 2)
    assert read_manifest(second.path)["finetuned_from"] == 1
    assert module.training


def test_a_parity_failure_names_the_output_and_the_index_and_writes_nothing(tmp_path: Path) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    with pytest.raises(ParityError) as caught:
        publish(ExportsSomethingElse(), x, tmp_path, "broken", input_names=["x"], output_names=["shifted", "doubled"])
    message = str(caught.value)
    assert "onnxruntime differs from torch by 1 at doubled[0, 2]" in message
    assert "(torch 4, onnxruntime 5)" in message
    assert "the example inputs (batch 2)" in message
    assert _tree(tmp_path) == []


def test_a_batch_axis_the_module_fixes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"fixes the batch dimension of .y. at 6"):
        publish(FixedBatch(), np.ones((6, 4), np.float32), tmp_path, "fixed", input_names=["x"], output_names=["y"])
    assert _tree(tmp_path) == []


def test_a_generated_batch_runs_even_when_the_example_is_a_single_row(tmp_path: Path) -> None:
    published = publish(nn.Linear(5, 2), FEATURES[:1], tmp_path, "linear", input_names=["features"], output_names=["y"])
    checks = [(c.inputs, c.batch_size) for c in published.parity.checks]
    assert checks == [("example", 1), ("generated", 3), ("generated", 7)]
    dims = onnx.load(str(published.path / "model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"input_names": ["a"]}, "1 input names"),
        ({"output_names": ["logits", "logits"]}, "holds a name twice"),
        ({"output_names": ["image", "value"]}, "both an input and an output"),
        ({"name": "../escape"}, "invalid model name"),
        ({"dynamic_axes": {"nope": {0: "batch"}}}, "neither an input nor an output"),
        ({"dynamic_axes": {"image": {0: "not an identifier"}}}, "must be an identifier"),
        ({"task": "clustering"}, "task kind must be one of"),
        ({"task": {"kind": "image_to_image"}}, "needs data_range"),
        ({"data": {"when": object()}}, "dataset must be JSON-serialisable"),
        ({"finetuned_from": 3}, "version 3 does not exist"),
        ({"tolerance": -1}, "tolerance must be"),
        ({"examples": {"bad/name": {"image": IMAGES, "features": FEATURES}}}, "invalid example name"),
        ({"examples": {"one": {"image": IMAGES}}}, "missing ['features']"),
        ({"examples": {"one": Example([IMAGES, FEATURES], targets=np.zeros(6))}}, "only a classification"),
        ({"examples": {"one": [IMAGES[:, :, :4], FEATURES]}}, "does not run on the exported model"),
        (
            {"task": "classification", "examples": {"one": Example([IMAGES, FEATURES], targets=np.full(6, 9))}},
            "targets must be class indices between 0 and 2",
        ),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {
        "input_names": ["image", "features"], "output_names": ["logits", "value"], "name": "two_heads",
    }  # fmt: skip
    arguments |= options
    name = arguments.pop("name")
    with pytest.raises(UsageError) as caught:
        publish(TwoHeads(), [IMAGES, FEATURES], tmp_path, name, **arguments)
    assert message in str(caught.value)
    assert isinstance(caught.value, PublishError)
    assert _tree(tmp_path) == []


def test_a_missing_repository_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        publish(nn.Linear(5, 2), FEATURES, tmp_path / "absent", "m", input_names=["x"], output_names=["y"])
    assert not (tmp_path / "absent").exists()


def test_examples_are_v2_requests_the_repository_lists(tmp_path: Path) -> None:
    labels = np.array([0, 1, 2, 0, 1, 2])
    published = _two_heads(
        repository=tmp_path,
        task="classification",
        examples={
            "first": Example({"image": IMAGES[:1], "features": FEATURES[:1]}, description="the first row"),
            "pair": [torch.from_numpy(IMAGES[:2]), torch.from_numpy(FEATURES[:2])],
            "labelled": Example([IMAGES, FEATURES], targets=labels, description="six rows with labels"),
        },
    )
    model_dir = tmp_path / "two_heads"
    assert [p.name for p in published.examples] == ["first.json", "pair.json", "labelled.json"]
    assert example_names(model_dir) == ["first", "labelled", "pair"]
    body = json.loads((model_dir / "examples" / "first.json").read_text())
    assert body["parameters"] == {"description": "the first row"}
    image, features = body["inputs"]
    assert (image["name"], image["datatype"], image["shape"]) == ("image", "FP32", [1, 1, 8, 8])
    np.testing.assert_array_equal(np.asarray(image["data"], np.float32), IMAGES[:1].ravel())
    np.testing.assert_array_equal(np.asarray(features["data"], np.float32), FEATURES[:1].ravel())
    listed = describe_example(model_dir, "labelled", 1 << 20)
    assert listed["kind"] == "evaluate"
    assert listed["targets"] == {"name": "targets", "datatype": "INT64", "shape": [6]}
    assert [t["name"] for t in listed["inputs"]] == ["image", "features"]
    assert describe_example(model_dir, "pair", 1 << 20)["kind"] == "infer"
    assert [v.version for v in scan_model(model_dir).versions] == [1]


def test_a_later_version_replaces_examples_of_the_same_name_and_keeps_the_others(tmp_path: Path) -> None:
    _two_heads(repository=tmp_path, examples={"a": [IMAGES[:1], FEATURES[:1]], "b": [IMAGES[:2], FEATURES[:2]]})
    _two_heads(repository=tmp_path, examples={"a": [IMAGES[3:4], FEATURES[3:4]]})
    folder = tmp_path / "two_heads" / "examples"
    assert sorted(p.name for p in folder.iterdir()) == ["a.json", "b.json"]
    data = json.loads((folder / "a.json").read_text())["inputs"][1]["data"]
    np.testing.assert_array_equal(np.asarray(data, np.float32), FEATURES[3])


def test_tied_weights_are_stored_under_both_keys_and_marked_shared(tmp_path: Path) -> None:
    module = trained_like(TiedLanguageModel())
    tokens = RNG.integers(0, 64, size=(4, 12))
    published = publish(module, tokens, tmp_path, "lm", input_names=["tokens"], output_names=["logits"])

    state = load_file(str(published.path / "weights.safetensors"))
    torch.testing.assert_close(state["embed.weight"], state["lm_head.weight"])
    fresh = TiedLanguageModel()
    fresh.load_state_dict(state)
    assert fresh.lm_head.weight is fresh.embed.weight
    entries = {e["state_dict_key"]: e for e in published.manifest["tensors"]}
    assert entries["embed.weight"]["shared_with"] == ["lm_head.weight"]
    assert entries["lm_head.weight"]["shared_with"] == ["embed.weight"]
    # The lookup table and the output layer's transposed copy, each mapped to its own key.
    assert entries["embed.weight"]["relation"] == "identical"
    assert entries["lm_head.weight"]["relation"] == "transposed"
    assert entries["embed.weight"]["onnx_initializer"] != entries["lm_head.weight"]["onnx_initializer"]
    assert entries["norm.weight"]["shared_with"] is None


@pytest.mark.parametrize(("module", "gates"), [(GRUClassifier(), 3), (LSTMRegressor(), 4)])
def test_recurrent_weights_are_found_packed_in_the_onnx_layout(tmp_path: Path, module: nn.Module, gates: int) -> None:
    published = publish(
        trained_like(module), RNG.normal(size=(4, 10, 6)).astype(np.float32), tmp_path, "rnn",
        input_names=["series"], output_names=["out"],
    )  # fmt: skip
    graph = onnx.load(str(published.path / "model.onnx")).graph
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    state = module.state_dict()
    for entry in published.manifest["tensors"]:
        key = entry["state_dict_key"]
        if not key.startswith("rnn.weight"):
            continue
        assert entry["relation"] == "packed", key
        # The same gate blocks, in ONNX's gate order.
        packed = np.split(initializers[entry["onnx_initializer"]][0], gates)
        trained = np.split(state[key].numpy(), gates)
        assert sorted(b.tobytes() for b in packed) == sorted(b.tobytes() for b in trained)


class BagOfWords(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(tokens).mean(dim=1))  # type: ignore[no-any-return]


def test_more_dynamic_axes_than_the_batch(tmp_path: Path) -> None:
    module = BagOfWords().eval()
    published = publish(
        module, RNG.integers(0, 50, size=(4, 9)), tmp_path, "bag", input_names=["token-ids"], output_names=["logits"],
        dynamic_axes={"token-ids": [0, 1], "logits": {0: "batch"}},
    )  # fmt: skip
    assert published.manifest["inputs"] == [{"name": "token-ids", "datatype": "INT64", "shape": [-1, -1]}]
    session = ort.InferenceSession(str(published.path / "model.onnx"), providers=["CPUExecutionProvider"])
    longer = RNG.integers(0, 50, size=(3, 20))
    (logits,) = session.run(None, {"token-ids": longer})
    with torch.no_grad():
        expected = module(torch.from_numpy(longer)).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-5)
