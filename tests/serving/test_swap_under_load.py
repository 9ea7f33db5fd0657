"""Zero-downtime version swaps under closed-loop load, against a real server process.

A version whose output names itself (``y = x + version``) is added and the old one removed while
16 clients keep sending requests: once through the repository folder (polling), once through the
repository API. No request may fail, and responses must move from version 1 to version 2.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.server import ADMIN_TOKEN, serve
from tests.serving.load import LoadResult, closed_loop, wait_until
from tests.serving.onnx_models import publish_version, retire_version, write_version

REQUESTS = 2400
CONCURRENCY = 16
MODEL = "versioned"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _index(url: str) -> list[dict[str, str]]:
    response = httpx.post(f"{url}/v2/repository/index", json={}, timeout=10)
    response.raise_for_status()
    entries: list[dict[str, str]] = response.json()
    return [entry for entry in entries if entry["name"] == MODEL]


def _check(result: LoadResult, url: str, *, workers: int = 1) -> None:
    assert result.failures == [], result.failures[:5]
    assert result.sent >= 2000
    assert len(result.versions) == result.sent
    order = [version for _, version in result.versions]
    assert set(order) == {"1", "2"}
    if workers == 1:
        first_new = order.index("2")
        stragglers = [i for i, version in enumerate(order) if version == "1" and i > first_new]
        # Only requests already holding version 1 when version 2 took over may still answer from it.
        # (Several workers each switch at their own poll, so there the bound is per worker.)
        assert len(stragglers) <= CONCURRENCY, stragglers
    assert order[-500:] == ["2"] * 500
    entries = _index(url)
    assert [(e["version"], e["state"]) for e in entries] == [("2", "READY")]
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    served = [line for line in metrics.splitlines() if line.startswith("weightserve_inference_requests_total{")]
    assert any(f'model="{MODEL}"' in line and 'version="1"' in line for line in served)
    assert any(f'model="{MODEL}"' in line and 'version="2"' in line for line in served)
    assert all('status="200"' in line for line in served if f'model="{MODEL}"' in line), served


async def _ready_share(result: LoadResult, at_least: int) -> None:
    await wait_until(lambda: len(result.versions) >= at_least, 60, f"{at_least} responses")


def _latest_is(result: LoadResult, version: str) -> bool:
    return bool(result.versions) and result.versions[-1][1] == version


@pytest.mark.parametrize(
    "workers",
    [1, 2, pytest.param(4, marks=pytest.mark.slow)],
    ids=["one-worker", "two-workers", "four-workers"],
)
async def test_swap_through_the_repository_folder(tmp_path: Path, workers: int) -> None:
    repository = tmp_path / "repository"
    write_version(repository, MODEL, 1)
    removed: list[int] = []

    async def swap(result: LoadResult) -> None:
        await _ready_share(result, 400)
        await asyncio.to_thread(publish_version, repository, tmp_path / "staging", MODEL, 2)
        await wait_until(lambda: _latest_is(result, "2"), 60, "responses from version 2")
        await asyncio.to_thread(retire_version, repository, tmp_path / "trash", MODEL, 1)
        await wait_until(
            lambda: [e["version"] for e in _index(server.base_url)] == ["2"], 60, "version 1 to leave the index"
        )
        removed.append(len(result.versions))

    # With several worker processes, the supervisor polls the folder and every worker switches.
    with serve(repository, tmp_path, log_level="info", poll_interval_s="0.2", workers=str(workers)) as server:
        result = await closed_loop(
            server.base_url, MODEL, requests=REQUESTS, concurrency=CONCURRENCY, time_limit_s=150, during=swap
        )
        print(
            f"polling swap, {workers} worker(s): {result.sent} requests in {result.elapsed_s:.1f} s, "
            f"{len(result.failures)} failed, versions {dict(result.version_counts())}"
        )
        assert removed, "the swap did not finish while the load ran"
        assert removed[0] < result.sent, "no requests after version 1 was removed"
        _check(result, server.base_url, workers=workers)


@pytest.mark.parametrize("workers", [1, pytest.param(4, marks=pytest.mark.slow)], ids=["one-worker", "four-workers"])
async def test_swap_through_the_repository_api(tmp_path: Path, workers: int) -> None:
    repository = tmp_path / "repository"
    write_version(repository, MODEL, 1)
    removed: list[int] = []
    answered: list[int] = []
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def swap(result: LoadResult) -> None:
        async with httpx.AsyncClient(base_url=server.base_url, headers=auth, timeout=60) as admin:
            await _ready_share(result, 400)
            await asyncio.to_thread(publish_version, repository, tmp_path / "staging", MODEL, 2)
            loaded = await admin.post(f"/v2/repository/models/{MODEL}/load")
            assert loaded.status_code == 200, loaded.text
            answered.append(len(result.versions))
            await wait_until(lambda: _latest_is(result, "2"), 60, "responses from version 2")
            await asyncio.to_thread(retire_version, repository, tmp_path / "trash", MODEL, 1)
            reloaded = await admin.post(f"/v2/repository/models/{MODEL}/load")
            assert reloaded.status_code == 200, reloaded.text
            removed.append(len(result.versions))

    # The call answers once every worker serves version 2: from then on only requests already in
    # flight may still answer from version 1, however many workers there are.
    with serve(
        repository, tmp_path, log_level="info", admin_token=ADMIN_TOKEN, poll_interval_s="0", workers=str(workers)
    ) as server:
        result = await closed_loop(
            server.base_url, MODEL, requests=REQUESTS, concurrency=CONCURRENCY, time_limit_s=150, during=swap
        )
        print(
            f"API swap, {workers} worker(s): {result.sent} requests in {result.elapsed_s:.1f} s, "
            f"{len(result.failures)} failed, versions {dict(result.version_counts())}"
        )
        assert removed, "the swap did not finish while the load ran"
        assert removed[0] < result.sent, "no requests after version 1 was removed"
        _check(result, server.base_url)
        late = [version for _, version in result.versions[answered[0] + CONCURRENCY :]]
        assert "1" not in late


@pytest.mark.slow
async def test_loads_and_unloads_of_other_models_under_load_fail_no_request(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    write_version(repository, MODEL, 1)
    write_version(repository, "bystander", 1)
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    rounds: list[int] = []

    async def churn(result: LoadResult) -> None:
        async with httpx.AsyncClient(base_url=server.base_url, headers=auth, timeout=60) as admin:
            await _ready_share(result, 200)
            for _ in range(3):
                unloaded = await admin.post("/v2/repository/models/bystander/unload")
                assert unloaded.status_code == 200, unloaded.text
                async with httpx.AsyncClient(base_url=server.base_url) as probe:
                    assert (await probe.get("/v2/models/bystander/ready")).status_code == 404
                loaded = await admin.post("/v2/repository/models/bystander/load")
                assert loaded.status_code == 200, loaded.text
                again = await admin.post(f"/v2/repository/models/{MODEL}/load")  # nothing changed: no reload
                assert again.status_code == 200, again.text
                rounds.append(len(result.versions))

    with serve(repository, tmp_path, log_level="info", admin_token=ADMIN_TOKEN, workers="4") as server:
        result = await closed_loop(
            server.base_url, MODEL, requests=1600, concurrency=CONCURRENCY, time_limit_s=150, during=churn
        )
        assert len(rounds) == 3, "the churn did not finish while the load ran"
        assert result.failures == [], result.failures[:5]
        assert result.sent == len(result.versions) == 1600
        assert set(result.version_counts()) == {"1"}
        assert httpx.get(f"{server.base_url}/v2/models/bystander/ready", timeout=10).status_code == 200
