"""A parsed V2 request's tensors checked against the model's signature and turned into numpy feeds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from service.errors import InvalidInput
from service.protocol.datatypes import INT_KINDS, ITEMSIZE, NUMPY
from service.protocol.request import InferRequest, RequestInput
from service.protocol.signature import TensorSpec


def decode_inputs(
    request: InferRequest, specs: Sequence[TensorSpec], model_name: str, max_elements: int
) -> dict[str, np.ndarray]:
    """Validated numpy feeds for the session; every mismatch is a 400 naming the input."""
    if request.raw_input is not None:
        return _decode_raw(request.raw_input, specs, model_name)
    by_name = {spec.name: spec for spec in specs}
    feeds: dict[str, np.ndarray] = {}
    for tensor in request.inputs:
        spec = by_name.get(tensor.name)
        if spec is None:
            raise InvalidInput(
                f"unexpected inference input '{tensor.name}' for model '{model_name}'; "
                f"expected inputs {sorted(by_name)}"
            )
        if tensor.name in feeds:
            raise InvalidInput(f"input '{tensor.name}' is given more than once")
        feeds[tensor.name] = _decode_one(tensor, spec, model_name, max_elements, request)
    missing = [name for name in by_name if name not in feeds]
    if missing:
        raise InvalidInput(f"model '{model_name}' expects inputs {missing} which the request does not give")
    return feeds


def check_shape(name: str, shape: Sequence[int], spec: TensorSpec, model_name: str) -> None:
    if len(shape) != len(spec.shape):
        raise InvalidInput(
            f"input '{name}' has rank {len(shape)} (shape {list(shape)}), but model '{model_name}' "
            f"expects rank {len(spec.shape)} (shape {list(spec.shape)})"
        )
    for axis, (got, want) in enumerate(zip(shape, spec.shape, strict=True)):
        if want >= 0 and got != want:
            raise InvalidInput(
                f"input '{name}' has shape {list(shape)}, but model '{model_name}' expects "
                f"{list(spec.shape)} (dimension {axis} must be {want})"
            )


def _decode_one(
    tensor: RequestInput, spec: TensorSpec, model_name: str, max_elements: int, request: InferRequest
) -> np.ndarray:
    if tensor.datatype != spec.datatype:
        raise InvalidInput(
            f"inference input '{tensor.name}' data-type is '{tensor.datatype}', "
            f"but model '{model_name}' expects '{spec.datatype}'"
        )
    check_shape(tensor.name, tensor.shape, spec, model_name)
    count = math.prod(tensor.shape)  # Python ints: no overflow for 2**60-sized shapes
    if count > max_elements:
        raise InvalidInput(
            f"input '{tensor.name}' shape {list(tensor.shape)} holds {count} elements, "
            f"more than the limit of {max_elements}"
        )
    if tensor.raw is not None:
        return _from_binary(tensor, count)
    return _from_json(tensor, count, request)


def _from_binary(tensor: RequestInput, count: int) -> np.ndarray:
    raw = tensor.raw
    assert raw is not None
    if tensor.datatype == "BYTES":
        return _bytes_elements(raw, count, tensor.name).reshape(tensor.shape)
    expected = count * ITEMSIZE[tensor.datatype]
    if len(raw) != expected:
        raise InvalidInput(
            f"input '{tensor.name}': binary_data_size is {len(raw)} bytes, but shape "
            f"{list(tensor.shape)} of {tensor.datatype} needs {expected}"
        )
    array = np.frombuffer(raw, dtype=NUMPY[tensor.datatype]).reshape(tensor.shape)
    if tensor.datatype == "BOOL" and array.size and array.view(np.uint8).max() > 1:
        raise InvalidInput(f"input '{tensor.name}': BOOL elements must be 0 or 1")
    return array


def _bytes_elements(raw: memoryview, count: int, name: str) -> np.ndarray:
    out = np.empty(count, dtype=np.object_)
    offset, total = 0, len(raw)
    for index in range(count):
        if offset + 4 > total:
            raise InvalidInput(f"input '{name}': BYTES data holds fewer than the {count} elements of its shape")
        length = int.from_bytes(raw[offset : offset + 4], "little")
        offset += 4
        if offset + length > total:
            raise InvalidInput(f"input '{name}': BYTES element {index} runs past the end of its data")
        try:
            # onnxruntime's string tensors are UTF-8 text; it would str() a bytes object.
            out[index] = str(raw[offset : offset + length], "utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"input '{name}': BYTES element {index} is not UTF-8 text: {exc}") from exc
        offset += length
    if offset != total:
        raise InvalidInput(f"input '{name}': BYTES data holds more than the {count} elements of its shape")
    return out


def _from_json(tensor: RequestInput, count: int, request: InferRequest) -> np.ndarray:
    data = tensor.data
    if not isinstance(data, list | np.ndarray):  # an ndarray: float data already read by fast_json
        data = [data]
    try:
        if tensor.datatype == "BYTES":
            array = _json_strings(data, tensor.name)
        elif tensor.datatype == "BOOL":
            array = _json_bool(data, tensor.name)
        else:
            array = _json_numbers(data, tensor.datatype, tensor.name, request)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(
            f"input '{tensor.name}': data cannot be read as {tensor.datatype} "
            f"(expected {count} numbers, flat or nested): {exc}"
        ) from exc
    if array.size != count:
        raise InvalidInput(
            f"input '{tensor.name}' has {array.size} elements, but shape {list(tensor.shape)} needs {count}"
        )
    return array.reshape(tensor.shape)


def _json_numbers(data: Any, datatype: str, name: str, request: InferRequest) -> np.ndarray:
    """Numbers only, as Triton does: ``null``, strings and booleans are refused, never turned into
    NaN, parsed, or counted as 1 and 0; integers are checked, not silently truncated or wrapped."""
    if isinstance(data, np.ndarray):
        loose = data
    else:
        loose = np.asarray(data)
        if loose.dtype.kind not in "iuf" or (request.may_hold_booleans and _holds_boolean(data)):
            raise InvalidInput(f"input '{name}': {datatype} data must be numbers (no null, strings or booleans)")
    target = NUMPY[datatype]
    if target.kind == "f":
        array = narrow_floats(loose, target)
        if array is None:
            raise InvalidInput(f"input '{name}': values outside the range of {datatype}")
        return array
    if loose.size and loose.dtype.kind == "f" and not np.array_equal(loose, np.floor(loose)):
        raise InvalidInput(f"input '{name}': {datatype} data must be integers")
    # Convert from the Python values, not from `loose`: numpy widens big uint64 mixes to float64.
    try:
        return np.array(data, dtype=target)
    except OverflowError as exc:
        raise InvalidInput(f"input '{name}': values outside the range of {datatype}: {exc}") from exc


def _holds_boolean(data: list[Any]) -> bool:
    stack = [data]
    while stack:
        items = stack.pop()
        kinds = set(map(type, items))
        if bool in kinds:
            return True
        if list in kinds:
            stack.extend(item for item in items if isinstance(item, list))
    return False


def _json_bool(data: Any, name: str) -> np.ndarray:
    loose = np.asarray(data)
    if loose.size == 0:
        return loose.astype(np.bool_)
    if loose.dtype.kind == "b":
        return loose
    if loose.dtype.kind in INT_KINDS and np.isin(loose, (0, 1)).all():
        return loose.astype(np.bool_)
    raise InvalidInput(f"input '{name}': BOOL data must be true/false")


def _json_strings(data: list[Any], name: str) -> np.ndarray:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            if not isinstance(item, str):
                raise InvalidInput(f"input '{name}': BYTES data must be strings")
            flat.append(item)
        else:
            stack.pop()
    out = np.empty(len(flat), dtype=np.object_)
    out[:] = flat
    return out


def _decode_raw(raw: memoryview, specs: Sequence[TensorSpec], model_name: str) -> dict[str, np.ndarray]:
    if len(specs) != 1:
        raise InvalidInput(
            f"a raw binary request needs a model with exactly one input; '{model_name}' has {len(specs)}"
        )
    spec = specs[0]
    if spec.datatype == "BYTES":
        return {spec.name: _bytes_elements(raw, 1, spec.name).reshape([1] * len(spec.shape))}
    shape = [1 if dim < 0 and axis == 0 else dim for axis, dim in enumerate(spec.shape)]
    if sum(1 for dim in shape if dim < 0) > 1:
        raise InvalidInput(f"a raw binary request needs at most one variable dimension; '{model_name}' has more")
    itemsize = ITEMSIZE[spec.datatype]
    fixed = math.prod(dim for dim in shape if dim >= 0) * itemsize
    if fixed == 0 or len(raw) % fixed:
        raise InvalidInput(f"raw binary input of {len(raw)} bytes does not fit shape {spec.shape} of {spec.datatype}")
    shape = [len(raw) // fixed if dim < 0 else dim for dim in shape]
    if math.prod(shape) * itemsize != len(raw):
        raise InvalidInput(f"raw binary input of {len(raw)} bytes does not fit shape {spec.shape} of {spec.datatype}")
    return {spec.name: np.frombuffer(raw, dtype=NUMPY[spec.datatype]).reshape(shape)}


def narrow_floats(numbers: np.ndarray, target: np.dtype[Any]) -> np.ndarray | None:
    """JSON numbers as the float dtype ``target``; None when one is a finite number outside its range
    (JSON has no infinities, so an infinity after the cast is one of those)."""
    with np.errstate(over="ignore"):
        array = numbers.astype(target)
        if target.itemsize < 8:
            # A finite sum of squares (one BLAS pass) rules infinities out; only when it is not (an
            # infinity, or merely huge values) does the exact scan run.
            flat = array.reshape(-1)
            if not math.isfinite(float(flat.dot(flat))) and np.isinf(array).any():
                return None
    return array
