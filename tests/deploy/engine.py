"""A private Docker engine for the container tests, started and stopped by the test itself.

dockerd runs with no bridge and no iptables rules (containers use the host's network and bind
127.0.0.1 only), its own data root, exec root, pidfile and socket in a fresh temporary folder,
so it neither needs nor touches a system engine. Stopping it sends SIGTERM to the one process
this object started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO


class EngineError(RuntimeError):
    """The engine did not start or a docker command failed."""


class DockerEngine:
    def __init__(self, dockerd: str, docker: str) -> None:
        # Short path: containerd's sockets live under the exec root and a unix socket path is
        # limited to 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="wsd-"))
        self._dockerd = dockerd
        self._docker = docker
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_CLI_HINTS": "false"}

    def start(self, timeout_s: float = 60.0) -> None:
        self._log = (self.root / "dockerd.log").open("wb")
        argv = [
            self._dockerd,
            "--bridge=none",
            "--iptables=false",
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "docker.pid"),
            "--host", self.host,
        ]  # fmt: skip
        self._process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EngineError(f"dockerd exited with {self._process.returncode}:\n{self.log_tail()}")
            probe = subprocess.run(
                [self._docker, "version", "--format", "{{.Server.Version}}"],
                env=self.env,
                capture_output=True,
                timeout=30,
                check=False,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.5)
        raise EngineError(f"dockerd not answering after {timeout_s:.0f} s:\n{self.log_tail()}")

    def docker(self, *args: str, timeout_s: float = 300.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self._docker, *args], env=self.env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if check and result.returncode != 0:
            raise EngineError(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
        return result

    def log_tail(self, chars: int = 4000) -> str:
        path = self.root / "dockerd.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self) -> None:
        """Remove every container, stop the daemon by its pid, delete its folder (images too)."""
        if self._process is not None and self._process.poll() is None:
            containers = self.docker("ps", "-aq", check=False).stdout.split()
            if containers:
                self.docker("rm", "-f", *containers, check=False)
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=30)
        if self._log is not None:
            self._log.close()
        self._unmount_leftovers()
        shutil.rmtree(self.root, ignore_errors=True)

    def _unmount_leftovers(self) -> None:
        # dockerd leaves its default network namespace bind-mounted under the exec root.
        mounts = Path("/proc/mounts").read_text().splitlines() if Path("/proc/mounts").exists() else []
        points = [line.split()[1] for line in mounts if len(line.split()) > 1]
        for point in sorted((p for p in points if p.startswith(f"{self.root}/")), reverse=True):
            subprocess.run(["umount", "--lazy", point], capture_output=True, timeout=30, check=False)
