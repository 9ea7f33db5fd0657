"""A model over protobuf's 2 GB (its weights in external data) loads, serves, lists its weights and
builds its inspection session, with the server's memory bounded by the copies onnxruntime must hold."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.server import RunningServer, serve

pytestmark = pytest.mark.slow

ROWS = 70_000_000  # x 4 float64 = 2.24 GB
WIDTH = 4


def _peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _write_model(folder: Path) -> int:
    """An embedding table of ROWS x WIDTH float64 in weights.bin, written in slices (never whole in memory)."""
    folder.mkdir(parents=True)
    row = np.arange(WIDTH, dtype=np.float64)
    with (folder / "weights.bin").open("wb") as handle:
        step = 1_000_000
        for start in range(0, ROWS, step):
            ids = np.arange(start, min(start + step, ROWS), dtype=np.float64)[:, None]
            handle.write((np.sin(ids * 0.001) + row).astype("<f8").tobytes())
    table = helper.make_tensor_value_info("table", TensorProto.DOUBLE, [ROWS, WIDTH])
    initializer = onnx.TensorProto(name="table", data_type=TensorProto.DOUBLE, dims=[ROWS, WIDTH])
    initializer.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "weights.bin"), ("offset", "0"), ("length", str(ROWS * WIDTH * 8))):
        entry = initializer.external_data.add()
        entry.key, entry.value = key, value
    del table
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0),
            helper.make_node("ReduceMean", ["rows", "axis1"], ["hidden"], keepdims=0),
            helper.make_node("Relu", ["hidden"], ["y"]),
        ],
        "large_embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["batch", WIDTH])],
        [initializer, onnx.numpy_helper.from_array(np.array([1], np.int64), "axis1")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save_model(model, folder / "model.onnx")
    return ROWS * WIDTH * 8


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, int]]:
    repository = tmp_path_factory.mktemp("large")
    size = _write_model(repository / "large" / "1")
    with serve(repository, tmp_path_factory.mktemp("logs"), ready_timeout_s=600) as running:
        yield running, size


def test_serves_lists_and_inspects_a_model_over_2_gb(large: tuple[RunningServer, int]) -> None:
    server, size = large
    assert size > 2 * 1024**3
    ids = [[0, 1, 69_999_999], [5, 6, 7]]
    body = {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [2, 3], "data": ids}]}
    answer = httpx.post(f"{server.base_url}/v2/models/large/infer", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    table = lambda i: np.sin(i * 0.001) + np.arange(WIDTH)  # noqa: E731
    expected = np.maximum([np.mean([table(i) for i in row], axis=0) for row in ids], 0)
    np.testing.assert_allclose(np.asarray(answer.json()["outputs"][0]["data"]).reshape(2, WIDTH), expected, rtol=1e-12)

    weights = httpx.get(f"{server.base_url}/v2/models/large/weights", timeout=600)
    assert weights.status_code == 200, weights.text
    listed = {t["name"]: t for t in weights.json()["tensors"]}
    assert listed["table"]["stats"]["numel"] == ROWS * WIDTH
    assert listed["table"]["stats"]["max"] == pytest.approx(1 + WIDTH - 1, abs=1e-9)

    activations = httpx.post(f"{server.base_url}/v2/models/large/activations", json=body, timeout=600)
    assert activations.status_code == 200, activations.text

    # The serving and the inspection session each hold the table once; nothing else may copy it whole.
    peak = _peak_rss_bytes(server.process.pid)
    assert peak < 2.6 * size, f"peak RSS {peak / 2**30:.2f} GiB for a {size / 2**30:.2f} GiB model"
