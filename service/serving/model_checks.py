"""Checks a version's files before onnxruntime sees them: ONNX files are an attack surface.

Rejected, each with a reason: a model file over the size cap, a symlinked model file, protobuf that
does not parse, a graph the ONNX checker rejects, external data whose location escapes the version
folder (absolute, ``..``, symlink, hard link) or runs past its file, and files whose sha256 differs
from the version's manifest.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError

from service.errors import ModelLoadError
from service.model_files import external_data, inside_folder, model_tensors
from service.serving.repository import VersionSpec

_CHUNK = 1 << 20


def check_version(
    spec: VersionSpec, max_bytes: int, verify_manifest: bool, known_hashes: Mapping[str, str] | None = None
) -> None:
    """Raise ModelLoadError with the reason when the version must not be loaded (blocking).

    ``known_hashes`` (file name relative to the version folder -> sha256) spares reading again the
    files whose digest was taken while they were copied into a snapshot.
    """
    label = f"{spec.name} version {spec.version}"
    try:
        _check_files(spec, label, max_bytes, verify_manifest, known_hashes or {})
    except OSError as exc:  # the folder changed under us, or a file is unreadable
        raise ModelLoadError(f"{label}: cannot read its files: {exc.strerror or exc}") from exc


def _check_files(
    spec: VersionSpec, label: str, max_bytes: int, verify_manifest: bool, known_hashes: Mapping[str, str]
) -> None:
    path = spec.model_path
    if spec.directory.is_symlink():
        raise ModelLoadError(f"{label}: the version folder is a symbolic link")
    if path.is_symlink():
        raise ModelLoadError(f"{label}: model.onnx is a symbolic link")
    size = path.stat().st_size
    if size > max_bytes:
        raise ModelLoadError(f"{label}: model.onnx is {size} bytes, over the limit of {max_bytes}")
    if verify_manifest and spec.manifest is not None:
        _check_manifest_hashes(spec, label, known_hashes)
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(f"{label}: model.onnx is not a valid ONNX protobuf: {exc}") from exc
    external = _check_external_data(model, spec.directory, label, max_bytes - size)
    try:
        onnx.checker.check_model(model if not external else os.fspath(path))
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{label}: the ONNX checker rejects the model: {first}") from exc


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_manifest_hashes(spec: VersionSpec, label: str, known_hashes: Mapping[str, str]) -> None:
    assert spec.manifest is not None
    files: Any = spec.manifest.get("files", {})
    if not isinstance(files, dict):
        raise ModelLoadError(f"{label}: manifest.json 'files' must be an object")
    for name, entry in files.items():
        expected = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not isinstance(expected, str):
            raise ModelLoadError(f"{label}: manifest.json entry for {name!r} has no sha256")
        target = _inside(spec.directory, name, label)
        if not target.is_file():
            raise ModelLoadError(f"{label}: manifest.json lists {name}, which is missing")
        actual = known_hashes.get(name) or sha256_file(target)
        if actual != expected:
            raise ModelLoadError(f"{label}: sha256 of {name} is {actual}, but manifest.json records {expected}")


def _check_external_data(model: onnx.ModelProto, directory: Path, label: str, budget: int) -> bool:
    """Validate every external-data reference; True when the model has any."""
    found = False
    total = 0
    for tensor in model_tensors(model):
        try:
            data = external_data(tensor, directory)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{label}: {exc.message}") from exc
        if data is None:
            continue
        found = True
        total += data.length
        if total > budget:
            raise ModelLoadError(f"{label}: external data exceeds the model size limit")
    return found


def _inside(directory: Path, location: str, label: str) -> Path:
    try:
        return inside_folder(directory, location)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{label}: {exc.message}") from exc
