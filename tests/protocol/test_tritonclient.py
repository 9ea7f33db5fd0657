"""Conformance with the Open Inference Protocol, driven by tritonclient against a real server process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from tritonclient.utils import InferenceServerException

from tests.model_factory import ONNX_TYPES
from tests.protocol.conftest import SHIPPED_MODELS
from tests.server import RunningServer

DATATYPES = list(ONNX_TYPES)


@pytest.fixture
def client(server: RunningServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.url)


def sample(datatype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if datatype == "BYTES":
        words = ["alpha", "β", "", "γάμμα", "x" * 40]
        return np.array([words[i % len(words)] + str(i) for i in range(int(np.prod(shape)))], dtype=object).reshape(
            shape
        )
    if datatype == "BOOL":
        return rng.integers(0, 2, shape).astype(bool)
    if datatype == "BF16":
        return rng.standard_normal(shape).astype(np.float32).astype(ml_dtypes.bfloat16)
    dtype = np.dtype(httpclient.triton_to_np_dtype(datatype))
    if dtype.kind == "f":
        return (rng.standard_normal(shape) * 100).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def infer_input(name: str, array: np.ndarray, datatype: str, binary: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def ort_reference(repository: Path, model: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    versions = sorted(int(p.name) for p in (repository / model).iterdir() if p.name.isdigit())
    session = ort.InferenceSession(str(repository / model / str(versions[-1]) / "model.onnx"))
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


# ------------------------------------------------------------------------------------------ server


def test_health_and_server_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "weightserve"
    assert metadata["extensions"] == [
        "binary_tensor_data",
        "model_repository",
        "statistics",
        "model_configuration",
        "weights",
        "activations",
        "explain",
        "evaluate",
    ]


def test_repository_index_with_empty_body(client: httpclient.InferenceServerClient) -> None:
    index = client.get_model_repository_index()
    states = {(entry["name"], entry.get("version")): entry["state"] for entry in index}
    assert states[("simple", "1")] == "READY"


# ------------------------------------------------------------------------------------------ datatypes


# BF16 travels only as binary data (tritonclient refuses JSON BF16; the server answers 400, see
# test_bad_requests.py), so it has no JSON case here.
ROUND_TRIPS = [(datatype, binary) for datatype in DATATYPES for binary in (False, True) if binary or datatype != "BF16"]


@pytest.mark.parametrize(
    ("datatype", "binary"), ROUND_TRIPS, ids=[f"{d}-{'binary' if b else 'json'}" for d, b in ROUND_TRIPS]
)
def test_every_datatype_round_trips(client: httpclient.InferenceServerClient, datatype: str, binary: bool) -> None:
    array = sample(datatype, (3, 4), seed=len(datatype))
    result = client.infer(
        f"identity_{datatype.lower()}",
        [infer_input("INPUT0", array, datatype, binary)],
        outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary or datatype == "BF16")],
    )
    got = result.as_numpy("OUTPUT0")
    assert got.shape == array.shape
    if datatype == "BYTES":
        # tritonclient gives bytes for binary BYTES and str for JSON BYTES.
        texts = [item.decode() if isinstance(item, bytes) else item for item in got.reshape(-1)]
        assert texts == list(array.reshape(-1))
    else:
        assert got.dtype == array.dtype
        assert got.tobytes() == array.tobytes()
    assert result.get_output("OUTPUT0")["datatype"] == datatype


def test_nested_and_flat_json_data_are_equivalent(server: RunningServer) -> None:
    import httpx

    nested = {
        "inputs": [{"name": "INPUT0", "shape": [2, 4], "datatype": "INT32", "data": [[1, 2, 3, 4], [5, 6, 7, 8]]}]
    }
    flat = {"inputs": [{"name": "INPUT0", "shape": [2, 4], "datatype": "INT32", "data": [1, 2, 3, 4, 5, 6, 7, 8]}]}
    url = f"{server.base_url}/v2/models/identity_int32/infer"
    a, b = httpx.post(url, json=nested), httpx.post(url, json=flat)
    assert a.status_code == b.status_code == 200
    assert a.json()["outputs"] == b.json()["outputs"]
    assert a.json()["outputs"][0]["data"] == [1, 2, 3, 4, 5, 6, 7, 8]


# ------------------------------------------------------------------------------------------ shipped models


def shipped_feeds(metadata: dict[str, Any], rows: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    feeds = {}
    for spec in metadata["inputs"]:
        shape = tuple(rows if dim == -1 else dim for dim in spec["shape"])
        feeds[spec["name"]] = (rng.random(shape) * 16).astype(np.float32)
    return feeds


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("model", SHIPPED_MODELS)
def test_shipped_model_equals_onnxruntime(
    client: httpclient.InferenceServerClient, protocol_repository: Path, model: str, binary: bool
) -> None:
    metadata = client.get_model_metadata(model)
    feeds = shipped_feeds(metadata)
    inputs = [infer_input(name, array, "FP32", binary) for name, array in feeds.items()]
    outputs = [httpclient.InferRequestedOutput(o["name"], binary_data=binary) for o in metadata["outputs"]]
    result = client.infer(model, inputs, outputs=outputs)
    expected = ort_reference(protocol_repository, model, feeds)
    for name, array in expected.items():
        got = result.as_numpy(name)
        assert got.dtype == array.dtype == np.float32
        assert got.tobytes() == array.tobytes(), f"{model}/{name} differs from onnxruntime"


def test_digits_prediction_matches_label(client: httpclient.InferenceServerClient) -> None:
    if "digits_cnn" not in SHIPPED_MODELS:
        pytest.skip("digits_cnn is not in the shipped repository")
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images[-20:].astype(np.float32).reshape(-1, 1, 8, 8)
    result = client.infer("digits_cnn", [infer_input("image", images, "FP32", True)])
    predicted = result.as_numpy("logits").argmax(axis=1)
    assert (predicted == digits.target[-20:]).mean() >= 0.9


# ------------------------------------------------------------------------------------------ outputs, ids, params


def test_output_subset_in_request_order(client: httpclient.InferenceServerClient) -> None:
    a, b = sample("FP32", (2, 16), 1), sample("FP32", (2, 16), 2)
    inputs = [infer_input("INPUT0", a, "FP32", True), infer_input("INPUT1", b, "FP32", False)]
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=True),
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=False),
    ]
    result = client.infer("simple", inputs, outputs=outputs, request_id="req-42", parameters={"tenant": "blue"})
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["OUTPUT1", "OUTPUT0"]
    assert response["id"] == "req-42"
    assert response["model_version"] == "1"
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)

    only = client.infer("simple", inputs, outputs=[httpclient.InferRequestedOutput("OUTPUT0")])
    assert [o["name"] for o in only.get_response()["outputs"]] == ["OUTPUT0"]


def test_default_outputs_are_binary_for_tritonclient(client: httpclient.InferenceServerClient) -> None:
    a = sample("FP32", (1, 16), 3)
    result = client.infer("simple", [infer_input("INPUT0", a, "FP32", True), infer_input("INPUT1", a, "FP32", True)])
    outputs = result.get_response()["outputs"]
    assert all("binary_data_size" in o["parameters"] and "data" not in o for o in outputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + a)


def test_repeated_binary_requests_each_get_their_own_answer(server: RunningServer) -> None:
    """tritonclient sends the same header bytes for every request of the same shapes (but for the id
    it leads with, when given one); the server reads such a header once and the data and id of each
    request as its own, whatever the data's length."""
    client = httpclient.InferenceServerClient(server.url)
    for seed in range(6):
        a, b = sample("FP32", (2, 16), seed), sample("FP32", (2, 16), seed + 10)
        inputs = [infer_input("INPUT0", a, "FP32", True), infer_input("INPUT1", b, "FP32", True)]
        request_id = f"trace-{seed}" if seed % 2 else ""
        result = client.infer("simple", inputs, request_id=request_id)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
        assert result.get_response().get("id", "") == request_id
    body, header_length = httpclient.InferenceServerClient.generate_request_body(inputs)
    assert header_length is not None
    url = f"{server.base_url}/v2/models/simple/infer"
    headers = {"Inference-Header-Content-Length": str(header_length)}
    assert httpx.post(url, content=body, headers=headers).status_code == 200
    short = httpx.post(url, content=body[:-4], headers=headers)
    assert short.status_code == 400
    assert short.json()["error"] == "input 'INPUT1': binary_data_size 128 runs past the end of the body (124 bytes left)"


@pytest.mark.parametrize("request_algo", [None, "gzip", "deflate"])
@pytest.mark.parametrize("response_algo", [None, "gzip", "deflate"])
def test_compression_both_ways(
    client: httpclient.InferenceServerClient, request_algo: str | None, response_algo: str | None
) -> None:
    a, b = sample("FP32", (4, 16), 4), sample("FP32", (4, 16), 5)
    inputs = [infer_input("INPUT0", a, "FP32", True), infer_input("INPUT1", b, "FP32", False)]
    result = client.infer(
        "simple", inputs, request_compression_algorithm=request_algo, response_compression_algorithm=response_algo
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_versioned_paths(client: httpclient.InferenceServerClient) -> None:
    assert client.is_model_ready("simple", "1")
    assert client.get_model_metadata("simple", "1")["versions"] == ["1"]
    a = sample("FP32", (1, 16), 6)
    result = client.infer(
        "simple", [infer_input("INPUT0", a, "FP32", True), infer_input("INPUT1", a, "FP32", True)], model_version="1"
    )
    assert result.get_response()["model_version"] == "1"


# ------------------------------------------------------------------------------------------ metadata, config, stats


def test_model_metadata_and_config(client: httpclient.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("simple")
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [
        {"name": "INPUT0", "datatype": "FP32", "shape": [-1, 16]},
        {"name": "INPUT1", "datatype": "FP32", "shape": [-1, 16]},
    ]
    config = client.get_model_config("simple")
    assert config["max_batch_size"] > 0
    assert config["input"][0] == {"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [16]}
    assert config["parameters"]["execution_providers"]["string_value"] == "CPUExecutionProvider"
    fixed = client.get_model_config("fixed")
    assert fixed["max_batch_size"] == 0
    assert fixed["input"][0]["dims"] == [2, 3]
    assert client.get_model_config("identity_bytes")["input"][0]["data_type"] == "TYPE_STRING"


def test_statistics_count_samples_and_executions(client: httpclient.InferenceServerClient) -> None:
    before = client.get_inference_statistics("identity_int64")["model_stats"][0]
    array = sample("INT64", (3, 4), 8)
    for _ in range(2):
        client.infer("identity_int64", [infer_input("INPUT0", array, "INT64", True)])
    with pytest.raises(InferenceServerException):
        client.infer("identity_int64", [infer_input("INPUT0", array.astype(np.int32), "INT32", True)])
    after = client.get_inference_statistics("identity_int64", "1")["model_stats"][0]
    assert after["inference_count"] - before["inference_count"] == 6
    assert after["execution_count"] - before["execution_count"] == 2
    stats, was = after["inference_stats"], before["inference_stats"]
    assert stats["success"]["count"] - was["success"]["count"] == 2
    assert stats["fail"]["count"] - was["fail"]["count"] == 1
    for key in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert stats[key]["count"] - was[key]["count"] == 2
        assert stats[key]["ns"] >= was[key]["ns"]
    assert isinstance(after["last_inference"], int)
    assert after["last_inference"] > 0
    everything = client.get_inference_statistics()["model_stats"]
    assert {"simple", "identity_int64", "fixed"} <= {entry["name"] for entry in everything}


# ------------------------------------------------------------------------------------------ aio client


async def test_aio_client_json_and_binary(server: RunningServer) -> None:
    client = aioclient.InferenceServerClient(server.url)
    try:
        assert await client.is_server_ready()
        assert (await client.get_model_metadata("simple"))["name"] == "simple"
        a, b = sample("FP32", (3, 16), 9), sample("FP32", (3, 16), 10)
        for binary in (False, True):
            inputs = [aioclient.InferInput("INPUT0", [3, 16], "FP32"), aioclient.InferInput("INPUT1", [3, 16], "FP32")]
            inputs[0].set_data_from_numpy(a, binary_data=binary)
            inputs[1].set_data_from_numpy(b, binary_data=binary)
            outputs = [aioclient.InferRequestedOutput("OUTPUT0", binary_data=binary)]
            result = await client.infer("simple", inputs, outputs=outputs, request_compression_algorithm="gzip")
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        stats = await client.get_inference_statistics("simple")
        assert stats["model_stats"][0]["inference_count"] >= 6
        with pytest.raises(InferenceServerException, match="unknown model"):
            await client.get_model_metadata("no_such_model")
    finally:
        await client.close()
