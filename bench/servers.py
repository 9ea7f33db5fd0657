"""Start a server process on a free local port, wait for it, and account its CPU time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """A server in its own process group; ``cpu_s`` sums user+system time over the process tree."""

    def __init__(
        self, label: str, argv: list[str], port: int, ready_path: str, log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.label = label
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._ready_path = ready_path
        self._log = log.open("wb")
        self._process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(env or {})}
        )

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self._process.returncode}; see {self._log.name}")
            try:
                if httpx.get(self.url + self._ready_path, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.label} not ready after {timeout_s} s; see {self._log.name}")

    def pids(self) -> list[int]:
        """The server and every descendant (uvicorn's worker processes)."""
        parents: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        tree, frontier = [self._process.pid], [self._process.pid]
        while frontier:
            children = [pid for pid, parent in parents.items() if parent in frontier]
            tree += children
            frontier = children
        return tree

    def cpu_s(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        return total / _TICKS

    def stop(self) -> None:
        if self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGINT)
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        self._log.close()


def naive(repository: Path, log: Path) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "bench.naive", "--repository", str(repository), "--port", str(port)]
    return Server("naive", argv, port, "/schema/openapi.json", log)


def weightserve(repository: Path, log: Path, workers: int | None, extra_env: dict[str, str]) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "service.cli", "serve", "--repository", str(repository), "--port", str(port)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    return Server("weightserve", argv, port, "/v2/health/ready", log, extra_env)


def ceiling(log: Path, workers: int) -> Server:
    """The bare-ASGI ceiling (``bench/ceiling.py``) with weightserve's server options and worker count."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.ceiling", "--port", str(port), "--workers", str(workers)]
    return Server("bare-asgi", argv, port, "/ready", log)


def minimal(model: Path, log: Path, workers: int) -> Server:
    """The least a batching model server does (``bench/minimal.py``), on the same stack and worker count."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.minimal", "--model", str(model), "--port", str(port)]
    argv += ["--workers", str(workers)]
    return Server("minimal", argv, port, "/ready", log)
