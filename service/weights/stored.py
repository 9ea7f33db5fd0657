"""Read one ONNX tensor's stored values without loading the rest of the model.

External data is memory-mapped one tensor at a time, after `service.model_files` has checked that its
location stays inside the version folder: onnx and onnxruntime check this too, but the service reads
these files itself, so it must not rely on them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import SparseTensorProto, TensorProto, helper, numpy_helper

from service.errors import ModelLoadError
from service.model_files import ExternalData, external_data

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


def _external_values(tensor: TensorProto, data: ExternalData) -> np.ndarray:
    dtype = numpy_dtype(tensor.data_type)
    shape = tuple(int(d) for d in tensor.dims)
    count = int(np.prod(shape, dtype=np.int64))
    if data.length != count * dtype.itemsize:
        raise ModelLoadError(
            f"external data of {tensor.name!r} does not fit: length {data.length}"
            f" for {count} values of {dtype.name}"
        )
    if count == 0:
        return np.zeros(shape, dtype)
    return np.memmap(data.path, dtype=dtype, mode="r", offset=data.offset, shape=shape)


def stored_values(tensor: TensorProto, directory: Path) -> np.ndarray:
    """The tensor's values in their storage dtype, read-only; external data is memory-mapped."""
    data = external_data(tensor, directory)
    if data is not None:
        return _external_values(tensor, data)
    shape = tuple(int(d) for d in tensor.dims)
    if tensor.HasField("raw_data") and tensor.data_type in FLOAT_TYPES | QUANT_TYPES:
        return np.frombuffer(tensor.raw_data, dtype=numpy_dtype(tensor.data_type)).reshape(shape)
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"cannot read tensor {tensor.name!r}: {exc}") from exc


def dense_values(sparse: SparseTensorProto, directory: Path) -> np.ndarray:
    """A sparse tensor written out dense (zeros where no value is stored); indices are checked, so a
    hostile model cannot write outside the array."""
    shape = tuple(int(d) for d in sparse.dims)
    values = np.asarray(stored_values(sparse.values, directory)).reshape(-1)
    indices = np.asarray(stored_values(sparse.indices, directory), dtype=np.int64)
    size = int(np.prod(shape, dtype=np.int64))
    dense = np.zeros(size, dtype=values.dtype)
    if values.size == 0:
        return dense.reshape(shape)
    if indices.ndim == 2 and indices.shape == (values.size, len(shape)):
        if (indices < 0).any() or (indices >= np.array(shape, dtype=np.int64)).any():
            raise ModelLoadError(f"sparse tensor {sparse.values.name!r} has an index outside its shape {list(shape)}")
        flat = np.ravel_multi_index(tuple(indices.T), shape)
    elif indices.ndim == 1 and indices.size == values.size:
        if (indices < 0).any() or (indices >= size).any():
            raise ModelLoadError(f"sparse tensor {sparse.values.name!r} has an index outside its {size} values")
        flat = indices
    else:
        raise ModelLoadError(f"sparse tensor {sparse.values.name!r}: indices of shape {list(indices.shape)} do not fit"
                             f" {values.size} values of a {len(shape)}-D tensor")
    dense[flat] = values
    return dense.reshape(shape)


def stored_bytes(tensor: TensorProto) -> int:
    """Bytes the tensor's values take in storage."""
    count = int(np.prod([int(d) for d in tensor.dims], dtype=np.int64))
    return count * numpy_dtype(tensor.data_type).itemsize
