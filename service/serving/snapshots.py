"""Private, content-addressed copies of the files of every version the server serves.

The loader never checks or loads a file in the model repository itself: it copies the version's
files (``model.onnx``, its external data, the ``weights.safetensors`` sidecar, ``manifest.json`` and
the files the manifest lists) into a folder of its own, hashing them on the way, checks the copy, and
onnxruntime loads the copy. The served ``VersionSpec`` points into the snapshot, so the weights view,
activations, explain and evaluate describe exactly the bytes the loader accepted, even after someone
replaces ``model.onnx`` in the repository. The folder is named by a digest of its content, so one copy
serves every worker process (the decision is made once, see ``coordinator``), and identical versions
share it. Snapshots no served version uses are removed.

Refused here with the loader's reasons (the rest is ``model_checks`` on the copy): a symlinked version
folder or model file, files over the size limit, external data references that leave the folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from service.errors import ModelLoadError
from service.model_files import external_data, inside_folder, model_tensors
from service.serving.repository import MANIFEST_FILE, MODEL_FILE, WEIGHTS_FILE, VersionSpec, read_manifest

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_STAGING = ".incoming"


@dataclass(frozen=True, slots=True)
class Snapshot:
    spec: VersionSpec
    """The version as served: every path inside the snapshot folder."""
    digest: str
    """sha256 over the snapshot's file names and contents; also its folder name."""
    size: int
    """Bytes of all its files."""
    hashes: dict[str, str] = field(compare=False, hash=False)
    """sha256 of each file, by its path relative to the version folder."""


class _TooLarge(Exception):
    pass


class SnapshotStore:
    """Snapshots under ``root`` (a folder private to this server)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def take(self, source: VersionSpec, max_bytes: int) -> Snapshot:
        """Copy and hash a version's files (blocking); ModelLoadError says why a version is refused."""
        label = f"{source.name} version {source.version}"
        try:
            return self._take(source, label, max_bytes)
        except OSError as exc:  # the folder changed under us, or a file is unreadable
            raise ModelLoadError(f"{label}: cannot read its files: {exc.strerror or exc}") from exc

    def keep_only(self, digests: Collection[str]) -> None:
        """Remove every snapshot not in ``digests`` (no served version uses it any more)."""
        for entry in self.root.iterdir():
            if entry.name != _STAGING and entry.name not in digests:
                shutil.rmtree(entry, ignore_errors=True)

    def digests(self) -> set[str]:
        return {entry.name for entry in self.root.iterdir() if entry.name != _STAGING}

    # ------------------------------------------------------------------------------ internals

    def _take(self, source: VersionSpec, label: str, max_bytes: int) -> Snapshot:
        directory = source.directory
        if directory.is_symlink():
            raise ModelLoadError(f"{label}: the version folder is a symbolic link")
        if source.model_path.is_symlink():
            raise ModelLoadError(f"{label}: model.onnx is a symbolic link")
        size = source.model_path.stat().st_size
        if size > max_bytes:
            raise ModelLoadError(f"{label}: model.onnx is {size} bytes, over the limit of {max_bytes}")
        incoming = self.root / _STAGING
        incoming.mkdir(exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=incoming))
        try:
            copier = _Copier(directory, staging, label)
            try:
                copier.copy(MODEL_FILE, max_bytes)
            except _TooLarge:  # it grew since the size check
                raise ModelLoadError(f"{label}: model.onnx is over the limit of {max_bytes} bytes") from None
            try:
                for location in _external_locations(staging / MODEL_FILE, directory, label):
                    copier.copy(location, max_bytes - copier.model_bytes, model_part=True)
            except _TooLarge:
                raise ModelLoadError(f"{label}: external data exceeds the model size limit") from None
            for extra in (WEIGHTS_FILE, MANIFEST_FILE, *_manifest_files(directory)):
                copier.copy_sidecar(extra, max_bytes)
            digest = copier.digest()
            final = self.root / digest
            try:
                staging.rename(final)
            except OSError:
                if not final.is_dir():
                    raise
                # The same content is already there (a reload of identical files): use that copy.
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        weights = final / WEIGHTS_FILE
        spec = VersionSpec(
            name=source.name,
            version=source.version,
            directory=final,
            model_path=final / MODEL_FILE,
            manifest=read_manifest(final),
            weights_path=weights if weights.is_file() else None,
            content_digest=digest,
        )
        return Snapshot(spec, digest, copier.total_bytes, dict(copier.hashes))


class _Copier:
    """Copies files from a version folder into a staging folder, hashing them on the way."""

    def __init__(self, source: Path, target: Path, label: str) -> None:
        self._source = source
        self._target = target
        self._label = label
        self.hashes: dict[str, str] = {}
        self.total_bytes = 0
        self.model_bytes = 0

    def copy(self, location: str, limit: int, *, model_part: bool = True) -> None:
        relative = Path(location).as_posix()
        if relative in self.hashes:
            return
        try:
            source = inside_folder(self._source, relative)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{self._label}: {exc.message}") from exc
        target = self._target / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        size, digest = _copy_hashing(source, target, limit)
        self.hashes[relative] = digest
        self.total_bytes += size
        if model_part:
            self.model_bytes += size

    def copy_sidecar(self, location: str, limit: int) -> None:
        """A file beside the model: copied when present (the manifest check reports missing ones)."""
        try:
            present = inside_folder(self._source, location).is_file()
        except ModelLoadError as exc:
            raise ModelLoadError(f"{self._label}: {exc.message}") from exc
        if not present:
            return
        try:
            self.copy(location, limit, model_part=False)
        except _TooLarge:
            raise ModelLoadError(f"{self._label}: {location} is over the limit of {limit} bytes") from None

    def digest(self) -> str:
        whole = hashlib.sha256()
        for relative, digest in sorted(self.hashes.items()):
            whole.update(f"{relative}\0{digest}\n".encode())
        return whole.hexdigest()


def _copy_hashing(source: Path, target: Path, limit: int) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    # O_NOFOLLOW: a file swapped for a symbolic link after the checks is refused, not followed.
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as src, target.open("xb") as dst:
        while chunk := src.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            digest.update(chunk)
            dst.write(chunk)
    return size, digest.hexdigest()


def _external_locations(copied_model: Path, directory: Path, label: str) -> list[str]:
    """External-data files the (copied) model refers to, each checked against the version folder."""
    try:
        model = onnx.load(os.fspath(copied_model), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError):
        return []  # the check of the copy says what is wrong with it
    locations: list[str] = []
    for tensor in model_tensors(model):
        try:
            data = external_data(tensor, directory)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{label}: {exc.message}") from exc
        if data is not None:
            locations.append(data.path.relative_to(directory).as_posix())
    return list(dict.fromkeys(locations))


def _manifest_files(directory: Path) -> list[str]:
    manifest = read_manifest(directory)
    files = manifest.get("files") if manifest else None
    return [name for name in files if isinstance(name, str)] if isinstance(files, dict) else []
