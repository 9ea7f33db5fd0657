"""Hostile and corrupt model versions, one per way the loader must refuse a file."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.serving.onnx_models import WIDTH, version_model, write_version


def _external_model(location: str) -> onnx.ModelProto:
    """``y = x + w`` with ``w`` stored as external data at ``location``."""
    weight = numpy_helper.from_array(np.ones(WIDTH, dtype=np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, "offset": "0", "length": str(WIDTH * 4)}.items():
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, WIDTH])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _version_dir(root: Path, name: str) -> Path:
    directory = root / name / "1"
    directory.mkdir(parents=True)
    return directory


def _secret(outside: Path) -> Path:
    outside.mkdir(parents=True, exist_ok=True)
    secret = outside / "secret.bin"
    secret.write_bytes(np.ones(WIDTH, dtype=np.float32).tobytes())
    return secret


def external_escapes(root: Path, outside: Path) -> None:
    _secret(outside)
    relative = os.path.relpath(outside / "secret.bin", root / "external_escapes" / "1")
    onnx.save(_external_model(relative), os.fspath(_version_dir(root, "external_escapes") / "model.onnx"))


def external_absolute(root: Path, outside: Path) -> None:
    secret = _secret(outside)
    onnx.save(_external_model(os.fspath(secret)), os.fspath(_version_dir(root, "external_absolute") / "model.onnx"))


def external_symlink(root: Path, outside: Path) -> None:
    secret = _secret(outside)
    directory = _version_dir(root, "external_symlink")
    (directory / "w.bin").symlink_to(secret)
    onnx.save(_external_model("w.bin"), os.fspath(directory / "model.onnx"))


def too_large(root: Path, outside: Path) -> None:
    directory = _version_dir(root, "too_large")
    model = version_model(1.0)
    padding = numpy_helper.from_array(np.zeros(64 * 1024, dtype=np.float32), "padding")
    model.graph.initializer.append(padding)
    onnx.save(model, os.fspath(directory / "model.onnx"))


def not_protobuf(root: Path, outside: Path) -> None:
    (_version_dir(root, "not_protobuf") / "model.onnx").write_bytes(b"\xff" * 64)


def checker_rejects(root: Path, outside: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "undefined_tensor"], ["y"])],
        "dangling",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, WIDTH])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    (_version_dir(root, "checker_rejects") / "model.onnx").write_bytes(model.SerializeToString())


def sha256_mismatch(root: Path, outside: Path) -> None:
    directory = write_version(root, "sha256_mismatch", 1)
    recorded = hashlib.sha256(b"some other file").hexdigest()
    manifest = {"format": 1, "files": {"model.onnx": {"sha256": recorded, "bytes": 1}}}
    (directory / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def model_symlink(root: Path, outside: Path) -> None:
    elsewhere = write_version(outside, "elsewhere", 1) / "model.onnx"
    (_version_dir(root, "model_symlink") / "model.onnx").symlink_to(elsewhere)


def version_symlink(root: Path, outside: Path) -> None:
    elsewhere = write_version(outside, "elsewhere_folder", 1)
    (root / "version_symlink").mkdir(parents=True)
    (root / "version_symlink" / "1").symlink_to(elsewhere, target_is_directory=True)


HOSTILE: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "external_escapes": (external_escapes, "must be a relative path inside the version folder"),
    "external_absolute": (external_absolute, "must be a relative path inside the version folder"),
    "external_symlink": (external_symlink, "symbolic link"),
    "too_large": (too_large, "over the limit"),
    "not_protobuf": (not_protobuf, "not a valid ONNX protobuf"),
    "checker_rejects": (checker_rejects, "ONNX checker rejects"),
    "sha256_mismatch": (sha256_mismatch, "manifest.json records"),
    "model_symlink": (model_symlink, "model.onnx is a symbolic link"),
    "version_symlink": (version_symlink, "version folder is a symbolic link"),
}
"""model name -> (builder(repository, outside), words the index reason must contain)."""
