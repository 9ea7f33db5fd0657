"""The served bytes are the checked snapshot's: files replaced in the repository afterwards change
nothing the server says about a version until it is loaded again."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from litestar.testing import TestClient
from onnx import TensorProto, helper, numpy_helper

from service.app import create_app
from service.errors import ModelLoadError
from service.serving.repository import scan_model
from service.serving.snapshots import SnapshotStore
from service.settings import Settings
from tests.inspection.conftest import gap_classifier
from tests.serving.onnx_models import WIDTH, write_version

TOKEN = "snapshot-test-token"
IMAGE = np.random.default_rng(3).normal(size=(2, 1, 6, 6)).astype(np.float32)
BODY = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [2, 1, 6, 6], "data": IMAGE.ravel().tolist()}]}


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "repository"
    gap_classifier(root / "clf" / "1" / "model.onnx", seed=0)
    return root


def _client(repository: Path) -> TestClient[Any]:
    return TestClient(app=create_app(Settings(repository=repository, admin_token=TOKEN)))


def _views(client: TestClient[Any]) -> dict[str, Any]:
    """What the server says about the served version's weights and insides."""
    weights = client.get("/v2/models/clf/weights")
    activations = client.post("/v2/models/clf/activations", json=BODY)
    explained = client.post("/v2/models/clf/explain", json=BODY)
    for response in (weights, activations, explained):
        assert response.status_code == 200, response.text
    return {"weights": weights.json(), "activations": activations.json(), "explain": explained.json()}


@pytest.fixture
def seed_one_views(tmp_path: Path) -> dict[str, Any]:
    """The same views of a server that really serves the other bytes."""
    other = tmp_path / "other"
    gap_classifier(other / "clf" / "1" / "model.onnx", seed=1)
    with _client(other) as client:
        return _views(client)


def test_replacing_the_model_file_changes_nothing_served(repository: Path, seed_one_views: dict[str, Any]) -> None:
    with _client(repository) as client:
        assert client.post("/v2/models/clf/infer", json=BODY).status_code == 200
        # Replaced in place, without a reload; the views below are built only now.
        gap_classifier(repository / "clf" / "1" / "model.onnx", seed=1)
        views = _views(client)
        logits = client.post("/v2/models/clf/infer", json=BODY).json()["outputs"][0]["data"]
    reference_root = repository.parent / "served"
    gap_classifier(reference_root / "clf" / "1" / "model.onnx", seed=0)
    with _client(reference_root) as reference:
        assert _views(reference) == views  # exactly what the original bytes give
        assert reference.post("/v2/models/clf/infer", json=BODY).json()["outputs"][0]["data"] == logits
    assert views != seed_one_views  # and the replacement would have said something else


def test_a_rejected_replacement_leaves_the_views_on_the_loaded_bytes(repository: Path) -> None:
    with _client(repository) as client:
        before = _views(client)
        (repository / "clf" / "1" / "model.onnx").write_bytes(b"\xff" * 64)
        refused = client.post("/v2/repository/models/clf/load", headers={"Authorization": f"Bearer {TOKEN}"})
        assert refused.status_code == 400
        assert "not a valid ONNX protobuf" in refused.json()["error"]
        assert _views(client) == before


# ------------------------------------------------------------------------------------ the store


def _external_model(directory: Path, weight: float) -> None:
    """``y = x + w`` with ``w`` in ``weights/w.bin`` beside the model."""
    tensor = numpy_helper.from_array(np.full(WIDTH, weight, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, WIDTH])],
        [tensor],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    (directory / "weights").mkdir(parents=True, exist_ok=True)
    (directory / "weights" / "w.bin").unlink(missing_ok=True)
    onnx.save(model, os.fspath(directory / "model.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights/w.bin", size_threshold=0)  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SnapshotStore]:
    return SnapshotStore(tmp_path / "snapshots")


def test_a_snapshot_holds_the_model_its_external_data_and_sidecars_with_their_hashes(
    tmp_path: Path, store: SnapshotStore
) -> None:
    root = tmp_path / "repository"
    _external_model(root / "m" / "1", 1.0)
    (root / "m" / "1" / "weights.safetensors").write_bytes(b"sidecar")
    files = {"model.onnx": {"sha256": hashlib.sha256((root / "m" / "1" / "model.onnx").read_bytes()).hexdigest()}}
    (root / "m" / "1" / "manifest.json").write_text(json.dumps({"files": files}), encoding="utf-8")
    (root / "m" / "1" / "notes.txt").write_text("not part of the version")
    source = scan_model(root / "m").versions[0]
    snapshot = store.take(source, 10**6)

    copied = sorted(p.relative_to(snapshot.spec.directory).as_posix() for p in snapshot.spec.directory.rglob("*"))
    assert copied == ["manifest.json", "model.onnx", "weights", "weights.safetensors", "weights/w.bin"]
    for name, digest in snapshot.hashes.items():
        assert hashlib.sha256((snapshot.spec.directory / name).read_bytes()).hexdigest() == digest
    assert snapshot.spec.directory.name == snapshot.digest
    assert snapshot.spec.model_path == snapshot.spec.directory / "model.onnx"
    assert snapshot.spec.weights_path == snapshot.spec.directory / "weights.safetensors"
    assert snapshot.spec.manifest == {"files": files}

    # New external data in the repository: a new snapshot; the old one is untouched.
    _external_model(root / "m" / "1", 2.0)
    changed = store.take(source, 10**6)
    assert changed.digest != snapshot.digest
    old = np.frombuffer((snapshot.spec.directory / "weights" / "w.bin").read_bytes(), np.float32)
    assert old.tolist() == [1.0] * WIDTH


def test_identical_versions_share_one_snapshot_and_unused_ones_are_removed(
    tmp_path: Path, store: SnapshotStore
) -> None:
    root = tmp_path / "repository"
    for name in ("a", "b"):
        write_version(root, name, 1, value=5.0)
    write_version(root, "c", 1, value=6.0)
    a, b, c = (store.take(scan_model(root / name).versions[0], 10**6) for name in "abc")
    assert a.digest == b.digest != c.digest
    assert a.spec.name == "a"
    assert b.spec.name == "b"
    assert store.digests() == {a.digest, c.digest}
    store.keep_only({c.digest})
    assert store.digests() == {c.digest}
    assert not a.spec.directory.exists()
    assert c.spec.model_path.is_file()


def test_files_that_would_leave_the_version_folder_are_refused(tmp_path: Path, store: SnapshotStore) -> None:
    root = tmp_path / "repository"
    directory = write_version(root, "m", 1)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"secret")
    (directory / "weights.safetensors").symlink_to(outside)
    with pytest.raises(ModelLoadError, match="symbolic link"):
        store.take(scan_model(root / "m").versions[0], 10**6)
    (directory / "weights.safetensors").unlink()
    shutil.copy(outside, directory / "weights.safetensors")
    assert store.take(scan_model(root / "m").versions[0], 10**6).spec.weights_path is not None
    with pytest.raises(ModelLoadError, match="over the limit"):
        store.take(scan_model(root / "m").versions[0], 10)
    assert [p.name for p in (tmp_path / "snapshots" / ".incoming").iterdir()] == []  # nothing half-copied left
