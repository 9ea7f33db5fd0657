"""Server processes for the scale-out test: weightserve replicas and an nginx in front of them.

Each runs as a child of the test on a 127.0.0.1 port, with its own files in a temporary folder,
and is stopped by its own process id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from tests.deploy.support import ROOT


class ManagedProcess:
    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self._log: IO[bytes] = log_path.open("wb")
        self.log_path = log_path
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the replica dies mid-request, as in a crash or an OOM kill."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self._log.close()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def start_replica(repository: Path, port: int, log_path: Path) -> ManagedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "WEIGHTSERVE_REPOSITORY": str(repository),
        "WEIGHTSERVE_HOST": "127.0.0.1",
        "WEIGHTSERVE_PORT": str(port),
        # A replica is one process (killing it kills the replica); replicas share the cores.
        "WEIGHTSERVE_WORKERS": "1",
        "WEIGHTSERVE_INTRA_OP_THREADS": "1",
        "WEIGHTSERVE_INTER_OP_THREADS": "1",
        "WEIGHTSERVE_LOG_LEVEL": "warning",
    }
    argv = [sys.executable, "-c", "import sys; from service.cli import main; sys.exit(main(sys.argv[1:]))", "serve"]
    return ManagedProcess(argv, log_path, env)


def wait_http_ok(url: str, process: ManagedProcess, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"process exited ({process.process.returncode}):\n{process.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (TimeoutError, urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not answering 200 after {timeout_s:.0f} s:\n{process.log_tail()}")


def nginx_config(prefix: Path, port: int, upstream_ports: list[int]) -> str:
    """A loopback nginx around the project's own locations file (the retry policy under test)."""
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in upstream_ports)
    temp = {name: prefix / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    return f"""
daemon off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    upstream weightserve {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        # Which replica answered, and which were tried first: the test reads the retries here.
        add_header X-Upstream $upstream_addr always;
        include {ROOT / "deploy" / "nginx" / "weightserve-locations.conf"};
    }}
}}
"""


def start_nginx(nginx: str, prefix: Path, port: int, upstream_ports: list[int]) -> ManagedProcess:
    prefix.mkdir(parents=True, exist_ok=True)
    config = prefix / "nginx.conf"
    config.write_text(nginx_config(prefix, port, upstream_ports))
    argv = [nginx, "-p", str(prefix), "-c", str(config), "-e", str(prefix / "error.log")]
    return ManagedProcess(argv, prefix / "stdout.log")
