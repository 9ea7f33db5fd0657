"""`weightserve publish FACTORY --checkpoint FILE ...`: a saved state_dict becomes a version; bad input is
one line on stderr, exit status 2, and nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.torch_zoo import TwoHeads, trained_like
from tests.training.conftest import read_manifest
from training.publish_cli import main

ROOT = Path(__file__).resolve().parents[2]
FACTORY = "tests.torch_zoo:TwoHeads"

pytestmark = pytest.mark.torch


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[Path, TwoHeads]:
    module = trained_like(TwoHeads(features=4, classes=2), seed=3)
    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 9, "state_dict": {f"module.{k}": v for k, v in module.state_dict().items()}}, path)
    return path, module


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    return root


def test_a_checkpoint_is_published_with_random_examples(
    checkpoint: tuple[Path, TwoHeads], repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = checkpoint
    argv = [
        FACTORY, "--checkpoint", str(path), "--name", "two", "--repository", str(repository),
        "--factory-kwargs", '{"features": 4, "classes": 2}',
        "--example-shape", "2,1,8,8", "--example-shape", "2,4", "--task", "classification", "--labels", "no,yes",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"two v1 -> {repository / 'two' / '1'} (onnxruntime vs torch: max abs diff ")
    manifest = read_manifest(repository / "two" / "1")
    # Input names from forward's signature; outputs numbered.
    assert [t["name"] for t in manifest["inputs"]] == ["image", "features"]
    assert [t["name"] for t in manifest["outputs"]] == ["output_0", "output_1"]
    assert manifest["task"] == {"kind": "classification", "labels": ["no", "yes"]}
    assert manifest["dataset"]["factory"] == FACTORY
    relations = {e["state_dict_key"]: e["relation"] for e in manifest["tensors"]}
    assert relations["conv.0.weight"] == "folded"  # the checkpoint's weights, not the factory's random ones
    np.testing.assert_array_equal(
        next(e for e in manifest["tensors"] if e["state_dict_key"] == "classes.weight")["onnx_initializer"],
        "classes.weight",
    )
    assert not (repository / "two" / "examples").exists()


def test_real_example_inputs_are_also_written_as_an_example_request(tmp_path: Path, repository: Path) -> None:
    module = trained_like(TwoHeads())
    weights = tmp_path / "weights.safetensors"
    save_file(module.state_dict(), str(weights))
    image, features = tmp_path / "image.npy", tmp_path / "features.npy"
    np.save(image, np.random.default_rng(0).uniform(0, 1, (6, 1, 8, 8)).astype(np.float32))
    np.save(features, np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32))
    argv = [
        FACTORY, "--checkpoint", str(weights), "--name", "two", "--repository", str(repository),
        "--example-file", str(image), "--example-file", str(features),
        "--input-name", "picture", "--input-name", "numbers", "--output-name", "scores", "--output-name", "amount",
    ]  # fmt: skip
    assert main(argv) == 0
    body = json.loads((repository / "two" / "examples" / "example.json").read_text())
    assert [(t["name"], t["shape"]) for t in body["inputs"]] == [("picture", [4, 1, 8, 8]), ("numbers", [4, 5])]
    assert [t["name"] for t in read_manifest(repository / "two" / "1")["outputs"]] == ["scores", "amount"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"factory": "tests.training.nowhere:Model"}, "cannot import tests.training.nowhere:Model"),
        ({"factory": "tests.torch_zoo"}, "FACTORY must be module.path:callable"),
        ({"factory": "tests.torch_zoo:FACTORY_IS_NOT_HERE"}, "cannot import"),
        ({"factory": "tests.torch_zoo:_make_divisible"}, "failed: TypeError"),
        ({"--factory-kwargs": "[1]"}, "--factory-kwargs must be a JSON object"),
        ({"--factory-kwargs": '{"features": 9}'}, "does not fit the module"),
        ({"--checkpoint": "absent.pt"}, "does not exist"),
        ({"--example-shape": "2,a"}, "is not a list of integers"),
        ({"--example-shape": "2,1,8,8"}, "1 example inputs for the 2 inputs"),
        ({"--example-dtype": "complex64"}, "use one of"),
        ({"--example-range": "1,0"}, "LOW must be below HIGH"),
        ({"--labels": "a,b"}, "give the task too"),
        ({"--name": "../up"}, "invalid model name"),
        ({"--repository": "absent"}, "does not exist"),
        ({"--task": "image_to_image"}, "needs data_range"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    checkpoint: tuple[Path, TwoHeads],
    repository: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, str],
    message: str,
) -> None:
    path, _ = checkpoint
    options = {
        "--checkpoint": str(path), "--name": "two", "--repository": str(repository),
        "--factory-kwargs": '{"features": 4, "classes": 2}', "--example-shape": "2,1,8,8",
    }  # fmt: skip
    factory = change.pop("factory", FACTORY)
    options |= {k: (str(tmp_path / v) if k in ("--checkpoint", "--repository") else v) for k, v in change.items()}
    argv = [factory, *[part for key, value in options.items() for part in (key, value)]]
    if "--example-shape" not in change:
        argv += ["--example-shape", "2,4"]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("weightserve publish: error: ")
    assert message in err
    assert _tree(repository) == []


def test_a_checkpoint_that_is_not_a_state_dict(
    tmp_path: Path, repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "other.pt"
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, path)
    argv = [FACTORY, "--checkpoint", str(path), "--name", "two", "--repository", str(repository)]
    assert main([*argv, "--example-shape", "2,1,8,8", "--example-shape", "2,5"]) == 2
    assert "is not a state_dict; its keys are ['epoch', 'optimizer']" in capsys.readouterr().err
    assert _tree(repository) == []


def test_the_module_entry_point_reports_without_a_traceback(repository: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "training.publish_cli", "nowhere:Model", "--checkpoint", "x.pt", "--name", "m",
         "--repository", str(repository), "--example-shape", "2,3"],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "weightserve publish: error: cannot import nowhere:Model: No module named 'nowhere'"
    ]
    assert _tree(repository) == []
