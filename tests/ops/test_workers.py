"""One server, however many worker processes: ``--workers 4`` behind fresh connections.

Every call here opens a new connection, so the kernel spreads the calls over the four workers'
sockets (SO_REUSEPORT); each check repeats 40 times in a row, and every answer must be the same.
Where it matters, the workers' own statistics files show that several workers really answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from service.ops.counters import read_counters
from service.serving.triton_stats import SLOTS
from tests.server import ADMIN_TOKEN, RunningServer, serve
from tests.serving.load import closed_loop
from tests.serving.onnx_models import infer_body, version_model, write_version

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CALLS = 40
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "repository"
    write_version(root, "m", 1)
    write_version(root, "other", 1)
    return root


def _serve(repository: Path, tmp_path: Path, **settings: str) -> Any:
    return serve(
        repository,
        tmp_path,
        workers="4",
        admin_token=ADMIN_TOKEN,
        state_dir=str(tmp_path / "state"),
        intra_op_threads="1",
        log_level="info",
        **settings,
    )


def _alike(call: Callable[[], Any]) -> Any:
    """The answer of ``CALLS`` fresh-connection calls in a row, which must all be equal."""
    answers = [call() for _ in range(CALLS)]
    assert all(answer == answers[0] for answer in answers), answers
    return answers[0]


def _status(server: RunningServer, path: str) -> int:
    return httpx.get(f"{server.base_url}{path}", timeout=30).status_code


def _json(server: RunningServer, path: str) -> Any:
    response = httpx.get(f"{server.base_url}{path}", timeout=30)
    return response.status_code, response.json()


def _index(server: RunningServer) -> list[dict[str, str]]:
    response = httpx.post(f"{server.base_url}/v2/repository/index", timeout=30)
    assert response.status_code == 200
    entries: list[dict[str, str]] = response.json()
    return entries


def _infer(server: RunningServer, model: str = "m") -> str:
    response = httpx.post(f"{server.base_url}/v2/models/{model}/infer", json=infer_body(), timeout=30)
    assert response.status_code == 200, response.text
    version: str = response.json()["model_version"]
    return version


def _served_by(tmp_path: Path, model: str, version: int) -> dict[int, int]:
    """Successful requests per worker pid, from each worker's own statistics file."""
    files = (tmp_path / "state").glob(f"weightserve-*/stats/{model}/{version}/*.stats")
    counts = {int(path.stem): read_counters(path, SLOTS)[0] for path in files}  # slot 0: success count
    return {pid: count for pid, count in counts.items() if count}


def test_control_calls_and_statistics_answer_alike_from_every_worker(repository: Path, tmp_path: Path) -> None:
    with _serve(repository, tmp_path) as server:
        server.wait_workers(4)
        requests = 60
        assert {_infer(server) for _ in range(requests)} == {"1"}
        bad = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [0, 0, 0]}]}
        for _ in range(5):
            assert httpx.post(f"{server.base_url}/v2/models/m/infer", json=bad, timeout=30).status_code == 400
        served = _served_by(tmp_path, "m", 1)
        assert len(served) >= 2, served  # the kernel did spread the connections
        assert sum(served.values()) == requests
        # m and other hold the same bytes: one snapshot, checked once, loaded by all four workers.
        assert len(list((tmp_path / "state").glob("weightserve-*/snapshots/[0-9a-f]*"))) == 1

        # Statistics: the sums over every worker, whichever worker answers.
        stats = _alike(lambda: _json(server, "/v2/models/m/stats"))
        assert stats[0] == 200
        model_stat = stats[1]["model_stats"][0]
        assert model_stat["inference_count"] == requests
        assert model_stat["inference_stats"]["success"]["count"] == requests
        assert model_stat["inference_stats"]["fail"]["count"] == 5
        assert model_stat["execution_count"] == sum(b["compute_infer"]["count"] for b in model_stat["batch_stats"])
        assert 0 < model_stat["execution_count"] <= requests
        assert _alike(lambda: _json(server, "/v2/models/m/versions/1/stats")) == stats
        everything = _alike(lambda: _json(server, "/v2/models/stats"))[1]["model_stats"]
        assert [s for s in everything if s["name"] == "m"] == [model_stat]
        metrics = httpx.get(f"{server.base_url}/metrics", timeout=30).text
        assert f'weightserve_inference_requests_total{{model="m",status="200",version="1"}} {requests}.0' in metrics

        # Unload: no worker serves the model any more, and every one says so.
        unloaded = httpx.post(f"{server.base_url}/v2/repository/models/m/unload", headers=AUTH, timeout=60)
        assert unloaded.status_code == 200, unloaded.text
        assert _alike(lambda: _status(server, "/v2/models/m/ready")) == 404
        assert _alike(lambda: _status(server, "/v2/models/m")) == 404
        assert _alike(lambda: _status(server, "/v2/models/m/config")) == 404
        index = _alike(lambda: _index(server))
        assert {(e["name"], e.get("version"), e["state"]) for e in index} == {
            ("m", "1", "UNAVAILABLE"),
            ("other", "1", "READY"),
        }

        # Load: every worker serves it again before the call answers.
        loaded = httpx.post(f"{server.base_url}/v2/repository/models/m/load", headers=AUTH, timeout=60)
        assert loaded.status_code == 200, loaded.text
        assert _alike(lambda: _status(server, "/v2/models/m/ready")) == 200
        assert _alike(lambda: _status(server, "/v2/models/m/versions/1/ready")) == 200
        config = _alike(lambda: _json(server, "/v2/models/m/config"))
        assert config[0] == 200
        assert config[1]["name"] == "m"
        metadata = _alike(lambda: _json(server, "/v2/models/m"))
        assert metadata[0] == 200
        assert metadata[1]["versions"] == ["1"]
        index = _alike(lambda: _index(server))
        assert {(e["name"], e.get("version"), e["state"]) for e in index} == {
            ("m", "1", "READY"),
            ("other", "1", "READY"),
        }


def test_a_worker_killed_after_an_unload_comes_back_without_the_model(repository: Path, tmp_path: Path) -> None:
    with _serve(repository, tmp_path) as server:
        pids = server.wait_workers(4)
        unloaded = httpx.post(f"{server.base_url}/v2/repository/models/m/unload", headers=AUTH, timeout=60)
        assert unloaded.status_code == 200, unloaded.text
        os.kill(pids[1], signal.SIGKILL)
        replaced = server.wait_workers(4, besides={pids[1]})
        (newcomer,) = set(replaced) - set(pids)
        assert server.workers()["restarts"] == 1
        assert {_infer(server, "other") for _ in range(CALLS)} == {"1"}
        assert newcomer in _served_by(tmp_path, "other", 1)  # the replacement is among those answering
        assert _alike(lambda: _status(server, "/v2/models/m/ready")) == 404
        index = _alike(lambda: _index(server))
        assert {(e["name"], e["state"]) for e in index} == {("m", "UNAVAILABLE"), ("other", "READY")}
        assert "exited with -9; starting a new one" in server.log()


def _vm_size(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmSize")


def test_a_load_that_fails_in_one_worker_leaves_every_worker_on_the_old_version(
    repository: Path, tmp_path: Path
) -> None:
    with _serve(repository, tmp_path) as server:
        victim = server.wait_workers(4)[2]
        # A real limit on one worker: 128 MiB more address space than it has now, then a version
        # with a 256 MiB tensor. The other three load it; this one cannot.
        resource.prlimit(victim, resource.RLIMIT_AS, (_vm_size(victim) + 128 * 2**20, resource.RLIM_INFINITY))
        model = version_model(2.0)
        ballast = np.random.default_rng(0).standard_normal(64 * 2**20, dtype=np.float32)
        model.graph.initializer.append(numpy_helper.from_array(ballast, "ballast"))
        (repository / "m" / "2").mkdir()
        onnx.save(model, os.fspath(repository / "m" / "2" / "model.onnx"))

        refused = httpx.post(f"{server.base_url}/v2/repository/models/m/load", headers=AUTH, timeout=180)
        assert refused.status_code == 400, refused.text
        assert f"(pid {victim})" in refused.json()["error"], refused.text
        assert {_infer(server) for _ in range(CALLS)} == {"1"}
        assert _alike(lambda: _status(server, "/v2/models/m/versions/2/ready")) == 404
        index = _alike(lambda: _index(server))
        entry = next(e for e in index if e["name"] == "m" and e["version"] == "2")
        assert entry["state"] == "UNAVAILABLE", entry
        assert f"(pid {victim})" in entry["reason"], entry
        assert victim in server.worker_pids()  # it failed to load, and it still serves

        # The same files, with the limit lifted: every worker switches.
        resource.prlimit(victim, resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        loaded = httpx.post(f"{server.base_url}/v2/repository/models/m/load", headers=AUTH, timeout=180)
        assert loaded.status_code == 200, loaded.text
        assert {_infer(server) for _ in range(CALLS)} == {"2"}


def test_killed_workers_are_replaced_while_the_others_keep_serving(repository: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    with _serve(repository, tmp_path) as server:
        pids = server.wait_workers(4)
        time.sleep(max(0.0, started + 5 - time.monotonic()))

        # 5 s after startup, while a client keeps calling on fresh connections.
        failures = 0
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 90
        while len(set(server.worker_pids()) - set(pids)) < 1 or server.workers()["ready"] < 4:
            assert time.monotonic() < deadline, server.log()[-4000:]
            try:
                _infer(server)
            except httpx.TransportError:
                failures += 1
        assert failures <= 1  # only a request caught on the killed worker may fail
        (replacement,) = set(server.worker_pids()) - set(pids)

        # Again, under load: the replacement dies too, soon after it started (a crash loop).
        async def kill_during_load() -> tuple[int, list[str]]:
            async def kill(result: Any) -> None:
                while len(result.versions) < 300:
                    await asyncio.sleep(0.01)
                os.kill(replacement, signal.SIGKILL)

            result = await closed_loop(
                server.base_url, "m", requests=1500, concurrency=8, time_limit_s=120, during=kill
            )
            return result.sent, result.failures

        sent, lost = asyncio.run(kill_during_load())
        assert sent == 1500
        assert len(lost) <= 8, lost  # at most the requests in flight on the killed worker
        assert all(failure.startswith("transport") for failure in lost), lost
        server.wait_workers(4, besides={pids[0], replacement})
        pool = server.workers()
        assert pool["restarts"] == 2
        assert [entry["failures"] for entry in pool["crash_looping"]] == [2], pool  # the slot died twice in a row
        metrics = httpx.get(f"{server.base_url}/metrics", timeout=30).text
        assert "weightserve_workers_crash_looping 1.0" in metrics
        assert "weightserve_worker_restarts 2.0" in metrics
        assert "weightserve_workers_ready 4.0" in metrics
        assert "crash loop" in server.log()
        assert {_infer(server) for _ in range(CALLS)} == {"1"}


def test_a_worker_that_stops_answering_is_replaced_and_holds_up_no_load(repository: Path, tmp_path: Path) -> None:
    with _serve(repository, tmp_path, load_timeout_s="3", drain_timeout_s="1") as server:
        victim = server.wait_workers(4)[1]
        os.kill(victim, signal.SIGSTOP)  # alive, holding its socket and its channel, answering nothing
        try:
            write_version(repository, "m", 2)
            # A quarter of fresh connections reach the stopped worker's socket: those wait, then go again.
            deadline = time.monotonic() + 120
            while True:
                assert time.monotonic() < deadline, server.log()[-4000:]
                try:
                    loaded = httpx.post(
                        f"{server.base_url}/v2/repository/models/m/load",
                        headers=AUTH,
                        timeout=httpx.Timeout(20, connect=5),
                    )
                    break
                except httpx.TimeoutException:
                    continue
            # The others load it; the stopped one is turned away at the first message it leaves unanswered.
            assert loaded.status_code == 200, loaded.text
            assert f"(pid {victim}) can no longer follow the repository state (did not take the index within 3 s)" in (
                server.log()
            )

            # The supervisor ends it (it cannot stop by itself) and starts another, in the decided state.
            server.wait_workers(4, besides={victim})
            assert f"worker pid {victim} still runs 11 s after its control channel closed; killing it" in server.log()
            assert {_infer(server) for _ in range(CALLS)} == {"2"}
            index = _alike(lambda: _index(server))
            assert [e["state"] for e in index if e["name"] == "m"] == ["READY", "READY"], index
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGCONT)
