"""Start a real ``weightserve serve`` process on a free loopback port, for end-to-end tests.

The one helper every end-to-end test uses: ``serve(repository, log_dir, workers=4, admin_token=...)``.
The server gets a clean environment (no ``WEIGHTSERVE_*`` of the caller's), one worker unless a test
asks for more, and is stopped with SIGTERM (then SIGKILL) when the block ends.
"""

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
from typing import Any

import httpx

ADMIN_TOKEN = "end-to-end-test-token"
ROOT = Path(__file__).resolve().parents[1]


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

    def workers(self) -> dict[str, Any]:
        """The worker pool as the readiness endpoint reports it (any worker answers)."""
        body: dict[str, Any] = httpx.get(f"{self.base_url}/v2/health/ready", timeout=10).json()["workers"]
        return body

    def worker_pids(self) -> list[int]:
        """The processes that hold a listening socket on the port (the server itself with one worker)."""
        listening = listening_inodes(self.port)
        candidates = [self.process.pid, *children(self.process.pid)]
        return sorted(pid for pid in candidates if socket_inodes(pid) & listening)

    def wait_workers(self, count: int, timeout_s: float = 90.0, *, besides: set[int] | None = None) -> list[int]:
        """Wait until ``count`` workers listen and the pool reports them ready; their pids.
        ``besides``: pids that must be gone (a replaced worker)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            pids = self.worker_pids()
            fresh = not (besides and besides & set(pids))
            try:
                ready = self.workers()["ready"]
            except (httpx.HTTPError, KeyError, ValueError):
                ready = -1
            if len(pids) == count and ready == count and fresh:
                return pids
            time.sleep(0.1)
        raise AssertionError(f"not {count} workers ready after {timeout_s} s:\n{self.log()[-6000:]}")


@contextmanager
def serve(
    repository: Path,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    ready_timeout_s: float = 60.0,
    *,
    port: int | None = None,
    **settings: str,
) -> Iterator[RunningServer]:
    """Run the server until the block ends; SIGTERM it then, and wait for it to exit.

    ``settings`` become ``WEIGHTSERVE_<NAME>`` variables (``workers="4"``, ``admin_token=ADMIN_TOKEN``);
    ``env`` adds any other variables. Raises RuntimeError with the log if the server exits first.
    """
    port = port or free_port()
    log_path = log_dir / f"server-{port}.log"
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith("WEIGHTSERVE_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    full_env = {
        **inherited,
        "WEIGHTSERVE_LOG_LEVEL": "warning",
        "WEIGHTSERVE_WORKERS": "1",
        # Never the machine's own weights cache: what one run computed would hide the next run's work.
        # A test that wants to share one across servers sets it (the weights tests' own fixture does).
        "WEIGHTSERVE_WEIGHTS_CACHE_DIR": os.environ.get("WEIGHTSERVE_WEIGHTS_CACHE_DIR", str(log_dir / "weights-cache")),
        **{f"WEIGHTSERVE_{key.upper()}": value for key, value in settings.items()},
        **(env or {}),
    }
    command = [sys.executable, "-m", "service.cli", "serve", "--repository", str(repository), "--port", str(port)]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT)
    server = RunningServer(process, port, log_path)
    try:
        wait_ready(server.base_url, process, server.log, ready_timeout_s)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


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


def listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on ``port`` (IPv4 and IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    found = set()
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return found
    for fd in descriptors:
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
