"""Serve prebuilt wheels over loopback HTTP so an image build installs with no index at all.

The host's pip (with whatever index settings the machine has) downloads or builds the wheels
once into a cached folder; a `docker build --network host` then installs from
`PIP_FIND_LINKS=http://127.0.0.1:PORT/` with `PIP_NO_INDEX=1`.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import threading
import tomllib
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any


def build_wheelhouse(pyproject: Path, wheel_dir: Path) -> None:
    """Wheels of the project's base dependencies and its build backend, into `wheel_dir`."""
    project = tomllib.loads(pyproject.read_text())
    requirements = [*project["project"]["dependencies"], *project["build-system"]["requires"], "wheel"]
    wheel_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheel_dir), *requirements],
        check=True,
        capture_output=True,
        timeout=900,
    )


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class WheelServer:
    """`with WheelServer(folder) as url:` serves `folder` on 127.0.0.1 until the block ends."""

    def __init__(self, directory: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
