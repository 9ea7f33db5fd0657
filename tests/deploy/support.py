"""Helpers shared by the deployment tests: the repository root, free ports, the cache, measurements."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "deploy"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cache_dir() -> Path:
    """Where the base-image tarball and the wheelhouse persist between runs."""
    explicit = os.environ.get("WEIGHTSERVE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "weightserve"


class Measurements:
    """Figures a test reports (sizes, times, throughput), written to tests/artifacts/deploy/."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._values: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    def record(self, key: str, value: Any) -> None:
        self._values[key] = value
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._path.write_text(json.dumps(self._values, indent=2, sort_keys=True) + "\n")
