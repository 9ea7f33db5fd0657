"""The architectures people train, published and served: ResNet-18, MobileNetV3-small, a GRU and an
LSTM, a Transformer encoder classifier, a language model with tied embeddings, a two-input two-output
model. Each is answered by a running server as torch answers (JSON and binary tensors), shows its
trained tensors beside the effective ones in the weights view, and answers /activations."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton
from torch import nn

from tests import torch_zoo as zoo
from tests.server import RunningServer, serve
from weightserve import publish

pytestmark = [pytest.mark.torch, pytest.mark.slow]

Inputs = Callable[[np.random.Generator, int], list[np.ndarray]]


def _images(side: int, channels: int = 3) -> Inputs:
    return lambda rng, rows: [rng.normal(size=(rows, channels, side, side)).astype(np.float32)]


def _series(rng: np.random.Generator, rows: int) -> list[np.ndarray]:
    return [rng.normal(size=(rows, 10, 6)).astype(np.float32)]


def _tokens(vocab: int, length: int) -> Inputs:
    return lambda rng, rows: [rng.integers(0, vocab, size=(rows, length))]


def _image_and_features(rng: np.random.Generator, rows: int) -> list[np.ndarray]:
    return [rng.uniform(0, 1, (rows, 1, 8, 8)).astype(np.float32), rng.normal(size=(rows, 5)).astype(np.float32)]


@dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]
    inputs: Inputs
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


CASES = {
    "resnet18": Case(zoo.ResNet18, _images(64), ("image",), ("logits",)),
    "mobilenet_v3_small": Case(zoo.MobileNetV3Small, _images(64), ("image",), ("logits",)),
    "gru": Case(zoo.GRUClassifier, _series, ("series",), ("logits",)),
    "lstm": Case(zoo.LSTMRegressor, _series, ("series",), ("value",)),
    "transformer": Case(zoo.TransformerClassifier, _tokens(100, 16), ("tokens",), ("logits",)),
    "tied_lm": Case(zoo.TiedLanguageModel, _tokens(64, 12), ("tokens",), ("logits",)),
    "two_heads": Case(zoo.TwoHeads, _image_and_features, ("image", "features"), ("logits", "value")),
}
CNNS = ("resnet18", "mobilenet_v3_small", "two_heads")


@dataclass
class Zoo:
    server: RunningServer
    modules: dict[str, nn.Module]


@pytest.fixture(scope="module")
def zoo_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zoo]:
    root = tmp_path_factory.mktemp("zoo")
    modules = {}
    for seed, (name, case) in enumerate(CASES.items()):
        torch.manual_seed(seed)
        module = zoo.trained_like(case.build(), seed)
        example = case.inputs(np.random.default_rng(seed), 4)
        publish(module, example, root, name, input_names=case.input_names, output_names=case.output_names)
        modules[name] = module
    with serve(root, tmp_path_factory.mktemp("logs"), ready_timeout_s=180) as server:
        yield Zoo(server, modules)


def _torch(module: nn.Module, inputs: list[np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        result = module.eval()(*[torch.from_numpy(a) for a in inputs])
    return [t.numpy() for t in (result if isinstance(result, tuple) else (result,))]


def _json_body(case: Case, inputs: list[np.ndarray]) -> dict[str, Any]:
    tensors = []
    for name, array in zip(case.input_names, inputs, strict=True):
        datatype = "INT64" if array.dtype == np.int64 else "FP32"
        tensors.append({"name": name, "shape": list(array.shape), "datatype": datatype, "data": array.ravel().tolist()})
    return {"inputs": tensors}


@pytest.mark.parametrize("name", CASES)
def test_the_server_answers_as_torch_does_in_json_and_binary(zoo_served: Zoo, name: str) -> None:
    case = CASES[name]
    inputs = case.inputs(np.random.default_rng(100), 3)
    expected = _torch(zoo_served.modules[name], inputs)

    response = httpx.post(
        f"{zoo_served.server.base_url}/v2/models/{name}/infer", json=_json_body(case, inputs), timeout=60
    )
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    for output, want in zip(case.output_names, expected, strict=True):
        got = np.asarray(outputs[output]["data"], np.float32).reshape(outputs[output]["shape"])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)

    client = triton.InferenceServerClient(zoo_served.server.url)
    try:
        requested = []
        for input_name, array in zip(case.input_names, inputs, strict=True):
            tensor = triton.InferInput(input_name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32")
            tensor.set_data_from_numpy(array, binary_data=True)
            requested.append(tensor)
        wanted = [triton.InferRequestedOutput(o, binary_data=True) for o in case.output_names]
        result = client.infer(name, requested, outputs=wanted)
    finally:
        client.close()
    for output, want in zip(case.output_names, expected, strict=True):
        np.testing.assert_allclose(result.as_numpy(output), want, rtol=0, atol=1e-4)


def _weights(zoo_served: Zoo, name: str) -> dict[str, Any]:
    response = httpx.get(f"{zoo_served.server.base_url}/v2/models/{name}/weights", timeout=300)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _convs_with_batchnorm(module: nn.Module) -> list[str]:
    """Conv modules registered right before a BatchNorm (what the exporter folds)."""
    named = list(module.named_modules())
    return [
        name
        for (name, m), (_, after) in itertools.pairwise(named)
        if isinstance(m, nn.Conv2d) and isinstance(after, nn.BatchNorm2d)
    ]


@pytest.mark.parametrize("name", CASES)
def test_the_weights_view_shows_every_trained_tensor_beside_the_effective_one(zoo_served: Zoo, name: str) -> None:
    body = _weights(zoo_served, name)
    module = zoo_served.modules[name]
    trained = {t["state_dict_key"]: t for t in body["trained"]}
    floats = {k for k, v in module.state_dict().items() if v.is_floating_point()}
    assert set(trained) == floats
    effective = {t["id"]: t for t in body["tensors"]}
    for key, tensor in trained.items():
        if tensor["relation"] != "absent":
            assert tensor["effective_id"] in effective, key
            assert effective[tensor["effective_id"]]["state_dict_key"] is not None
    norms = {
        f"{prefix}.{key}"
        for prefix, m in module.named_modules()
        if isinstance(m, nn.BatchNorm2d)
        for key in m.state_dict()
    }
    # Every parameter reached the graph in some form; BatchNorm's only folded into its conv.
    missing = [k for k, _ in module.named_parameters() if k not in norms and trained[k]["relation"] == "absent"]
    assert missing == []


@pytest.mark.parametrize("name", CNNS)
def test_batchnorm_is_recognised_as_folded_and_the_conv_keeps_its_module(zoo_served: Zoo, name: str) -> None:
    body = _weights(zoo_served, name)
    convs = _convs_with_batchnorm(zoo_served.modules[name])
    assert convs
    trained = {t["state_dict_key"]: t for t in body["trained"]}
    effective = {t["id"]: t for t in body["tensors"]}
    layers = {t["id"]: layer for layer in body["layers"] for t in layer["tensors"] if t["role"] == "weight"}
    for conv in convs:
        weight = trained[f"{conv}.weight"]
        assert weight["relation"] == "folded", conv
        norm = weight["folded_from"][0].rpartition(".")[0]
        assert weight["folded_from"] == [f"{norm}.{p}" for p in ("weight", "bias", "running_mean", "running_var")]
        folded = effective[weight["effective_id"]]
        assert folded["folded"]["from"] == weight["folded_from"]
        assert folded["module_path"] == conv
        assert layers[folded["id"]]["op_type"] == "Conv"
        assert layers[folded["id"]]["module_path"] == conv != norm
    assert body["summary"]["folded"] >= len(convs)


def test_the_tied_embedding_is_shown_shared(zoo_served: Zoo) -> None:
    trained = {t["state_dict_key"]: t for t in _weights(zoo_served, "tied_lm")["trained"]}
    assert trained["embed.weight"]["shared_with"] == ["lm_head.weight"]
    assert trained["lm_head.weight"]["shared_with"] == ["embed.weight"]
    assert {trained["embed.weight"]["relation"], trained["lm_head.weight"]["relation"]} == {"identical", "transposed"}
    assert trained["norm.weight"]["shared_with"] is None


@pytest.mark.parametrize("name", ["gru", "lstm", "tied_lm"])
def test_recurrent_weights_are_shown_packed(zoo_served: Zoo, name: str) -> None:
    trained = _weights(zoo_served, name)["trained"]
    recurrent = [t for t in trained if "_l0" in t["state_dict_key"] or "_l1" in t["state_dict_key"]]
    assert recurrent
    assert {t["relation"] for t in recurrent} == {"packed"}


@pytest.mark.parametrize("name", CASES)
def test_activations_answer(zoo_served: Zoo, name: str) -> None:
    case = CASES[name]
    inputs = case.inputs(np.random.default_rng(200), 2)
    response = httpx.post(
        f"{zoo_served.server.base_url}/v2/models/{name}/activations", json=_json_body(case, inputs), timeout=120
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["batch_size"] == 2
    assert body["values"]
    # Values keep the graph's own layout (attention works on [length, batch, width]), so only their
    # statistics are checked here, not where the batch axis sits.
    assert all(np.isfinite(value["mean"]) for value in body["values"])
