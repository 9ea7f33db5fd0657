"""The shipped models' example requests are what `weightserve train` writes: real held-out samples of
the seeded split, byte for byte, usable on the served model as they are."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from tests.training.conftest import MODELS, REPOSITORY, read_manifest
from training import examples
from training.examples import Example
from training.inputs import to_arrays
from training.tasks import TASKS

pytestmark = pytest.mark.torch


def _expected_files(name: str) -> dict[str, str]:
    """The example files the training job writes for the shipped version's seed (no training needed)."""
    seed = read_manifest(REPOSITORY / name / "1")["seed"]
    task = TASKS[name]()
    prepared = task.prepare(seed, task.defaults)
    found: dict[str, str] = {}
    for example_name, example in task.examples(prepared, seed).items():
        assert isinstance(example, Example)
        inputs = to_arrays(example.inputs, [task.input_name], "example")
        body = examples.request_body([task.input_name], inputs, example.targets, example.description)
        found[example_name] = examples.dumps(body)
    return found


@pytest.mark.parametrize("name", MODELS)
def test_shipped_examples_are_what_training_writes(name: str) -> None:
    folder = REPOSITORY / name / "examples"
    expected = _expected_files(name)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.json" for n in expected)
    for example_name, text in expected.items():
        assert (folder / f"{example_name}.json").read_text() == text, example_name


@pytest.mark.parametrize("name", MODELS)
def test_shipped_examples_are_held_out_samples_the_model_gets_right(name: str) -> None:
    version = REPOSITORY / name / "1"
    manifest = read_manifest(version)
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    for path in sorted((REPOSITORY / name / "examples").glob("*.json")):
        body = json.loads(path.read_text())
        tensors = {t["name"]: np.asarray(t["data"], np.float32).reshape(t["shape"]) for t in body["inputs"]}
        assert [t["datatype"] for t in body["inputs"]][:1] == [manifest["inputs"][0]["datatype"]]
        (output,) = session.run(None, {manifest["inputs"][0]["name"]: tensors[manifest["inputs"][0]["name"]]})
        if "targets" not in tensors:
            continue
        targets = tensors["targets"]
        if name == "digits_cnn":
            assert np.mean(output.argmax(axis=1) == targets) == 1.0
        elif name == "diabetes_mlp":
            assert np.mean(np.abs(output - targets)) < 60  # the held-out MAE is 43.8
        else:
            noisy = tensors["image"]
            assert np.mean((output - targets) ** 2) < np.mean((noisy - targets) ** 2)
