"""The same job, data-parallel in two processes under torchrun (gloo on CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.conftest import REPOSITORY, read_manifest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.torch


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_processes_reach_the_quality_of_one(tmp_path: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    rendezvous = ["--standalone"]  # a free local port for the c10d rendezvous
    job = ["-m", "training", "diabetes_mlp", "--repository", str(tmp_path)]
    done = subprocess.run(
        [*launcher, *rendezvous, *job],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env=env,
        cwd=ROOT,
    )
    # The progress bar fills stderr; the ranks' own errors are in the lines around it.
    assert done.returncode == 0, "\n".join(line for line in done.stderr.splitlines() if "step/s" not in line)[-4000:]
    # Only rank 0 publishes: exactly one version (and the model's example requests).
    assert sorted(p.name for p in (tmp_path / "diabetes_mlp").iterdir()) == ["1", "examples"]
    parallel = read_manifest(tmp_path / "diabetes_mlp" / "1")
    single = read_manifest(REPOSITORY / "diabetes_mlp" / "1")
    assert parallel["hyperparameters"]["processes"] == 2
    assert parallel["metrics"]["r2"] >= 0.40
    assert parallel["metrics"]["r2"] == pytest.approx(single["metrics"]["r2"], abs=0.02)
    assert parallel["metrics"]["mae"] == pytest.approx(single["metrics"]["mae"], abs=1.0)
