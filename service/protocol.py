"""Open Inference Protocol (KServe V2) request and response codecs, JSON and binary tensor data.

The body is read raw and never dispatched on Content-Type: tritonclient sends none (sync) or
``application/octet-stream`` (aio). Binary chunks follow the JSON header in the order their inputs
appear in it; response chunks follow the order of the outputs in the response JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from service import compression, json_tensors
from service.datatypes import BINARY_ONLY, INT_KINDS, ITEMSIZE, NUMPY, datatype_of
from service.errors import InvalidInput, InvalidRequest
from service.tensors import TensorSpec

HEADER_LENGTH = "inference-header-content-length"
_UNSUPPORTED_PARAMETERS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


@dataclass(slots=True)
class RequestInput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any = None
    raw: memoryview | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RequestOutput:
    name: str
    binary: bool | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    inputs: list[RequestInput] = field(default_factory=list)
    outputs: list[RequestOutput] | None = None
    raw_input: memoryview | None = None
    """Triton's raw binary request (``Inference-Header-Content-Length: 0``): the only input's bytes."""

    @property
    def binary_output_default(self) -> bool:
        return self.raw_input is not None or self.parameters.get("binary_data_output") is True


def parse_request(body: bytes, headers: Mapping[str, str], max_bytes: int) -> InferRequest:
    """Decompress, split header from binary data, and check the request's structure."""
    body = compression.decompress(body, headers.get("content-encoding"), max_bytes)
    header_length = _header_length(headers.get(HEADER_LENGTH), len(body))
    if header_length == 0:
        return InferRequest(raw_input=memoryview(body), parameters={"binary_data_output": True})
    view = memoryview(body)
    header = view[:header_length] if header_length is not None else body
    # Float tensor data straight into numpy when the body allows; otherwise the general parser.
    document = json_tensors.loads(header)
    if document is None:
        document = parse_json(header)
    if not isinstance(document, dict):
        raise InvalidRequest("inference request must be a JSON object")
    binary = view[header_length:] if header_length is not None else view[len(body) :]
    return _parse_document(document, binary)


def parse_json(data: bytes | memoryview) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"malformed JSON in request body: {exc}") from exc


def _header_length(value: str | None, body_length: int) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit():
        raise InvalidRequest(f"Inference-Header-Content-Length must be a non-negative integer, got {value!r}")
    length = int(text)
    if length > body_length:
        raise InvalidRequest(
            f"Inference-Header-Content-Length {length} is larger than the request body ({body_length} bytes)"
        )
    return length


def _parse_document(doc: dict[str, Any], binary: memoryview) -> InferRequest:
    request = InferRequest()
    request_id = doc.get("id")
    if request_id is not None:
        if not isinstance(request_id, str):
            raise InvalidRequest("'id' must be a string")
        request.id = request_id
    request.parameters = _parameters(doc.get("parameters"), "request")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidRequest("'inputs' must be a non-empty list of tensors")
    offset = 0
    for index, raw in enumerate(raw_inputs):
        tensor, offset = _parse_input(raw, index, binary, offset)
        request.inputs.append(tensor)
    if offset != len(binary):
        raise InvalidRequest(
            f"unexpected additional input data: {len(binary) - offset} bytes after the last binary input"
        )
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise InvalidRequest("'outputs' must be a list")
        request.outputs = [_parse_output(raw, index) for index, raw in enumerate(raw_outputs)]
    return request


def _parse_input(raw: Any, index: int, binary: memoryview, offset: int) -> tuple[RequestInput, int]:
    if not isinstance(raw, dict):
        raise InvalidRequest(f"inputs[{index}] must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"inputs[{index}] needs a 'name' string")
    datatype = raw.get("datatype")
    if not isinstance(datatype, str) or datatype not in NUMPY:
        raise InvalidInput(f"input '{name}': unknown datatype {datatype!r}; expected one of {sorted(NUMPY)}")
    shape = _shape(raw.get("shape"), f"input '{name}'")
    parameters = _parameters(raw.get("parameters"), f"input '{name}'")
    tensor = RequestInput(name=name, datatype=datatype, shape=shape, parameters=parameters)
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in raw:
            raise InvalidInput(f"input '{name}' has neither 'data' nor parameters.binary_data_size")
        if datatype in BINARY_ONLY:
            raise InvalidInput(f"input '{name}': {datatype} tensors must be sent as binary data")
        tensor.data = raw["data"]
        return tensor, offset
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidInput(f"input '{name}': binary_data_size must be a non-negative integer")
    if "data" in raw:
        raise InvalidInput(f"input '{name}' has both 'data' and binary_data_size")
    if offset + size > len(binary):
        raise InvalidInput(
            f"input '{name}': binary_data_size {size} runs past the end of the body ({len(binary) - offset} bytes left)"
        )
    tensor.raw = binary[offset : offset + size]
    return tensor, offset + size


def _parse_output(raw: Any, index: int) -> RequestOutput:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise InvalidRequest(f"outputs[{index}] must be an object with a 'name' string")
    parameters = _parameters(raw.get("parameters"), f"output '{raw['name']}'")
    if "classification" in parameters:
        raise InvalidRequest("the classification extension is not supported")
    binary = parameters.get("binary_data")
    if binary is not None and not isinstance(binary, bool):
        raise InvalidRequest(f"output '{raw['name']}': parameters.binary_data must be a boolean")
    return RequestOutput(name=raw["name"], binary=binary, parameters=parameters)


def _parameters(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where}: 'parameters' must be an object")
    for key, value in raw.items():
        if key in _UNSUPPORTED_PARAMETERS:
            raise InvalidRequest(f"{where}: shared-memory parameters are not supported")
        if not isinstance(value, str | int | float | bool):
            raise InvalidRequest(f"{where}: parameter {key!r} must be a string, number or boolean")
    if "binary_data_output" in raw and not isinstance(raw["binary_data_output"], bool):
        raise InvalidRequest("parameters.binary_data_output must be a boolean")
    return raw


def _shape(raw: Any, where: str) -> tuple[int, ...]:
    if not isinstance(raw, list):
        raise InvalidInput(f"{where}: 'shape' must be a list of non-negative integers")
    for dim in raw:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise InvalidInput(f"{where}: shape {raw} must hold non-negative integers")
    return tuple(raw)


# ----------------------------------------------------------------------------------------------
# Inputs against the model's signature


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
        feeds[tensor.name] = _decode_one(tensor, spec, model_name, max_elements)
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


def _decode_one(tensor: RequestInput, spec: TensorSpec, model_name: str, max_elements: int) -> np.ndarray:
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
    return _from_json(tensor, count)


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


def _from_json(tensor: RequestInput, count: int) -> np.ndarray:
    data = tensor.data
    if not isinstance(data, list | np.ndarray):  # an ndarray: float data already read by json_tensors
        data = [data]
    dtype = NUMPY[tensor.datatype]
    try:
        if tensor.datatype == "BYTES":
            array = _json_strings(data, tensor.name)
        elif dtype.kind == "f":
            with np.errstate(over="ignore"):
                array = np.asarray(data, dtype=dtype)
            # JSON has no infinities, so one here is a finite number too large for the datatype.
            if dtype.itemsize < 8 and np.isinf(array).any():
                raise InvalidInput(f"input '{tensor.name}': values outside the range of {tensor.datatype}")
        else:
            array = _json_exact(data, tensor.datatype, tensor.name)
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


def _json_exact(data: list[Any], datatype: str, name: str) -> np.ndarray:
    """Integers and booleans are checked, not silently truncated or wrapped."""
    loose = np.asarray(data)
    target = NUMPY[datatype]
    if loose.size == 0:
        return loose.astype(target)
    if datatype == "BOOL":
        if loose.dtype.kind == "b":
            return loose
        if loose.dtype.kind in INT_KINDS and np.isin(loose, (0, 1)).all():
            return loose.astype(np.bool_)
        raise InvalidInput(f"input '{name}': BOOL data must be true/false")
    if loose.dtype.kind == "f" and not np.array_equal(loose, np.floor(loose)):
        raise InvalidInput(f"input '{name}': {datatype} data must be integers")
    if loose.dtype.kind not in "iuf":
        raise InvalidInput(f"input '{name}': {datatype} data must be integers")
    # Convert from the Python values, not from `loose`: numpy widens big uint64 mixes to float64.
    try:
        return np.array(data, dtype=target)
    except OverflowError as exc:
        raise InvalidInput(f"input '{name}': values outside the range of {datatype}: {exc}") from exc


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


# ----------------------------------------------------------------------------------------------
# Responses


def select_outputs(request: InferRequest, available: Sequence[str], model_name: str) -> list[tuple[str, bool]]:
    """(name, as_binary) for each output to return, in request order (all outputs when none asked)."""
    default = request.binary_output_default
    if request.outputs is None:
        return [(name, default) for name in available]
    known = set(available)
    selected: list[tuple[str, bool]] = []
    for output in request.outputs:
        if output.name not in known:
            raise InvalidInput(
                f"unexpected inference output '{output.name}' for model '{model_name}'; "
                f"expected outputs {list(available)}"
            )
        if any(name == output.name for name, _ in selected):
            raise InvalidInput(f"output '{output.name}' is requested more than once")
        selected.append((output.name, default if output.binary is None else output.binary))
    return selected


@dataclass(slots=True)
class EncodedResponse:
    body: bytes
    headers: dict[str, str]
    media_type: str


def encode_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Sequence[tuple[str, np.ndarray, bool]],
    accept_encoding: str | None,
) -> EncodedResponse:
    header: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        header["id"] = request_id
    entries, chunks = [], []
    for name, array, binary in outputs:
        datatype = datatype_of(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            chunk = _to_binary(array, datatype)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = _to_json_data(array, datatype)
        entries.append(entry)
    header["outputs"] = entries
    json_part = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    headers: dict[str, str] = {}
    if chunks:
        headers["Inference-Header-Content-Length"] = str(len(json_part))
        body = b"".join([json_part, *chunks])
        media_type = "application/octet-stream"
    else:
        body, media_type = json_part, "application/json"
    encoding = compression.negotiate(accept_encoding)
    if encoding is not None:
        body = compression.compress(body, encoding)
        headers["Content-Encoding"] = encoding
    return EncodedResponse(body, headers, media_type)


def _to_binary(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for item in array.reshape(-1):
            data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
            parts.append(len(data).to_bytes(4, "little"))
            parts.append(data)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=NUMPY[datatype]).tobytes()


def _to_json_data(array: np.ndarray, datatype: str) -> Any:
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return [item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item) for item in flat]
    if datatype == "BF16":
        return flat.astype(np.float32)
    return np.ascontiguousarray(flat)
