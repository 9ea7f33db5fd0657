"""Models nobody here wrote: every family of the corpus loads with the default settings, serves with parity
against in-process onnxruntime (JSON and binary, alone and concurrently), lists every parameter with
numpy-exact statistics, and answers ``/activations``."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton

from tests.compat.corpus import Entry, corpus, write_repository
from tests.server import RunningServer, serve

ENTRIES = corpus()
BY_NAME = {entry.name: entry for entry in ENTRIES}
DATATYPES = {
    np.dtype(np.float32): "FP32", np.dtype(np.float16): "FP16", np.dtype(np.int64): "INT64", np.dtype(np.bool_): "BOOL",
}  # fmt: skip


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(tmp_path_factory.mktemp("corpus"), ENTRIES)


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # The defaults, except one worker so that the in-process reference shares no state with a sibling.
    with serve(repository, tmp_path_factory.mktemp("logs"), ready_timeout_s=180) as running:
        yield running


def _reference(repository: Path, entry: Entry, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(repository / entry.name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def _infer(server: RunningServer, entry: Entry, feeds: dict[str, np.ndarray], binary: bool) -> dict[str, np.ndarray]:
    client = triton.InferenceServerClient(server.url, network_timeout=60)
    inputs = []
    for name, array in feeds.items():
        tensor = triton.InferInput(name, list(array.shape), DATATYPES[array.dtype])
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    metadata = client.get_model_metadata(entry.name)
    outputs = [triton.InferRequestedOutput(o["name"], binary_data=binary) for o in metadata["outputs"]]
    result = client.infer(entry.name, inputs, outputs=outputs)
    return {o["name"]: result.as_numpy(o["name"]) for o in metadata["outputs"]}


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for name, expected in want.items():
        tolerance = 2e-3 if expected.dtype == np.float16 else 1e-5
        np.testing.assert_allclose(got[name].astype(np.float64), expected.astype(np.float64), rtol=tolerance, atol=tolerance)
        assert got[name].shape == expected.shape


def test_every_model_loads_with_the_default_settings(server: RunningServer) -> None:
    index = httpx.post(f"{server.base_url}/v2/repository/index", json={}, timeout=30).json()
    states = {entry["name"]: entry["state"] for entry in index}
    assert states == {entry.name: "READY" for entry in ENTRIES}, index


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_serves_with_parity(server: RunningServer, repository: Path, name: str, binary: bool) -> None:
    entry = BY_NAME[name]
    for batch, seed in ((1, 1), (3, 2)):
        feeds = entry.inputs(batch, seed)
        _assert_same(_infer(server, entry, feeds, binary), _reference(repository, entry, feeds))


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_concurrent_requests_each_get_their_own_answer(server: RunningServer, repository: Path, name: str) -> None:
    """Requests arriving together may share a batch; each must still get exactly its own answer."""
    entry = BY_NAME[name]
    cases = [entry.inputs(1 + seed % 2, seed) for seed in range(12)]
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda feeds: _infer(server, entry, feeds, True), cases))
    for feeds, answer in zip(cases, answers, strict=True):
        _assert_same(answer, _reference(repository, entry, feeds))


def _listed(server: RunningServer, name: str) -> dict[str, dict[str, Any]]:
    """Listed tensors by their own name; a tensor inside a subgraph is listed with its place in front
    (``If_0/then_branch/then_w``)."""
    response = httpx.get(f"{server.base_url}/v2/models/{name}/weights", timeout=120)
    assert response.status_code == 200, response.text
    return {tensor["name"].rsplit("/", 1)[-1]: tensor for tensor in response.json()["tensors"]}


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_every_parameter_is_listed_with_exact_statistics(server: RunningServer, name: str) -> None:
    entry = BY_NAME[name]
    listed = _listed(server, name)
    assert set(entry.parameters) <= set(listed), f"missing: {sorted(set(entry.parameters) - set(listed))}"
    for tensor_name, values in entry.parameters.items():
        stats = listed[tensor_name]["stats"]
        flat = values.reshape(-1)
        assert stats["numel"] == flat.size
        for key, expected in (("min", flat.min()), ("max", flat.max()), ("mean", flat.mean()), ("std", flat.std())):
            assert stats[key] == pytest.approx(expected, rel=1e-9, abs=1e-12), (tensor_name, key)


def test_identical_branch_weights_share_one_content_hash(server: RunningServer) -> None:
    listed = _listed(server, "if_weights")
    assert listed["then_w"]["sha256"] == listed["else_w"]["sha256"]
    assert listed["then_w"]["name"] == "If_0/then_branch/then_w"


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_activations_answer(server: RunningServer, name: str) -> None:
    entry = BY_NAME[name]
    inputs = [
        {"name": key, "datatype": DATATYPES[array.dtype], "shape": list(array.shape), "data": array.reshape(-1).tolist()}
        for key, array in entry.inputs(2, 5).items()
    ]
    response = httpx.post(f"{server.base_url}/v2/models/{name}/activations", json={"inputs": inputs}, timeout=120)
    assert response.status_code == 200, response.text
