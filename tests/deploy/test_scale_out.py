"""Scale-out on loopback: three replicas behind nginx, one killed mid-run, zero failed requests.

Replicas are `weightserve serve` processes on their own ports; nginx (Debian's package) uses the
project's deploy/nginx/weightserve-locations.conf, so the retry policy tested is the shipped one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.load import LoadResult, run_load
from tests.deploy.models import write_identity_chain
from tests.deploy.processes import ManagedProcess, start_nginx, start_replica, wait_http_ok
from tests.deploy.support import Measurements, free_port
from tests.deploy.tools import executable

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPLICAS = 3
CONCURRENCY = 16
THROUGHPUT_REQUESTS = 1500
FAILOVER_REQUESTS = 3000
DEADLINE_S = 120.0


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[int, ManagedProcess]]]:
    folder = tmp_path_factory.mktemp("replicas")
    repository = folder / "repository"
    write_identity_chain(repository, "identity", width=16, depth=1)
    started: list[tuple[int, ManagedProcess]] = []
    try:
        for i in range(REPLICAS):
            port = free_port()
            started.append((port, start_replica(repository, port, folder / f"replica-{i}.log")))
        for port, process in started:
            wait_http_ok(f"http://127.0.0.1:{port}/v2/health/ready", process)
        yield started
    finally:
        for _, process in started:
            process.stop()


def _through_nginx(
    tmp_path: Path,
    upstream_ports: list[int],
    total: int,
    kill: ManagedProcess | None = None,
    killed_at: list[float] | None = None,
) -> LoadResult:
    port = free_port()
    nginx = start_nginx(executable("nginx"), tmp_path / "nginx", port, upstream_ports)
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/v2/health/ready", nginx)

        def kill_a_third_of_the_way(done: int) -> None:
            if kill is not None and kill.alive() and done >= total // 3:
                kill.kill()
                if killed_at is not None:
                    killed_at.append(time.monotonic())

        load = run_load(
            f"http://127.0.0.1:{port}/v2/models/identity/infer",
            total=total,
            concurrency=CONCURRENCY,
            deadline_s=DEADLINE_S,
            on_progress=kill_a_third_of_the_way,
        )
        return asyncio.run(load)
    finally:
        nginx.stop()


def test_one_and_three_replicas_serve_every_request(
    replicas: list[tuple[int, ManagedProcess]], tmp_path: Path, measurements: Measurements
) -> None:
    ports = [port for port, _ in replicas]
    one = _through_nginx(tmp_path / "one", ports[:1], THROUGHPUT_REQUESTS)
    three = _through_nginx(tmp_path / "three", ports, THROUGHPUT_REQUESTS)
    for result in (one, three):
        assert result.failures == []
        assert result.succeeded == THROUGHPUT_REQUESTS
    # The balancer spreads the load over every replica.
    assert set(three.upstreams) == {f"127.0.0.1:{p}" for p in ports}
    measurements.record("scale_out_requests_per_s_1_replica", round(one.requests_per_s, 1))
    measurements.record("scale_out_requests_per_s_3_replicas", round(three.requests_per_s, 1))


def test_killing_a_replica_mid_run_fails_no_request(
    replicas: list[tuple[int, ManagedProcess]], tmp_path: Path, measurements: Measurements
) -> None:
    ports = [port for port, _ in replicas]
    victim_port, victim = replicas[1]
    victim_address = f"127.0.0.1:{victim_port}"
    killed_at: list[float] = []
    result = _through_nginx(tmp_path / "failover", ports, FAILOVER_REQUESTS, kill=victim, killed_at=killed_at)
    assert not victim.alive()
    [kill_time] = killed_at
    # A request is retried on another replica as long as nginx has sent nothing back; the only
    # answers that cannot be saved are those the victim had started (status line and headers
    # out, body not) in the instant it died. Nothing else may fail, and nothing sent later.
    unsaved = [f for f in result.failures if f.truncated and f.upstream == victim_address and f.started < kill_time]
    assert [f for f in result.failures if f not in unsaved] == []
    assert len(unsaved) <= CONCURRENCY
    assert result.succeeded + len(unsaved) == FAILOVER_REQUESTS
    # The victim answered before it died; the survivors answered everything after.
    assert result.upstreams[victim_address] > 0
    measurements.record(
        "failover",
        {
            "requests": result.sent,
            "succeeded": result.succeeded,
            "failed": len(result.failures),
            "cut_off_mid_answer_by_the_kill": len(unsaved),
            "retried_on_another_replica": result.retried,
            "answered_by": dict(result.upstreams),
            "requests_per_s": round(result.requests_per_s, 1),
        },
    )
