"""manifest.json follows the contract, its hashes match the files, its tensor map is true."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from safetensors.numpy import load_file

from tests.training.conftest import MODELS, REPOSITORY, read_manifest

TOP_LEVEL = {
    "format", "model", "version", "created", "task", "inputs", "outputs", "dataset", "split", "seed",
    "hyperparameters", "metrics", "finetuned_from", "parity", "versions", "files", "tensors",
}  # fmt: skip
SHIPPED = [("digits_cnn", 1), ("digits_cnn", 2), ("diabetes_mlp", 1), ("digits_autoencoder", 1)]

pytestmark = pytest.mark.torch


def _initializers(folder: Path) -> dict[str, np.ndarray]:
    graph = onnx.load(str(folder / "model.onnx")).graph
    return {i.name: numpy_helper.to_array(i) for i in graph.initializer}


def _check_contract(folder: Path, name: str, version: int) -> dict[str, Any]:
    manifest = read_manifest(folder)
    assert set(manifest) == TOP_LEVEL
    assert (manifest["format"], manifest["model"], manifest["version"]) == (1, name, version)
    assert manifest["split"]["seed"] == manifest["seed"]
    assert manifest["parity"]["max_abs_diff"] <= 1e-4
    assert manifest["parity"]["samples"] == manifest["split"]["test"]
    assert manifest["versions"]["exporter"] == "dynamo"
    assert manifest["versions"]["opset"] >= 17
    for file_name, entry in manifest["files"].items():
        content = (folder / file_name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}
    assert set(manifest["files"]) == {"model.onnx", "weights.safetensors"}
    graph = onnx.load(str(folder / "model.onnx")).graph
    for entries, values in ((manifest["inputs"], graph.input), (manifest["outputs"], graph.output)):
        assert [e["name"] for e in entries] == [v.name for v in values]
        assert all(e["datatype"] == "FP32" and e["shape"][0] == -1 for e in entries)
    return manifest


@pytest.mark.parametrize("name", MODELS)
def test_tiny_run_manifest_follows_the_contract(tiny_repository: Path, name: str) -> None:
    manifest = _check_contract(tiny_repository / name / "1", name, 1)
    assert manifest["finetuned_from"] is None
    assert manifest["seed"] == 5
    assert manifest["hyperparameters"]["epochs"] == 1
    # The held-out split and three generated batches of other sizes, each within the tolerance.
    checks = manifest["parity"]["checks"]
    assert [(c["inputs"], c["batch_size"]) for c in checks] == [
        ("example", manifest["split"]["test"]), ("generated", 1), ("generated", 3), ("generated", 7),
    ]  # fmt: skip
    assert max(c["max_abs_diff"] for c in checks) == manifest["parity"]["max_abs_diff"] <= 1e-4
    assert all(entry["shared_with"] is None for entry in manifest["tensors"])


@pytest.mark.parametrize(("name", "version"), SHIPPED)
def test_shipped_manifest_follows_the_contract(name: str, version: int) -> None:
    _check_contract(REPOSITORY / name / str(version), name, version)


def test_task_entries(tiny_repository: Path) -> None:
    tasks = {name: read_manifest(tiny_repository / name / "1")["task"] for name in MODELS}
    assert tasks == {
        "digits_cnn": {"kind": "classification", "labels": [str(d) for d in range(10)]},
        "diabetes_mlp": {"kind": "regression", "targets": ["disease_progression"]},
        "digits_autoencoder": {"kind": "image_to_image", "data_range": 16.0},
    }


@pytest.mark.parametrize("name", MODELS)
def test_tensor_map_covers_the_state_dict_and_is_true(tiny_repository: Path, name: str) -> None:
    folder = tiny_repository / name / "1"
    state = load_file(str(folder / "weights.safetensors"))
    inits = _initializers(folder)
    entries = read_manifest(folder)["tensors"]
    assert sorted(e["state_dict_key"] for e in entries) == sorted(state)
    for entry in entries:
        value, init_name = state[entry["state_dict_key"]], entry["onnx_initializer"]
        if entry["relation"] == "identical":
            np.testing.assert_array_equal(inits[init_name], value)
        elif entry["relation"] == "transposed":
            np.testing.assert_array_equal(inits[init_name], value.T)
        elif entry["relation"] == "folded":
            bn = entry["folded_from"]
            assert [k.rsplit(".", 1)[1] for k in bn] == ["weight", "bias", "running_mean", "running_var"]
            scale = state[bn[0]] / np.sqrt(state[bn[3]] + 1e-5)
            np.testing.assert_allclose(inits[init_name], value * scale[:, None, None, None], rtol=1e-5, atol=1e-6)
        else:
            assert entry == {
                "state_dict_key": entry["state_dict_key"], "onnx_initializer": None,
                "relation": "absent", "folded_from": None, "shared_with": None,
            }  # fmt: skip


def test_cnn_convolutions_are_folded_and_batchnorm_absent(tiny_repository: Path) -> None:
    entries = {e["state_dict_key"]: e for e in read_manifest(tiny_repository / "digits_cnn" / "1")["tensors"]}
    relations = {key: e["relation"] for key, e in entries.items()}
    assert relations["features.0.weight"] == "folded"
    assert entries["features.0.weight"]["folded_from"] == [
        "features.1.weight", "features.1.bias", "features.1.running_mean", "features.1.running_var",
    ]  # fmt: skip
    assert relations["features.1.running_var"] == "absent"
    assert relations["head.weight"] == relations["head.bias"] == "identical"


def test_diabetes_scaling_buffers_travel_in_the_graph(tiny_repository: Path) -> None:
    entries = read_manifest(tiny_repository / "diabetes_mlp" / "1")["tensors"]
    relations = {e["state_dict_key"]: e["relation"] for e in entries}
    for key in ("feature_mean", "feature_std", "target_mean", "target_std"):
        assert relations[key] == "identical"


def test_finetuned_version_records_its_base(tiny_repository: Path) -> None:
    base = read_manifest(tiny_repository / "digits_cnn" / "1")
    tuned = _check_contract(tiny_repository / "digits_cnn" / "2", "digits_cnn", 2)
    assert tuned["finetuned_from"] == 1
    assert tuned["seed"] == base["seed"]
    assert tuned["split"] == base["split"]
    assert tuned["hyperparameters"]["architecture"] == base["hyperparameters"]["architecture"]
    finetune = tuned["hyperparameters"]["finetune"]
    assert finetune["from_version"] == 1
    assert finetune["lr"] < base["hyperparameters"]["lr"]
    v1 = load_file(str(tiny_repository / "digits_cnn" / "1" / "weights.safetensors"))
    v2 = load_file(str(tiny_repository / "digits_cnn" / "2" / "weights.safetensors"))
    assert set(v1) == set(v2)
    assert not np.array_equal(v1["head.weight"], v2["head.weight"])


def test_shipped_finetune_starts_from_version_one() -> None:
    tuned = read_manifest(REPOSITORY / "digits_cnn" / "2")
    assert tuned["finetuned_from"] == 1
    assert torch.__version__.split("+")[0] == tuned["versions"]["torch"].split("+")[0]
