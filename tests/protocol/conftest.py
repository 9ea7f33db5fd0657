from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import model_factory as mf
from tests.server import RunningServer, serve

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED = REPO_ROOT / "models"
SHIPPED_MODELS = sorted(p.name for p in SHIPPED.iterdir() if p.is_dir()) if SHIPPED.is_dir() else []
MAX_REQUEST_BYTES = 4 * 1024 * 1024


def build_protocol_repository(root: Path) -> Path:
    for datatype in mf.ONNX_TYPES:
        mf.save(mf.identity(datatype), root, f"identity_{datatype.lower()}")
    mf.save(mf.add_sub(), root, "simple")
    mf.save(mf.fixed_shape(), root, "fixed")
    for name in SHIPPED_MODELS:
        shutil.copytree(SHIPPED / name, root / name)
    return root


@pytest.fixture(scope="session")
def protocol_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_protocol_repository(tmp_path_factory.mktemp("repository"))


@pytest.fixture(scope="session")
def server(protocol_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {"WEIGHTSERVE_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES)}
    with serve(protocol_repository, tmp_path_factory.mktemp("logs"), env=env) as running:
        yield running
