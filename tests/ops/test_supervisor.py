"""``weightserve serve --workers N``: one listening socket per worker, graceful stop, failed starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests import model_factory as mf
from tests.server import free_port


def start(repository: Path, port: int, log: Path, workers: int = 2) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "service.cli", "serve", "--repository", str(repository), "--port", str(port)]
    env = {**os.environ, "WEIGHTSERVE_LOG_LEVEL": "warning", "WEIGHTSERVE_WORKERS": str(workers)}
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not ready:\n{log.read_text()}")


def listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    mf.save(mf.identity("FP32", width=4), root, "echo")
    return root


@pytest.mark.timeout(180)
def test_each_worker_listens_on_its_own_socket_and_a_sigterm_stops_all_cleanly(
    repository: Path, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    process = start(repository, port, log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(process, url, log)
        # Readiness answers as soon as one worker is up; the other may still be loading.
        deadline = time.monotonic() + 90
        while len(listening := listening_inodes(port)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(listening) == 2
        owners = [pid for pid in children(process.pid) if socket_inodes(pid) & listening]
        assert len(owners) == 2  # two worker processes, one listening socket each
        body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
        for _ in range(8):  # a new connection each time: any worker may answer
            answer = httpx.post(f"{url}/v2/models/echo/infer", json=body, timeout=10)
            assert answer.status_code == 200
            assert answer.json()["outputs"][0]["data"] == [1, 2, 3, 4]
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    assert code == 0, log.read_text()
    assert not [pid for pid in owners if Path(f"/proc/{pid}").exists()]


@pytest.mark.timeout(180)
def test_workers_that_cannot_start_stop_the_server_instead_of_restarting_forever(
    repository: Path, tmp_path: Path
) -> None:
    with socket.socket() as taken:  # a listener without SO_REUSEPORT: nobody else may bind the port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / "serve.log"
        process = start(repository, port, log)
        try:
            code = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
    assert code != 0
