"""Read one ONNX tensor's stored values without loading the rest of the model.

External data is memory-mapped one tensor at a time, after its location has been checked to stay
inside the version folder: onnx and onnxruntime check this too, but the service reads these files
itself, so it must not rely on them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from service.errors import ModelLoadError

FLOAT_TYPES = frozenset(
    {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
)
"""Storage types whose values are weights as they stand."""

QUANT_TYPES = frozenset(
    {TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16, TensorProto.INT32}
)
"""Integer storage types that hold weights when a dequantizing op consumes them."""


def dtype_name(data_type: int) -> str:
    """ONNX's own name of a storage type, e.g. FLOAT."""
    return str(TensorProto.DataType.Name(data_type))


def numpy_dtype(data_type: int) -> np.dtype[np.generic]:
    return np.dtype(helper.tensor_dtype_to_np_dtype(data_type)).newbyteorder("<")


def external_info(tensor: TensorProto) -> dict[str, str] | None:
    if tensor.data_location != TensorProto.EXTERNAL:
        return None
    return {entry.key: entry.value for entry in tensor.external_data}


def check_external_location(directory: Path, location: str) -> Path:
    """Resolve an external-data location, refusing anything that leaves ``directory``."""
    if not location or os.path.isabs(location) or ".." in Path(location).parts:
        raise ModelLoadError(f"external data location {location!r} must be a relative path inside the model")
    candidate = directory / location
    if candidate.is_symlink():
        raise ModelLoadError(f"external data location {location!r} is a symbolic link")
    resolved = candidate.resolve()
    if not resolved.is_relative_to(directory.resolve()):
        raise ModelLoadError(f"external data location {location!r} leaves the model folder")
    if not resolved.is_file():
        raise ModelLoadError(f"external data file {location!r} is missing")
    if resolved.stat().st_nlink > 1:
        raise ModelLoadError(f"external data file {location!r} has several hard links")
    return resolved


def _external_values(tensor: TensorProto, directory: Path, info: dict[str, str]) -> np.ndarray:
    path = check_external_location(directory, info.get("location", ""))
    dtype = numpy_dtype(tensor.data_type)
    shape = tuple(int(d) for d in tensor.dims)
    count = int(np.prod(shape, dtype=np.int64))
    offset = int(info.get("offset", "0"))
    length = int(info.get("length", str(count * dtype.itemsize)))
    size = path.stat().st_size
    if offset < 0 or length != count * dtype.itemsize or offset + length > size:
        raise ModelLoadError(
            f"external data of {tensor.name!r} does not fit: offset {offset} + length {length}"
            f" for {count} values of {dtype.name}, file has {size} bytes"
        )
    if count == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def stored_values(tensor: TensorProto, directory: Path) -> np.ndarray:
    """The tensor's values in their storage dtype, read-only; external data is memory-mapped."""
    info = external_info(tensor)
    if info is not None:
        return _external_values(tensor, directory, info)
    shape = tuple(int(d) for d in tensor.dims)
    if tensor.HasField("raw_data") and tensor.data_type in FLOAT_TYPES | QUANT_TYPES:
        return np.frombuffer(tensor.raw_data, dtype=numpy_dtype(tensor.data_type)).reshape(shape)
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"cannot read tensor {tensor.name!r}: {exc}") from exc


def stored_bytes(tensor: TensorProto) -> int:
    """Bytes the tensor's values take in storage."""
    count = int(np.prod([int(d) for d in tensor.dims], dtype=np.int64))
    return count * numpy_dtype(tensor.data_type).itemsize
