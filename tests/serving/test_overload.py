"""Overload: bounded queues answer 503 with Retry-After, waits past the deadline 504, and the server keeps serving."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.server import serve
from tests.serving.onnx_models import infer_body, write_version

FLOOD = 16

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


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
    with serve(repository, tmp_path, log_level="info", intra_op_threads="1", **settings) as server:
        statuses = _check_refusals(await _flood(server.base_url, FLOOD), 503)
        print(f"{settings}: {dict(statuses)}")
        reasons = _rejected(server.base_url)
        expected = "in_flight_limit" if "max_in_flight_requests" in settings else "queue_full"
        assert reasons.get(expected) == statuses[503], reasons
        assert httpx.get(f"{server.base_url}/v2/health/ready", timeout=10).status_code == 200
        after = httpx.post(f"{server.base_url}/v2/models/slow/infer", json=infer_body(), timeout=60)
        assert after.status_code == 200, after.text


async def test_requests_waiting_past_the_timeout_get_504(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    write_version(repository, "slow", 1, slow=2048)
    settings = {"max_batch_size": "1", "max_concurrent_runs": "1", "max_queue_size": "64", "request_timeout_s": "0.2"}
    with serve(repository, tmp_path, log_level="info", intra_op_threads="1", **settings) as server:
        # Runs take longer than the timeout, so of 8 requests queued at once most wait too long.
        statuses = _check_refusals(await _flood(server.base_url, 8), 504)
        print(f"timeout: {dict(statuses)}")
        assert _rejected(server.base_url).get("timeout") == statuses[504]
        after = httpx.post(f"{server.base_url}/v2/models/slow/infer", json=infer_body(), timeout=60)
        assert after.status_code == 200, after.text


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak memory from /proc")
async def test_memory_stays_bounded_under_a_flood_of_large_bodies(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    write_version(repository, "slow", 1, slow=1024)
    rows = 65536  # about 1.3 MB of JSON per request
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 4], "data": [0.0] * rows * 4}]})
    settings = {
        "max_in_flight_requests": "8",
        "max_batch_size": "1",
        "max_concurrent_runs": "1",
        "max_queue_size": "4096",
        "access_log": "false",
    }
    with serve(repository, tmp_path, log_level="info", intra_op_threads="1", **settings) as server:
        before = _peak_rss_mb(server.process.pid)
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=120) as client:
            gate = asyncio.Semaphore(64)

            async def one() -> int:
                async with gate:
                    response = await client.post(
                        "/v2/models/slow/infer", content=body, headers={"content-type": "application/json"}
                    )
                    return response.status_code

            statuses = Counter(await asyncio.gather(*(one() for _ in range(160))))
        growth = _peak_rss_mb(server.process.pid) - before
        print(f"flood of 160 x {len(body) / 1e6:.1f} MB at concurrency 64: {dict(statuses)}, peak RSS +{growth:.0f} MB")
        assert set(statuses) <= {200, 503}, statuses
        assert statuses[200] >= 1
        # 64 bodies held at once would be ~84 MB of bytes alone, several times that once decoded.
        assert growth < 200, growth
