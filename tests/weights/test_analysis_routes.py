"""The analysis job resource and the listing's analysis states over HTTP; every parameter of a model
with control flow through the API, copies counted once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.settings import Settings
from service.weights.spectral import spectral_metrics
from tests.weights.analysis_helpers import mlp_weights, write_mlp
from tests.weights.reference import assert_stats_match
from tests.weights.test_control_flow import SHARED_W, _if_model


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    write_mlp(root / "mlp" / "1", mlp_weights(0), external=True)
    model = _if_model()
    model.ir_version = 9
    (root / "branches" / "1").mkdir(parents=True)
    onnx.save(model, str(root / "branches" / "1" / "model.onnx"))
    return root


@pytest.fixture
async def client(repository: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    monkeypatch.setenv("WEIGHTSERVE_WEIGHTS_ANALYSIS_INLINE_WORK", "0")  # everything in the background
    app = create_app(Settings(repository=repository, warmup=False))
    async with AsyncTestClient(app=app) as test_client:
        yield test_client
    app.state.weights.close()


async def _json(client: Any, url: str, status: int = 200) -> Any:
    response = await client.get(url)
    assert response.status_code == status, response.text
    return response.json()


async def _until_done(client: Any, url: str) -> dict[str, Any]:
    import asyncio

    for _ in range(2400):
        body: dict[str, Any] = await _json(client, url)
        if body["state"] == "done":
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"not done: {body}")


async def test_the_listing_starts_the_job_and_the_job_resource_watches_it(client: Any) -> None:
    listing = await _json(client, "/v2/models/mlp/versions/1/weights")
    assert {layer["analysis"] for layer in listing["layers"]} <= {"queued", "running", "done"}
    assert all(t["spectral"]["analysis"] == layer["analysis"]
               for layer in listing["layers"] for t in listing["tensors"] if t["id"] == layer["tensors"][0]["id"])
    url = listing["analysis"]["url"]
    assert url == "/v2/models/mlp/versions/1/weights/analysis"
    job = await _until_done(client, url)
    assert job["id"] == listing["analysis"]["id"]
    assert (job["model"], job["version"]) == ("mlp", "1")
    assert job["layers"] == {"done": 3, "running": 0, "queued": 0, "failed": 0, "total": 3}
    assert job["work"]["done"] == job["work"]["total"] > 0
    assert job["eta_s"] == 0.0
    assert [m["tensors"][0]["name"] for m in job["matrices"]] == ["w0", "w1", "w2"]
    assert [m["layers"] for m in job["matrices"]] == [["L0000"], ["L0001"], ["L0002"]]
    assert job["cache"]["events"]["spectral"]["computed"] == 3
    assert job["cache"]["folder"]["enabled"]
    done = await _json(client, "/v2/models/mlp/versions/1/weights")
    assert {layer["analysis"] for layer in done["layers"]} == {"done"}
    for i, weight in enumerate(mlp_weights(0)):
        spectral = next(t["spectral"] for t in done["tensors"] if t["name"] == f"w{i}")
        assert spectral["alpha"] == pytest.approx(spectral_metrics(weight, conv=False)["alpha"], rel=1e-12)
    # the default version's job is the same job
    default = await _json(client, "/v2/models/mlp/weights/analysis")
    assert default["id"] == job["id"]


async def test_the_tensor_document_lists_eigenvalues_once_analysed(client: Any) -> None:
    listing = await _json(client, "/v2/models/mlp/versions/1/weights")
    await _until_done(client, listing["analysis"]["url"])
    w0 = next(t for t in listing["tensors"] if t["name"] == "w0")
    body = await _json(client, f"/v2/models/mlp/versions/1/weights/{w0['id']}")
    listed = body["spectral"]["eigenvalues"]
    want = np.sort(np.linalg.svd(mlp_weights(0)[0].astype(np.float64), compute_uv=False) ** 2)
    np.testing.assert_allclose(listed["values"], want, rtol=1e-9)
    assert listed["count"] == 64
    assert not listed["truncated"]


@pytest.mark.parametrize(
    "url", ["/v2/models/nope/weights/analysis", "/v2/models/mlp/versions/9/weights/analysis"]
)
async def test_unknown_models_have_no_job(client: Any, url: str) -> None:
    body = await _json(client, url, 404)
    assert set(body) == {"error"}


async def test_weights_in_both_branches_of_an_if_are_one_parameter(client: Any) -> None:
    listing = await _json(client, "/v2/models/branches/versions/1/weights")
    tensors = {t["name"]: t for t in listing["tensors"]}
    then_w, else_w = tensors["If_0/then_branch/then_w"], tensors["If_0/else_branch/else_w"]
    assert (then_w["place"], else_w["place"]) == ("If_0/then_branch", "If_0/else_branch")
    assert then_w["sha256"] == else_w["sha256"]
    assert then_w["same_content_as"] == [else_w["id"]]
    assert then_w["shared"]
    assert sorted((la["op_type"], la["place"]) for la in listing["layers"]) == [
        ("MatMul", "If_0/else_branch"), ("MatMul", "If_0/then_branch")]
    summary = listing["summary"]
    assert (summary["tensors"], summary["unique_tensors"]) == (3, 2)
    assert summary["parameters"] == SHARED_W.size + 12  # the branch weights once, and the outer bias
    for tensor in (then_w, else_w):
        body = await _json(client, f"/v2/models/branches/versions/1/weights/{tensor['id']}")
        assert_stats_match(body["stats"], SHARED_W, body["out_axis"], tensor["name"])
    job = await _until_done(client, listing["analysis"]["url"])
    assert job["layers"]["total"] == 1  # one content, one analysis
    assert len(job["matrices"][0]["tensors"]) == 2
