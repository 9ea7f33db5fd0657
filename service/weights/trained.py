"""Trained tensors from a version's ``weights.safetensors`` sidecar, tied to the ONNX by its manifest.

The safetensors format is read directly (an 8-byte little-endian header length, a JSON header,
then the data), one memory-mapped tensor at a time, so the service needs neither torch nor the
safetensors package.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from service.errors import ModelLoadError
from service.weights.graph import WeightGraph, opaque_id

_DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
}
_INTEGER = frozenset({"I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL"})
_MAX_HEADER = 100 * 1024 * 1024
RELATIONS = frozenset({"identical", "folded", "transposed", "packed", "absent"})
"""How a trained tensor reached the graph (see the manifest's `tensors`): `packed` is a recurrent
layer's tensor inside ONNX's LSTM / GRU / RNN weight layout."""


@dataclass(frozen=True, slots=True)
class TrainedTensor:
    id: str
    key: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    length: int
    relation: str
    onnx_initializer: str | None
    effective_id: str | None
    folded_from: tuple[str, ...]
    shared_with: tuple[str, ...] = ()
    """Other state_dict keys of the same storage (tied weights)."""

    @property
    def out_axis(self) -> int | None:
        return 0 if len(self.shape) >= 2 else None  # PyTorch keeps weights [out, in, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state_dict_key": self.key,
            "module_path": self.key.rpartition(".")[0],
            "shape": list(self.shape),
            "out_axis": self.out_axis,
            "storage_dtype": self.dtype,
            "bytes": self.length,
            "relation": self.relation,
            "onnx_initializer": self.onnx_initializer,
            "effective_id": self.effective_id,
            "folded_from": list(self.folded_from) or None,
            "shared_with": list(self.shared_with) or None,
        }


@dataclass(frozen=True, slots=True)
class SafetensorsEntry:
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def read_header(path: Path) -> tuple[int, dict[str, SafetensorsEntry]]:
    """The data offset and each tensor's entry, checked against the file's size."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise ModelLoadError(f"{path.name}: too short for a safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length > min(_MAX_HEADER, size - 8):
            raise ModelLoadError(f"{path.name}: safetensors header length {length} is impossible")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{path.name}: safetensors header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ModelLoadError(f"{path.name}: safetensors header is not an object")
    start = 8 + length
    entries: dict[str, SafetensorsEntry] = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            begin, end = (int(v) for v in info["data_offsets"])
            entry = SafetensorsEntry(str(info["dtype"]), tuple(int(d) for d in info["shape"]), begin, end)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{path.name}: bad safetensors entry {key!r}") from exc
        if not 0 <= begin <= end <= size - start:
            raise ModelLoadError(f"{path.name}: tensor {key!r} runs past the end of the file")
        entries[str(key)] = entry
    return start, entries


def trained_values(path: Path, tensor: TrainedTensor) -> np.ndarray:
    dtype = _DTYPES[tensor.dtype]
    count = int(np.prod(tensor.shape, dtype=np.int64))
    if count * dtype.itemsize != tensor.length:
        raise ModelLoadError(f"{path.name}: tensor {tensor.key!r} has {tensor.length} bytes for {count} values")
    if count == 0:
        return np.zeros(tensor.shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=tensor.offset, shape=tensor.shape)


def trained_tensors(
    path: Path, manifest: dict[str, Any] | None, graph: WeightGraph
) -> dict[str, TrainedTensor]:
    """Float tensors of the sidecar by id, each with its relation to the effective ONNX tensor."""
    start, entries = read_header(path)
    mapping = _manifest_mapping(manifest)
    result: dict[str, TrainedTensor] = {}
    for key, entry in entries.items():
        if entry.dtype in _INTEGER or entry.dtype not in _DTYPES:
            continue  # counters such as num_batches_tracked are not weights
        info = mapping.get(key, {})
        initializer = info.get("onnx_initializer")
        effective = graph.tensor_by_name(initializer) if isinstance(initializer, str) else None
        relation = str(info.get("relation", "unknown"))
        folded = info.get("folded_from") or ()
        shared = info.get("shared_with") or ()
        tensor = TrainedTensor(
            id=opaque_id("S", key),
            key=key,
            dtype=entry.dtype,
            shape=entry.shape,
            offset=start + entry.begin,
            length=entry.end - entry.begin,
            relation=relation if relation in RELATIONS else "unknown",
            onnx_initializer=initializer if isinstance(initializer, str) else None,
            effective_id=effective.id if effective is not None else None,
            folded_from=tuple(str(f) for f in folded) if isinstance(folded, list) else (),
            shared_with=tuple(str(k) for k in shared) if isinstance(shared, list) else (),
        )
        result[tensor.id] = tensor
    return result


def _manifest_mapping(manifest: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if manifest is None or not isinstance(manifest.get("tensors"), list):
        return {}
    return {
        str(t["state_dict_key"]): t
        for t in manifest["tensors"]
        if isinstance(t, dict) and "state_dict_key" in t
    }


def apply_provenance(graph: WeightGraph, trained: dict[str, TrainedTensor]) -> dict[str, TrainedTensor]:
    """Flag effective tensors the manifest says were folded or transposed; returns effective id → trained."""
    by_effective: dict[str, TrainedTensor] = {}
    for tensor in trained.values():
        if tensor.effective_id is None:
            continue
        effective = graph.tensors[tensor.effective_id]
        by_effective.setdefault(effective.id, tensor)
        if tensor.relation == "folded":
            effective.folded = {"from": list(tensor.folded_from), "evidence": "manifest"}
        elif tensor.relation == "transposed":
            effective.transposed = True
    return by_effective
