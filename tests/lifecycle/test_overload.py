"""Overload: bounded queues answer 503 with Retry-After, waits past the deadline 504, and the server keeps serving."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.lifecycle.onnx_models import infer_body, write_version
from tests.lifecycle.server import ServerProcess

FLOOD = 16

pytestmark = pytest.mark.timeout(180)


async def _flood(url: str, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        return await asyncio.gather(*(client.post("/v2/models/slow/infer", json=infer_body()) for _ in range(count)))


def _rejected(url: str) -> dict[str, float]:
    counts = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("weightserve_requests_rejected_total{"):
            reason = line.split('reason="')[1].split('"')[0]
            counts[reason] = float(line.split()[-1])
    return counts


def _check_refusals(responses: list[httpx.Response], refused_status: int) -> Counter[int]:
    statuses = Counter(response.status_code for response in responses)
    assert set(statuses) <= {200, refused_status}, statuses
    assert statuses[200] >= 1, statuses
    assert statuses[refused_status] >= 1, statuses
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"].isdigit()
        if response.status_code != 200:
            assert response.json()["error"]
            assert response.headers["x-request-id"]
    return statuses


@pytest.mark.parametrize(
    "settings",
    [
        {"max_batch_size": "1", "max_concurrent_runs": "1", "max_queue_size": "2"},  # no batcher: the gate
        {"max_batch_size": "2", "max_queue_size": "2"},  # the batcher's queue
        {"max_in_flight_requests": "4"},  # the per-process limit, before bodies are read
    ],
    ids=["unbatched-queue", "batcher-queue", "in-flight-limit"],
)
async def test_a_flood_is_refused_with_503_and_service_continues(tmp_path: Path, settings: dict[str, str]) -> None:
    repository = tmp_path / "repository"
    write_version(repository, "slow", 1, slow=2048)
    with ServerProcess(repository, tmp_path / "server.log", intra_op_threads="1", **settings) as server:
        statuses = _check_refusals(await _flood(server.url, FLOOD), 503)
        print(f"{settings}: {dict(statuses)}")
        reasons = _rejected(server.url)
        expected = "in_flight_limit" if "max_in_flight_requests" in settings else "queue_full"
        assert reasons.get(expected) == statuses[503], reasons
        assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200
        after = httpx.post(f"{server.url}/v2/models/slow/infer", json=infer_body(), timeout=60)
        assert after.status_code == 200, after.text


async def test_requests_waiting_past_the_timeout_get_504(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    write_version(repository, "slow", 1, slow=2048)
    settings = {"max_batch_size": "1", "max_concurrent_runs": "1", "max_queue_size": "64", "request_timeout_s": "0.2"}
    with ServerProcess(repository, tmp_path / "server.log", intra_op_threads="1", **settings) as server:
        # Runs take longer than the timeout, so of 8 requests queued at once most wait too long.
        statuses = _check_refusals(await _flood(server.url, 8), 504)
        print(f"timeout: {dict(statuses)}")
        assert _rejected(server.url).get("timeout") == statuses[504]
        after = httpx.post(f"{server.url}/v2/models/slow/infer", json=infer_body(), timeout=60)
        assert after.status_code == 200, after.text
