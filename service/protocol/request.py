"""Open Inference Protocol (KServe V2) requests: the body split into its JSON header and binary tensor
data, and the request's structure checked (names, datatypes, shapes, parameters), not yet its tensors.

The body is read raw and never dispatched on Content-Type: tritonclient sends none (sync) or
``application/octet-stream`` (aio). Binary chunks follow the JSON header in the order their inputs
appear in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from service.errors import InvalidInput, InvalidRequest
from service.protocol import compression, fast_json
from service.protocol.datatypes import BINARY_ONLY, NUMPY

HEADER_LENGTH = "inference-header-content-length"
_PARAMETER_TYPES = (str, int, float, bool)
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
    body: bytes = b""
    """The (decompressed) body; its first ``header_end`` bytes are the JSON header."""
    header_end: int = 0
    _booleans: bool | None = None

    @property
    def binary_output_default(self) -> bool:
        return self.raw_input is not None or self.parameters.get("binary_data_output") is True

    @property
    def may_hold_booleans(self) -> bool:
        """The JSON header has a ``true`` or ``false`` somewhere: numeric tensor data given as JSON lists
        must be checked for booleans, which numpy would silently turn into 1 and 0. Scanned on first
        use only: float data read straight into numpy (``fast_json``) never needs it, and the scan of a
        16 KB body costs as much as parsing it."""
        if self._booleans is None:
            body, end = self.body, self.header_end
            self._booleans = body.find(b"true", 0, end) >= 0 or body.find(b"false", 0, end) >= 0
        return self._booleans


@dataclass(slots=True)
class RequestHeader:
    """A request's body, decompressed, with its JSON header parsed but not yet checked."""

    body: bytes
    end: int
    """Where the JSON header ends and binary tensor data begins (the body's length when it is all JSON)."""
    document: dict[str, Any] | None
    """The JSON header; None for Triton's raw binary request (``Inference-Header-Content-Length: 0``)."""

    @property
    def binary(self) -> memoryview:
        """The binary tensor data after the header."""
        return memoryview(self.body)[self.end :]


def parse_request(body: bytes, headers: Mapping[str, str], max_bytes: int) -> InferRequest:
    """Decompress, split header from binary data, and check the request's structure."""
    return check_request(read_header(body, headers, max_bytes))


def read_header(body: bytes, headers: Mapping[str, str], max_bytes: int) -> RequestHeader:
    """Decompress the body and parse its JSON header (a 400 for a body that is neither)."""
    encoding = headers.get("content-encoding")
    if encoding is not None:
        body = compression.decompress(body, encoding, max_bytes)
    length = headers.get(HEADER_LENGTH)
    if length is None:
        end = len(body)
        header: bytes | memoryview = body
    else:
        end = _header_length(length, len(body))
        if end == 0:
            return RequestHeader(body, 0, None)
        header = memoryview(body)[:end]
    # Float tensor data straight into numpy when the body allows; otherwise the general parser (also
    # for a header without JSON tensor data, such as a binary request's, which it reads faster).
    document = fast_json.loads(header) if body.find(b'"data"', 0, end) >= 0 else None
    if document is None:
        document = parse_json(header)
    if not isinstance(document, dict):
        raise InvalidRequest("inference request must be a JSON object")
    return RequestHeader(body, end, document)


def check_request(header: RequestHeader) -> InferRequest:
    """The request's structure checked (names, datatypes, shapes, parameters), not yet its tensors."""
    if header.document is None:
        return InferRequest(raw_input=memoryview(header.body), parameters={"binary_data_output": True})
    request = _parse_document(header.document, header.binary)
    request.body = header.body
    request.header_end = header.end
    return request


def parse_json(data: bytes | memoryview) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"malformed JSON in request body: {exc}") from exc


def _header_length(value: str, body_length: int) -> int:
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
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequest("'id' must be a string")
    raw_parameters = doc.get("parameters")
    parameters = {} if raw_parameters is None else _parameters(raw_parameters, "request", "")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidRequest("'inputs' must be a non-empty list of tensors")
    inputs: list[RequestInput] = []
    offset = 0
    for index, raw in enumerate(raw_inputs):
        tensor, offset = _parse_input(raw, index, binary, offset)
        inputs.append(tensor)
    if offset != len(binary):
        raise InvalidRequest(
            f"unexpected additional input data: {len(binary) - offset} bytes after the last binary input"
        )
    raw_outputs = doc.get("outputs")
    outputs = None
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise InvalidRequest("'outputs' must be a list")
        outputs = [_parse_output(raw, index) for index, raw in enumerate(raw_outputs)]
    return InferRequest(request_id, parameters, inputs, outputs)


def _parse_input(raw: Any, index: int, binary: memoryview, offset: int) -> tuple[RequestInput, int]:
    if not isinstance(raw, dict):
        raise InvalidRequest(f"inputs[{index}] must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"inputs[{index}] needs a 'name' string")
    datatype = raw.get("datatype")
    if not isinstance(datatype, str) or datatype not in NUMPY:
        raise InvalidInput(f"input '{name}': unknown datatype {datatype!r}; expected one of {sorted(NUMPY)}")
    shape = _shape(raw.get("shape"), "input", name)
    raw_parameters = raw.get("parameters")
    parameters = {} if raw_parameters is None else _parameters(raw_parameters, "input", name)
    tensor = RequestInput(name, datatype, shape, None, None, parameters)
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
    name = raw["name"]
    raw_parameters = raw.get("parameters")
    if raw_parameters is None:
        return RequestOutput(name, None, {})
    parameters = _parameters(raw_parameters, "output", name)
    if "classification" in parameters:
        raise InvalidRequest("the classification extension is not supported")
    binary = parameters.get("binary_data")
    if binary is not None and not isinstance(binary, bool):
        raise InvalidRequest(f"output '{name}': parameters.binary_data must be a boolean")
    return RequestOutput(name, binary, parameters)


def _parameters(raw: Any, kind: str, name: str) -> dict[str, Any]:
    """``raw`` checked as the parameters of the request (``kind`` "request") or of one of its tensors."""
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{_where(kind, name)}: 'parameters' must be an object")
    for key, value in raw.items():
        if key in _UNSUPPORTED_PARAMETERS:
            raise InvalidRequest(f"{_where(kind, name)}: shared-memory parameters are not supported")
        if not isinstance(value, _PARAMETER_TYPES):
            raise InvalidRequest(f"{_where(kind, name)}: parameter {key!r} must be a string, number or boolean")
    if "binary_data_output" in raw and not isinstance(raw["binary_data_output"], bool):
        raise InvalidRequest("parameters.binary_data_output must be a boolean")
    return raw


def _where(kind: str, name: str) -> str:
    """Where in the request an error is, as messages name it (built only for an error)."""
    return kind if not name else f"{kind} '{name}'"


def _shape(raw: Any, kind: str, name: str) -> tuple[int, ...]:
    if not isinstance(raw, list):
        raise InvalidInput(f"{_where(kind, name)}: 'shape' must be a list of non-negative integers")
    for dim in raw:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise InvalidInput(f"{_where(kind, name)}: shape {raw} must hold non-negative integers")
    return tuple(raw)
