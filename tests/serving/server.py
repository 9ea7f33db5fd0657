"""A real ``weightserve serve`` process on a free loopback port, for end-to-end lifecycle tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from tests.server import free_port, wait_ready

ADMIN_TOKEN = "lifecycle-test-token"


class ServerProcess:
    """Starts the server, waits until it is ready, and stops it (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, repository: Path, log_path: Path, **settings: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("WEIGHTSERVE_")}
        env.update({f"WEIGHTSERVE_{key.upper()}": value for key, value in settings.items()})
        env.setdefault("WEIGHTSERVE_ADMIN_TOKEN", ADMIN_TOKEN)
        env.setdefault("WEIGHTSERVE_WORKERS", "1")
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self._command = [
            sys.executable, "-m", "service.cli", "serve",
            "--repository", os.fspath(repository), "--port", str(self.port), "--log-level", "info",
        ]  # fmt: skip
        self._env = env
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        self._log = self.log_path.open("wb")
        root = Path(__file__).resolve().parents[2]
        self.process = subprocess.Popen(
            self._command, env=self._env, cwd=root, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        assert self.process is not None
        wait_ready(self.url, self.process, self.log, timeout_s)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-6000:]

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
