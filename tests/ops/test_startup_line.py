"""The startup line: once the whole server serves, one log line says where it listens, how many workers
it runs, which repository it serves and every version loaded with its execution providers; written by
the one process with one worker, by the supervisor with several, and never again after a worker is
replaced."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server import RunningServer, serve

pytestmark = pytest.mark.timeout(240)

MODELS = Path(__file__).resolve().parents[2] / "models"


def _startup_lines(server: RunningServer, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """The startup lines in the server's log, once there is at least one."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = []
        for line in server.log().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("logger") == "service.serve":
                    lines.append(entry)
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def _served(server: RunningServer) -> list[dict[str, Any]]:
    """Every version loaded, with its providers, as the API reports them."""
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        index = client.post("/v2/repository/index", json={"ready": True}).json()
        served = []
        for entry in sorted(index, key=lambda e: (e["name"], int(e["version"]))):
            metadata = client.get(f"/v2/models/{entry['name']}/versions/{entry['version']}").json()
            providers = metadata["parameters"]["execution_providers"].split(",")
            served.append({"name": entry["name"], "version": entry["version"], "providers": providers})
    return served


@pytest.mark.parametrize("workers", [1, 2])
def test_the_server_says_once_where_it_listens_and_what_it_serves(tmp_path: Path, workers: int) -> None:
    with serve(MODELS, tmp_path, workers=str(workers), log_level="info") as server:
        lines = _startup_lines(server)
        assert len(lines) == 1, server.log()[-4000:]
        line = lines[0]
        assert line["url"] == server.base_url
        assert line["workers"] == workers
        assert line["repository"] == str(MODELS.resolve())
        assert line["models"] == _served(server)
        assert {m["name"] for m in line["models"]} == {"digits_cnn", "diabetes_mlp", "digits_autoencoder"}
        assert server.base_url in line["message"]
        assert f"{workers} worker" in line["message"]
        assert "digits_cnn v1, v2 on CPUExecutionProvider" in line["message"]
        pids = server.wait_workers(workers)
        if workers > 1:
            # The supervisor writes it once every worker is ready.
            log = server.log()
            startup = log.index('"logger": "service.serve"')
            assert all(f'"message": "worker {slot} (pid' in log[:startup] for slot in range(workers))
            # A replaced worker rejoins without a second startup line.
            os.kill(pids[0], signal.SIGKILL)
            server.wait_workers(workers, besides={pids[0]})
            assert len(_startup_lines(server)) == 1
