"""SIGTERM while requests are in flight: every one of them completes, readiness is never true again, exit 0."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from tests.server import serve
from tests.serving.onnx_models import infer_body, write_version

IN_FLIGHT = 6

pytestmark = pytest.mark.timeout(240)


def _in_flight(url: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("weightserve_http_requests_in_flight "):
            return float(line.split()[-1]) - 1  # less this scrape itself
    return 0.0


@pytest.mark.parametrize(
    ("workers", "batch"),
    [(1, 1), (2, 2)],
    ids=["one-worker-unbatched", "two-workers-batched"],
)
def test_sigterm_drains_in_flight_requests_and_exits_zero(tmp_path: Path, workers: int, batch: int) -> None:
    repository = tmp_path / "repository"
    write_version(repository, "slow", 1, slow=2048)  # each run takes a noticeable while
    results: list[int | str] = []
    lock = threading.Lock()
    # One run at a time and small batches: the requests queue up and stay in flight for seconds.
    settings = {
        "workers": str(workers),
        "intra_op_threads": "1",
        "drain_timeout_s": "120",
        "max_batch_size": str(batch),
        "max_concurrent_runs": "1",
    }
    with serve(repository, tmp_path, log_level="info", **settings) as server:

        def client() -> None:
            try:
                response = httpx.post(f"{server.base_url}/v2/models/slow/infer", json=infer_body(), timeout=120)
                outcome: int | str = response.status_code
            except httpx.HTTPError as exc:
                outcome = repr(exc)
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=client) for _ in range(IN_FLIGHT)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        # Every request not yet answered is in flight (on a loaded machine the first may finish
        # before the last arrives), and at least two are: then the signal lands mid-flight.
        while (current := _in_flight(server.base_url)) < max(2, IN_FLIGHT - len(results)):
            assert time.monotonic() < deadline, "requests never became in flight"
            time.sleep(0.005)
        assert current >= 2
        server.process.send_signal(signal.SIGTERM)
        readiness: list[int | str] = []
        model_readiness: list[int | str] = []
        while server.process.poll() is None:
            for path, seen in (("/v2/health/ready", readiness), ("/v2/models/slow/ready", model_readiness)):
                try:
                    seen.append(httpx.get(f"{server.base_url}{path}", timeout=5).status_code)
                except httpx.TransportError as exc:
                    seen.append(type(exc).__name__)
            time.sleep(0.02)
        for thread in threads:
            thread.join(timeout=60)
        exit_code = server.process.wait(timeout=60)
        log = server.log()
    assert results == [200] * IN_FLIGHT, (results, log)
    if workers == 1:
        # Not ready from the signal on: 400, or the connection is refused. (With several workers
        # uvicorn's supervisor forwards the signal within half a second, so a probe may still
        # reach a worker that has not heard of it yet.)
        assert 200 not in readiness, readiness
        assert 200 not in model_readiness, model_readiness  # tritonclient's is_model_ready reads the status
    assert exit_code == 0, log


async def test_model_readiness_answers_no_with_its_status_once_the_server_drains(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    write_version(repository, "m", 1)
    app = create_app(Settings(repository=repository))
    async with app.lifespan(), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:  # type: ignore[arg-type]
        for path in ("/v2/models/m/ready", "/v2/models/m/versions/1/ready"):
            assert (await client.get(path)).status_code == 200
        app.state.registry.begin_shutdown()  # what SIGTERM does first
        for path in ("/v2/models/m/ready", "/v2/models/m/versions/1/ready", "/v2/health/ready"):
            answer = await client.get(path)
            assert answer.status_code == 400, path
            assert answer.json()["ready"] is False
