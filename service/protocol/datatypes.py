"""V2 datatypes and their numpy / onnxruntime / Triton-config equivalents."""

from __future__ import annotations

from typing import Final

import ml_dtypes
import numpy as np

# V2 datatype -> numpy dtype (little-endian, as the binary extension sends them).
NUMPY: Final[dict[str, np.dtype[np.generic]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "BYTES": np.dtype(np.object_),
}

# onnxruntime's type strings -> V2 datatype.
FROM_ORT: Final[dict[str, str]] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(bfloat16)": "BF16",
    "tensor(string)": "BYTES",
}

# Element size in the binary extension (BYTES is variable: length-prefixed).
ITEMSIZE: Final[dict[str, int]] = {name: dt.itemsize for name, dt in NUMPY.items() if name != "BYTES"}

# Datatypes JSON cannot carry faithfully (tritonclient refuses to send them as JSON too).
BINARY_ONLY: Final[frozenset[str]] = frozenset({"BF16"})

INT_KINDS: Final[frozenset[str]] = frozenset("iu")


def triton_config_type(datatype: str) -> str:
    """Triton's model-config enum name: FP32 -> TYPE_FP32, BYTES -> TYPE_STRING."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


# Native-order numpy dtype -> V2 datatype, for the common case of `datatype_of` (one dict lookup).
_BY_DTYPE: Final[dict[np.dtype[np.generic], str]] = {
    dtype.newbyteorder("="): name for name, dtype in NUMPY.items() if name not in ("BYTES", "BF16")
}


def datatype_of(array: np.ndarray) -> str:
    """The V2 datatype of an output array (strings come back from onnxruntime as objects)."""
    known = _BY_DTYPE.get(array.dtype)
    if known is not None:
        return known
    if array.dtype == np.object_ or array.dtype.kind in "US":
        return "BYTES"
    if array.dtype == NUMPY["BF16"]:
        return "BF16"
    for name, dtype in NUMPY.items():
        if name not in ("BYTES", "BF16") and array.dtype == dtype.newbyteorder("="):
            return name
    raise TypeError(f"no V2 datatype for numpy dtype {array.dtype}")
