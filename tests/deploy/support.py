"""Helpers shared by the deployment tests: the repository root, free ports, the cache, measurements."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.server import free_port

__all__ = ["ARTIFACTS", "ROOT", "Measurements", "cache_dir", "free_port"]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "deploy"


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
