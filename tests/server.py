"""Start a real ``weightserve serve`` process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        """host:port, the form tritonclient wants (no scheme)."""
        return f"127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def serve(
    repository: Path, log_dir: Path, env: Mapping[str, str] | None = None, ready_timeout_s: float = 60.0
) -> Iterator[RunningServer]:
    """Run the server until the block ends; SIGTERM it then, and wait for it to exit."""
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    # One worker unless a test asks for more: statistics and caches are per process.
    full_env = {**os.environ, "WEIGHTSERVE_LOG_LEVEL": "warning", "WEIGHTSERVE_WORKERS": "1", **(env or {})}
    command = [sys.executable, "-m", "service.cli", "serve", "--repository", str(repository), "--port", str(port)]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=full_env)
    server = RunningServer(process, port, log_path)
    try:
        _wait_ready(server, ready_timeout_s)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(server: RunningServer, timeout_s: float) -> None:
    wait_ready(server.base_url, server.process, server.log, timeout_s)


def wait_ready(
    base_url: str, process: subprocess.Popen[bytes], log: Callable[[], str], timeout_s: float = 60.0
) -> None:
    """Poll readiness until 200; fail with the server's log if it exits or never gets there."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log()}")
        try:
            if httpx.get(f"{base_url}/v2/health/ready", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout_s} s:\n{log()}")
