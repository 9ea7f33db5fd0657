"""``weightserve serve --workers N``: one listening socket per worker, graceful stop, failed starts."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import httpx
import pytest

from tests import model_factory as mf
from tests.server import serve


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    mf.save(mf.identity("FP32", width=4), root, "echo")
    return root


@pytest.mark.timeout(180)
def test_each_worker_listens_on_its_own_socket_and_a_sigterm_stops_all_cleanly(
    repository: Path, tmp_path: Path
) -> None:
    with serve(repository, tmp_path, workers="2") as server:
        owners = server.wait_workers(2)  # two worker processes, one listening socket each
        assert server.process.pid not in owners
        body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
        for _ in range(8):  # a new connection each time: any worker may answer
            answer = httpx.post(f"{server.base_url}/v2/models/echo/infer", json=body, timeout=10)
            assert answer.status_code == 200
            assert answer.json()["outputs"][0]["data"] == [1, 2, 3, 4]
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(timeout=60)
    assert code == 0, server.log()
    assert not [pid for pid in owners if Path(f"/proc/{pid}").exists()]


@pytest.mark.timeout(180)
def test_workers_that_cannot_start_stop_the_server_instead_of_restarting_forever(
    repository: Path, tmp_path: Path
) -> None:
    with socket.socket() as taken:  # a listener without SO_REUSEPORT: nobody else may bind the port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="server exited with 1"), serve(
            repository, tmp_path, ready_timeout_s=120, port=port, workers="2", log_level="info"
        ):
            pass
    log = next(tmp_path.glob("server-*.log")).read_text()
    assert "before it was ever ready: a configuration problem" in log
