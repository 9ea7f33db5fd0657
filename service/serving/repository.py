"""Pure scan of the model repository folder into specs; nothing here loads a model.

Layout: ``<root>/<name>/config.json`` (optional) and ``<root>/<name>/<int version>/model.onnx``
with optional ``weights.safetensors`` and ``manifest.json`` beside it, and example requests in
``<root>/<name>/examples/<example>.json`` (never a version). Anything else is skipped with a log
line, never a crash.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.errors import InvalidRequest, NotFound, ServiceError
from service.model_files import version_number
from service.protocol.request import parse_request
from service.serving.model_config import ModelConfig

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.json"
EXAMPLES_DIR = "examples"
EXAMPLE_SUFFIX = ".json"
TARGETS = "targets"
"""The name of the input entry that carries an evaluation example's targets (what /evaluate reads)."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True, slots=True)
class VersionSpec:
    name: str
    version: int
    directory: Path
    model_path: Path
    manifest: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    weights_path: Path | None = None
    content_digest: str | None = None
    """For a checked snapshot: the digest of its files, which names these bytes wherever they lie."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    directory: Path
    config: ModelConfig
    versions: tuple[VersionSpec, ...]
    config_error: str | None = None
    """Why config.json was rejected (the model is then not served)."""


def validate_model_name(name: str) -> str:
    """Reject names that could escape the repository when joined to a path."""
    if not _NAME_RE.fullmatch(name) or name in {".", ".."} or ".." in name:
        raise InvalidRequest(f"invalid model name {name!r}: use letters, digits, '_', '-', '.', at most 128 characters")
    return name


def parse_version(text: str) -> int:
    """A version in a request; anything but a positive integer is a client error."""
    value = version_number(text)
    if value is None:
        raise InvalidRequest(f"invalid model version {text!r}: versions are positive integers")
    return value


def scan(root: Path) -> list[ModelSpec]:
    """Every model folder under ``root``, sorted by name."""
    if not root.is_dir():
        log.warning("model repository %s is not a directory; serving no models", root)
        return []
    specs = []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.is_symlink():
            if entry.name not in {"README.md", ".gitkeep"}:
                log.info("repository: skipping %s (not a model folder)", entry)
            continue
        if not _NAME_RE.fullmatch(entry.name):
            log.info("repository: skipping %s (not a valid model name)", entry)
            continue
        specs.append(scan_model(entry))
    return specs


def scan_model(directory: Path) -> ModelSpec:
    """One model folder: its config and every numeric version folder holding a model.onnx."""
    config, config_error = _read_config(directory / CONFIG_FILE)
    versions = []
    for entry in sorted(directory.iterdir()):
        if entry.name in (CONFIG_FILE, EXAMPLES_DIR):
            continue
        number = version_number(entry.name)
        if not entry.is_dir() or number is None:
            log.info("repository: skipping %s (not a numeric version folder)", entry)
            continue
        model_path = entry / MODEL_FILE
        if not model_path.is_file():
            log.info("repository: skipping %s (no %s)", entry, MODEL_FILE)
            continue
        weights = entry / WEIGHTS_FILE
        versions.append(
            VersionSpec(
                name=directory.name,
                version=number,
                directory=entry,
                model_path=model_path,
                manifest=read_manifest(entry),
                weights_path=weights if weights.is_file() else None,
            )
        )
    versions.sort(key=lambda v: v.version)
    return ModelSpec(directory.name, directory, config, tuple(versions), config_error)


def read_manifest(version_dir: Path) -> dict[str, Any] | None:
    path = version_dir / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("repository: ignoring unreadable manifest %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _read_config(path: Path) -> tuple[ModelConfig, str | None]:
    if not path.is_file():
        return ModelConfig(), None
    try:
        return ModelConfig.model_validate_json(path.read_bytes()), None
    except (OSError, ValidationError) as exc:
        reason = f"invalid {CONFIG_FILE}: {exc}".replace("\n", "; ")
        log.error("repository: %s: %s", path, reason)
        return ModelConfig(), reason


def validate_example_name(name: str) -> str:
    """Example names follow the model-name rule, so they never leave the examples folder."""
    if not _NAME_RE.fullmatch(name) or ".." in name:
        raise InvalidRequest(
            f"invalid example name {name!r}: use letters, digits, '_', '-', '.', at most 128 characters"
        )
    return name


def example_names(model_dir: Path) -> list[str]:
    """Names of the model's example requests (``examples/<name>.json``, regular files only, so a link
    cannot point outside the repository), sorted; anything else in the folder is not listed."""
    folder = model_dir / EXAMPLES_DIR
    if not folder.is_dir() or folder.is_symlink():
        return []
    names = []
    for entry in sorted(folder.iterdir()):
        name = entry.name.removesuffix(EXAMPLE_SUFFIX)
        valid = entry.name.endswith(EXAMPLE_SUFFIX) and _NAME_RE.fullmatch(name) is not None and ".." not in name
        if valid and entry.is_file() and not entry.is_symlink():
            names.append(name)
    return names


def read_example(model_dir: Path, name: str, max_bytes: int) -> bytes:
    """The body of one example request (NotFound if the model has no such example)."""
    validate_example_name(name)
    if name not in example_names(model_dir):
        raise NotFound(f"model '{model_dir.name}' has no example '{name}'")
    path = model_dir / EXAMPLES_DIR / f"{name}{EXAMPLE_SUFFIX}"
    with path.open("rb") as handle:
        body = handle.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise InvalidRequest(f"example '{name}' is larger than the {max_bytes}-byte request cap")
    return body


def describe_example(model_dir: Path, name: str, max_bytes: int) -> dict[str, Any]:
    """What an example request holds: its kind (``infer``, or ``evaluate`` when its inputs end with
    ``targets``), its description (``parameters.description``) and each tensor's name, datatype and
    shape; an ``error`` instead when the file is not a V2 inference request."""
    entry: dict[str, Any] = {"name": name}
    try:
        request = parse_request(read_example(model_dir, name, max_bytes), {}, max_bytes)
    except ServiceError as exc:
        return entry | {"kind": None, "error": exc.message}
    tensors = [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in request.inputs]
    evaluate = len(tensors) > 1 and tensors[-1]["name"] == TARGETS
    description = request.parameters.get("description")
    return entry | {
        "kind": "evaluate" if evaluate else "infer",
        "description": description if isinstance(description, str) else None,
        "inputs": tensors[:-1] if evaluate else tensors,
        "targets": tensors[-1] if evaluate else None,
    }
