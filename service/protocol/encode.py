"""V2 responses: the outputs a request asked for, as JSON or binary tensor data, compressed on request.

Binary chunks follow the JSON header in the order of the outputs in it. The inference extensions
(activations, explain, evaluate) answer through the same encoder with their own header fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.errors import InvalidInput
from service.protocol import compression
from service.protocol.datatypes import NUMPY, datatype_of
from service.protocol.request import InferRequest


def select_outputs(request: InferRequest, available: Sequence[str], model_name: str) -> list[tuple[str, bool]]:
    """(name, as_binary) for each output to return, in request order (all outputs when none asked)."""
    default = request.binary_output_default
    if request.outputs is None:
        return [(name, default) for name in available]
    known = available if len(available) <= 8 else frozenset(available)
    selected: dict[str, bool] = {}
    for output in request.outputs:
        if output.name not in known:
            raise InvalidInput(
                f"unexpected inference output '{output.name}' for model '{model_name}'; "
                f"expected outputs {list(available)}"
            )
        if output.name in selected:
            raise InvalidInput(f"output '{output.name}' is requested more than once")
        selected[output.name] = default if output.binary is None else output.binary
    return list(selected.items())


@dataclass(slots=True)
class EncodedResponse:
    body: bytes
    headers: dict[str, str]
    media_type: str


def encode_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Sequence[tuple[str, np.ndarray, bool]] | None,
    accept_encoding: str | None,
    fields: Mapping[str, Any] | None = None,
) -> EncodedResponse:
    """The V2 response: header fields, then (name, array, as_binary) outputs; ``outputs=None`` leaves
    the ``outputs`` key out (an extension's answer with no tensors). ``fields`` are extra header keys,
    which may hold numpy arrays (written as JSON lists)."""
    header: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        header["id"] = request_id
    if fields:
        header.update(fields)
    entries, chunks = [], []
    for name, array, binary in outputs or ():
        datatype = datatype_of(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            chunk = _to_binary(array, datatype)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = _to_json_data(array, datatype)
        entries.append(entry)
    if outputs is not None:
        header["outputs"] = entries
    return _assemble(orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY), chunks, accept_encoding)


def _assemble(json_part: bytes, chunks: list[bytes], accept_encoding: str | None) -> EncodedResponse:
    """The body: the JSON header, then the binary chunks (if any), compressed as the client accepts."""
    headers: dict[str, str] = {}
    if chunks:
        headers["Inference-Header-Content-Length"] = str(len(json_part))
        body = b"".join([json_part, *chunks])
        media_type = "application/octet-stream"
    else:
        body, media_type = json_part, "application/json"
    if accept_encoding:
        encoding = compression.negotiate(accept_encoding)
        if encoding is not None:
            body = compression.compress(body, encoding)
            headers["Content-Encoding"] = encoding
    return EncodedResponse(body, headers, media_type)


_KEPT_ENTRIES = 256
"""Output layouts a `ResponseEncoder` keeps at most."""
_VALUES = orjson.OPT_SERIALIZE_NUMPY
_OUTPUTS = b',"outputs":['


class ResponseEncoder:
    """One model version's responses, written as `encode_response` writes them, with the JSON text of
    everything but the values made once: per output, its entry up to the values (name, datatype and
    shape), or its whole entry when the values go as binary data (their size follows from the shape).
    A small model's response is mostly that text, which `encode_response` builds from dictionaries on
    every request. Outputs of strings or BF16 go through `encode_response`."""

    def __init__(self, model_name: str, model_version: str) -> None:
        self._model_name = model_name
        self._model_version = model_version
        self._head = orjson.dumps({"model_name": model_name, "model_version": model_version})[:-1]
        self._lead = self._head + _OUTPUTS
        """Everything before the first output's entry, in a response with no id."""
        # (name, dtype, shape, as_binary) -> the entry's text (binary: whole; JSON: up to the values)
        self._entries: dict[tuple[str, np.dtype[Any], tuple[int, ...], bool], bytes] = {}

    @property
    def layouts_kept(self) -> int:
        return len(self._entries)

    def encode(
        self,
        request_id: str | None,
        selected: Sequence[tuple[str, bool]],
        outputs: Mapping[str, np.ndarray],
        accept_encoding: str | None,
    ) -> EncodedResponse:
        """The response with ``outputs[name]`` for each (name, as_binary) of ``selected``, in order."""
        lead = self._lead if request_id is None else self._lead_with_id(request_id)
        if len(selected) == 1:  # most responses: one output, written without a list of parts to grow
            name, binary = selected[0]
            array = outputs[name]
            entry = self._entries.get((name, array.dtype, array.shape, binary))
            if entry is not None:
                if binary:
                    return _assemble(lead + entry + b"]}", [array.tobytes()], accept_encoding)
                values = orjson.dumps(array.ravel(), option=_VALUES)
                return _assemble(b"".join((lead, entry, values, b"}]}")), [], accept_encoding)
        parts = [lead]
        chunks: list[bytes] = []
        separator = b""
        for name, binary in selected:
            array = outputs[name]
            key = (name, array.dtype, array.shape, binary)
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entry(key, array)
                if entry is None:  # strings, BF16: only the general encoder writes them
                    return encode_response(
                        self._model_name,
                        self._model_version,
                        request_id,
                        [(out, outputs[out], as_binary) for out, as_binary in selected],
                        accept_encoding,
                    )
            parts.append(separator)
            parts.append(entry)
            if binary:
                chunks.append(array.tobytes())  # in C order, whatever the array's layout
            else:
                parts.append(orjson.dumps(array.ravel(), option=_VALUES))  # ravel: contiguous, as orjson needs
                parts.append(b"}")
            separator = b","
        parts.append(b"]}")
        return _assemble(b"".join(parts), chunks, accept_encoding)

    def _lead_with_id(self, request_id: str) -> bytes:
        return b"".join((self._head, b',"id":', orjson.dumps(request_id), _OUTPUTS))

    def _entry(self, key: tuple[str, np.dtype[Any], tuple[int, ...], bool], array: np.ndarray) -> bytes | None:
        """The text of one output's entry, kept; None for strings, BF16 and other dtypes
        `encode_response` converts."""
        name, dtype, shape, binary = key
        if not dtype.isnative or dtype.kind not in "biuf":
            return None
        entry: dict[str, Any] = {"name": name, "datatype": datatype_of(array), "shape": list(shape)}
        if binary:
            entry["parameters"] = {"binary_data_size": int(np.prod(shape, dtype=np.int64)) * dtype.itemsize}
            text = orjson.dumps(entry)
        else:
            text = orjson.dumps(entry)[:-1] + b',"data":'
        if len(self._entries) >= _KEPT_ENTRIES:
            self._entries.clear()  # shapes without end (sequence lengths): keep the recent ones
        self._entries[key] = text
        return text


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
