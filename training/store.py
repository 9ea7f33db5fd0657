"""The model repository on disk: checks, version numbers, and the atomic write of a version folder.

A version is staged in a hidden temporary folder inside the model folder (same file system) and
published with one `os.rename`, so a reader sees either no folder or a complete one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from training.errors import UsageError

STAGING_PREFIX = ".staging-"


def check_repository(root: Path) -> None:
    """The repository must already exist as a writable folder: a typo must not create a new tree."""
    if not root.exists():
        raise UsageError(f"model repository {root} does not exist")
    if not root.is_dir():
        raise UsageError(f"model repository {root} is not a directory")
    if not os.access(root, os.W_OK | os.X_OK):
        raise UsageError(f"model repository {root} is not writable")


def check_model_folder(model_dir: Path) -> None:
    """The model folder is either absent (it will be made) or a writable folder."""
    if model_dir.exists() and not model_dir.is_dir():
        raise UsageError(f"cannot write into {model_dir}: it is not a directory")
    if model_dir.is_dir() and not os.access(model_dir, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write into {model_dir}: it is not writable")


def versions(model_dir: Path) -> list[int]:
    """Published version numbers (numeric folder names), ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def read_version(model_dir: Path, version: int) -> dict[str, Any]:
    """The manifest of a published version that has its weights; UsageError if there is none."""
    folder = model_dir / str(version)
    manifest_path, weights_path = folder / "manifest.json", folder / "weights.safetensors"
    if not manifest_path.is_file() or not weights_path.is_file():
        raise UsageError(f"{model_dir.name} version {version} does not exist in {model_dir.parent}")
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {manifest_path}: {exc}") from exc
    return manifest


@contextmanager
def staging(model_dir: Path) -> Iterator[Path]:
    """A fresh temporary folder inside `model_dir`, removed (with `model_dir` if this made it) on error."""
    created = not model_dir.exists()
    try:
        model_dir.mkdir(exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=model_dir))
    except OSError as exc:
        raise UsageError(f"cannot write into {model_dir}: {exc.strerror or exc}") from exc
    try:
        yield folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        if created:
            _remove_if_empty(model_dir)
        raise


def publish(folder: Path, model_dir: Path, version: int) -> Path:
    """Rename the staged folder to its version number; fails if that version appeared meanwhile."""
    target = model_dir / str(version)
    if target.exists():
        raise UsageError(f"cannot publish {target}: it appeared while training")
    try:
        folder.chmod(0o755)  # mkdtemp makes it private; a published version is readable like its parent
        os.rename(folder, target)
    except OSError as exc:
        raise UsageError(f"cannot publish {target}: {exc.strerror or exc}") from exc
    return target


def _remove_if_empty(folder: Path) -> None:
    with suppress(OSError):
        folder.rmdir()
