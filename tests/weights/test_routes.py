"""The weights extension through a real app: every endpoint and every error case."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.settings import AuthSettings, Settings
from tests.server import serve
from tests.weights.conftest import BASE
from tests.weights.reference import assert_stats_match

# Raw values are closed by default (the export scope); these tests are about what the routes answer.
OPEN = AuthSettings(open_scopes=frozenset({"infer", "inspect", "export"}))


@pytest.fixture
async def client(repository: Path) -> AsyncIterator[Any]:
    async with AsyncTestClient(app=create_app(Settings(repository=repository, warmup=False, auth=OPEN))) as test_client:
        yield test_client


async def _json(client: Any, url: str, status: int = 200) -> Any:
    response = await client.get(url)
    assert response.status_code == status, response.text
    return response.json()


async def _tensor_ids(client: Any, version: int = 1) -> dict[str, str]:
    """Effective tensors by ONNX name, trained ones as ``trained:<state_dict key>``."""
    body = await _json(client, f"/v2/models/clf/versions/{version}/weights")
    ids = {t["name"]: t["id"] for t in body["tensors"]}
    ids.update({f"trained:{t['state_dict_key']}": t["id"] for t in body["trained"] or []})
    return ids


async def test_listing_has_layers_tensors_summary_and_provenance(client: Any) -> None:
    body = await _json(client, "/v2/models/clf/versions/1/weights")
    assert (body["model"], body["version"]) == ("clf", "1")
    assert [(la["op_type"], la["module_path"]) for la in body["layers"]] == [
        ("Conv", "conv"), ("BatchNormalization", "bn"), ("Gemm", "head"), ("MatMul", "proj")
    ]
    summary = body["summary"]
    assert summary["parameters"] == sum(a.size for a in BASE.arrays.values())
    assert (summary["layers"], summary["tensors"], summary["transposed"]) == (4, 9, 1)
    proj = next(t for t in body["tensors"] if t["name"] == "onnx::MatMul_9")
    assert proj["transposed"] is True
    assert (proj["state_dict_key"], proj["relation"], proj["module_path"]) == ("proj.weight", "transposed", "proj")
    trained = {t["state_dict_key"]: t for t in body["trained"]}
    assert set(trained) == set(BASE.arrays)
    assert trained["proj.weight"]["effective_id"] == proj["id"]
    assert trained["head.weight"]["sha256"] == next(t for t in body["tensors"] if t["name"] == "head.weight")["sha256"]
    head_layer = body["layers"][2]
    assert head_layer["spectral"]["status"] in ("success", "skipped")
    assert body["layers"][0]["spectral"]["ww_compat"] == {"version": "0.7.7", "conv2d_norm": True}


async def test_every_statistic_over_http_matches_numpy(client: Any) -> None:
    ids = await _tensor_ids(client)
    for key, array in BASE.arrays.items():
        onnx_name = "onnx::MatMul_9" if key == "proj.weight" else key
        effective = await _json(client, f"/v2/models/clf/versions/1/weights/{ids[onnx_name]}")
        stored = array.T if key == "proj.weight" else array
        assert_stats_match(effective["stats"], stored, effective["out_axis"], f"effective {onnx_name}")
        trained = await _json(client, f"/v2/models/clf/versions/1/weights/{ids['trained:' + key]}")
        assert trained["out_axis"] == (0 if array.ndim >= 2 else None)
        assert_stats_match(trained["stats"], array, trained["out_axis"], f"trained {key}")
        assert trained["counterpart"]["id"] == ids[onnx_name]


async def test_default_version_is_the_highest(client: Any) -> None:
    body = await _json(client, "/v2/models/clf/weights")
    assert body["version"] == "5"


async def test_histogram_options(client: Any) -> None:
    ids = await _tensor_ids(client)
    url = f"/v2/models/clf/versions/1/weights/{ids['head.weight']}"
    body = await _json(client, url + "?bins=16&range=symmetric")
    hist = body["stats"]["histogram"]
    abs_max = float(np.abs(BASE.arrays["head.weight"]).max())
    assert hist["bins"] == 16
    assert hist["edges"][0] == pytest.approx(-abs_max)
    assert hist["edges"][-1] == pytest.approx(abs_max)
    assert sum(hist["counts"]) == BASE.arrays["head.weight"].size
    shared = (await _json(client, url + "?edges_from=2"))["stats"]["histogram"]
    other = (await _json(client, f"/v2/models/clf/versions/2/weights/{ids['head.weight']}?edges_from=1"))
    assert shared["edges"] == other["stats"]["histogram"]["edges"]
    assert shared["edges_shared_with"] == "model 'clf' version 2"


async def test_values_are_npy(client: Any) -> None:
    ids = await _tensor_ids(client)
    proj = BASE.arrays["proj.weight"]
    for name, expected in [("onnx::MatMul_9", proj.T), ("trained:proj.weight", proj)]:
        response = await client.get(f"/v2/models/clf/versions/1/weights/{ids[name]}/values")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        np.testing.assert_array_equal(np.load(io.BytesIO(response.content)), expected)


async def test_values_over_the_cap_answer_413(repository: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEIGHTSERVE_WEIGHTS_VALUES_MAX_BYTES", "64")
    async with AsyncTestClient(app=create_app(Settings(repository=repository, warmup=False, auth=OPEN))) as small:
        ids = await _tensor_ids(small)
        body = await _json(small, f"/v2/models/clf/versions/1/weights/{ids['head.weight']}/values", 413)
        assert "cap" in body["error"]
        small_tensor = await small.get(f"/v2/models/clf/versions/1/weights/{ids['head.bias']}/values")
        assert small_tensor.status_code == 200


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/v2/models/clf/versions/1/weights/Tdeadbeefdeadbeef", 404),
        ("/v2/models/clf/versions/1/weights/Tdeadbeefdeadbeef/values", 404),
        ("/v2/models/clf/versions/9/weights", 404),
        ("/v2/models/nope/weights", 404),
        ("/v2/models/clf/versions/abc/weights", 400),
        ("/v2/models/clf/weights/diff?base=1", 400),
        ("/v2/models/clf/weights/diff?base=1&target=9", 404),
        ("/v2/models/clf/weights/diff?base=x&target=2", 400),
    ],
)
async def test_bad_requests_get_clear_errors(client: Any, url: str, status: int) -> None:
    body = await _json(client, url, status)
    assert set(body) == {"error"}
    assert body["error"]


@pytest.mark.parametrize("query", ["bins=0", "bins=1025", "bins=abc", "range=log", "edges_from=9"])
async def test_bad_histogram_parameters(client: Any, query: str) -> None:
    ids = await _tensor_ids(client)
    status = 404 if query == "edges_from=9" else 400
    body = await _json(client, f"/v2/models/clf/versions/1/weights/{ids['head.weight']}?{query}", status)
    assert set(body) == {"error"}
    if query == "bins=abc":  # Litestar's own validation, in words
        assert "query parameter 'bins': Expected `int`, got `str`" in body["error"]
    await _json(client, f"/v2/models/clf/versions/1/weights/{ids['head.weight']}?bins=1024")


async def test_diff_identical_versions(client: Any) -> None:
    body = await _json(client, "/v2/models/clf/weights/diff?base=1&target=4")
    assert body["verdict"] == "identical"
    assert all(t["identical"] for t in body["tensors"])
    assert body["trained"] is None  # version 4 has no sidecar


async def test_diff_small_fine_tune(client: Any) -> None:
    body = await _json(client, "/v2/models/clf/weights/diff?base=1&target=2")
    assert body["verdict"] == "small fine-tune"
    by_name = {t["name"]: t for t in body["tensors"]}
    assert by_name["conv.weight"]["identical"]
    head = by_name["head.weight"]
    a, b = BASE.arrays["head.weight"].astype(np.float64), _fine_tuned("head.weight")
    assert head["rel_l2"] == pytest.approx(np.linalg.norm(b - a) / np.linalg.norm(a), rel=1e-9)
    assert head["cosine"] == pytest.approx(np.vdot(a, b) / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-9)
    assert head["max_abs_diff"] == pytest.approx(np.abs(b - a).max(), rel=1e-9)
    assert head["sign_flip_fraction"] == pytest.approx(np.count_nonzero(a * b < 0) / a.size)
    assert head["stats_delta"]["mean"] == pytest.approx(b.mean() - a.mean(), abs=1e-12)
    assert set(head["spectral_delta"]) >= {"alpha", "log_norm", "stable_rank", "entropy"}
    assert "N" not in head["spectral_delta"]
    hist = head["histograms"]
    assert len(hist["edges"]) == 65
    assert sum(hist["base"]) == sum(hist["target"]) == a.size
    assert 0 < hist["js_distance"] <= 1
    layers = {la["module_path"]: la for la in body["layers"]}
    assert layers["conv"]["identical"]
    assert not layers["head"]["identical"]
    assert body["trained"]["verdict"] == "small fine-tune"
    assert body["evidence"]["overall_rel_l2"] < 0.25
    assert body["analysis"]["base"]["state"] == body["analysis"]["target"]["state"] == "done"


def _fine_tuned(key: str) -> np.ndarray:
    from tests.weights.conftest import FINE_TUNED

    return FINE_TUNED.arrays[key].astype(np.float64)


async def test_diff_broad_retrain(client: Any) -> None:
    body = await _json(client, "/v2/models/clf/weights/diff?base=1&target=3")
    assert body["verdict"] == "broad retrain"
    assert body["evidence"]["overall_rel_l2"] > 0.25
    assert body["evidence"]["tensors_changed"] == 9


async def test_diff_architecture_change_reports_what_does_not_match(client: Any) -> None:
    body = await _json(client, "/v2/models/clf/weights/diff?base=1&target=5")
    assert body["verdict"] == "architecture change"
    mismatched = {t["name"]: t["shape_mismatch"] for t in body["tensors"] if "shape_mismatch" in t}
    assert mismatched["conv.weight"] == {"base": [8, 1, 3, 3], "target": [16, 1, 3, 3]}
    assert body["evidence"]["shape_mismatches"] == len(mismatched)


async def test_weights_work_does_not_block_predictions(repository: Path) -> None:
    app = create_app(Settings(repository=repository, warmup=False, auth=OPEN))
    infer = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0.5] * 64}]}
    async with app.lifespan(), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:  # type: ignore[arg-type]
        weights = [c.get(f"/v2/models/clf/versions/{v}/weights") for v in (1, 2, 3)]
        predictions = [c.post("/v2/models/clf/versions/1/infer", json=infer) for _ in range(5)]
        responses = await asyncio.gather(*weights, *predictions)
    assert [r.status_code for r in responses] == [200] * 8


def test_end_to_end_through_a_real_server(repository: Path, tmp_path: Path) -> None:
    with serve(repository, tmp_path) as server:
        listing = httpx.get(f"{server.base_url}/v2/models/clf/versions/2/weights", timeout=60)
        assert listing.status_code == 200
        tensor_id = listing.json()["tensors"][0]["id"]
        one = httpx.get(f"{server.base_url}/v2/models/clf/versions/2/weights/{tensor_id}?bins=8", timeout=60)
        assert one.json()["stats"]["histogram"]["bins"] == 8
        diff = httpx.get(f"{server.base_url}/v2/models/clf/weights/diff?base=1&target=2", timeout=60)
        assert diff.json()["verdict"] == "small fine-tune"
        bad = httpx.get(f"{server.base_url}/v2/models/clf/versions/2/weights/nope", timeout=60)
        assert (bad.status_code, set(bad.json())) == (404, {"error"})


async def test_nan_and_inf_in_weights_are_counted(client: Any) -> None:
    body = await _json(client, "/v2/models/broken/versions/1/weights")
    assert (body["summary"]["nan_count"], body["summary"]["inf_count"]) == (1, 2)
    head = next(t for t in body["tensors"] if t["name"] == "head.weight")
    assert head["spectral"]["status"] == "skipped"
    detail = await _json(client, f"/v2/models/broken/versions/1/weights/{head['id']}?bins=10&range=symmetric")
    finite = BASE.arrays["head.weight"].astype(np.float64).copy()
    finite[0, 0] = finite[1, 1] = finite[2, 2] = np.nan
    assert detail["stats"]["mean"] == pytest.approx(np.nanmean(finite), rel=1e-12)
    assert sum(detail["stats"]["histogram"]["counts"]) == finite.size - 3
