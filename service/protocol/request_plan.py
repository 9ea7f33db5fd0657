"""A model version's common inference requests checked and decoded in one short pass.

The general path (`request.check_request`, `decode.decode_inputs`, `encode.select_outputs`,
`signature.request_rows`) takes every request and words every error, through a dozen functions. On
the request path their code and data no longer fit the caches that a request's other work shares,
so each costs 1.5 to 2 times what it costs timed alone, and together they were a fifth of a small
model's request. A `RequestPlan`, built once per loaded version from its signature, reads the
requests most clients send (every input once, numeric, with its datatype and a fitting shape, as
binary data or as JSON floats that ``fast_json`` already read into numpy; outputs asked by name with
at most ``binary_data``) in one function, and gives up on anything else by returning None: the
general path then answers that request, errors included. It never refuses a request itself, so
each error and its message stay in one place, and what it accepts it decodes exactly as the general
path does (``tests/protocol/test_request_plan.py`` checks both on generated requests).

`RequestPlan.read_body` reads two kinds of request before anything else is done with the body. A plain
JSON request is read by `native_json` in one compiled pass, its data arrays straight into float32 (and
float64) bytes: reading it through a parser's Python objects was most of a small model's JSON request
on the server. A JSON request whose bytes outside its data arrays are those of one read before (a
client sends the same text around each request's numbers) is not parsed or checked again: only its
arrays are read, and the plan takes the rest from what it found the first time (timed in one
process, 4 to 8 µs less CPU for each of a small model's JSON requests). A
binary request whose JSON header the plan has read before is not parsed again: a client sends the
same header bytes for every request of the same shapes (tritonclient does), and the same bytes say
the same thing, so the plan remembers where each input lies in the binary data and takes the arrays
from there. A request id that leads the header as tritonclient writes it (``{"id":"r-17",...``, a
plain string) is cut out first, so a client that gives each request its own id is served the same
way; a header with an id anywhere else is not remembered. Parsing and checking the header was a
fifth of a small model's binary request on the server.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.errors import InvalidInput
from service.protocol import native_json
from service.protocol.datatypes import ITEMSIZE, NUMPY
from service.protocol.decode import narrow_floats
from service.protocol.request import HEADER_LENGTH, RequestHeader
from service.protocol.signature import TensorSpec, request_rows

_PLANNED_TYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
"""Datatypes whose binary data needs no check beyond its size (BOOL, BYTES and BF16 take the general path)."""
_JSON_FLOATS = frozenset({"FP16", "FP32", "FP64"})
_DOCUMENT_KEYS = frozenset({"id", "parameters", "inputs", "outputs"})


_REMEMBERED_HEADER_BYTES = 4096
"""Longer JSON headers are not remembered: a binary request's header only names its tensors."""
_REMEMBERED_HEADERS = 64
"""Headers remembered per plan (one per distinct set of shapes and outputs). When full it starts over."""


@dataclass(slots=True)
class PlannedRequest:  # not frozen: a frozen dataclass is built three times slower, and one is built per request
    request_id: str | None
    feeds: dict[str, np.ndarray]
    rows: int
    selected: list[tuple[str, bool]]
    """(output name, as binary) in response order, as `encode.select_outputs` gives them. May be shared
    with other requests of the same layout: read it, never change it."""


@dataclass(frozen=True, slots=True)
class _Input:
    spec: TensorSpec
    dtype: np.dtype[Any]
    """The datatype's numpy dtype, as `decode` uses it."""
    itemsize: int
    json_floats: bool
    shapes: dict[tuple[Any, ...], tuple[int, int]] = field(default_factory=dict)
    """Shapes this input was sent with that fit it: (element count, rows along the batch axis), by the
    shape as a tuple (see `_fitting_shape`)."""


_Split = tuple[tuple[bytes, ...], tuple[int, ...]]
"""What `native_json.split_data` gives: the segments around a body's data arrays, and where they lie."""

_SHAPES_KEPT = 64
"""Fitting shapes remembered per input; when full, new ones are checked each time."""
_INT_ONLY = {int}


@dataclass(frozen=True, slots=True)
class _BinaryLayout:
    """What a binary request's JSON header said, once checked: where each input lies in the binary data."""

    inputs: tuple[tuple[str, np.dtype[Any], int, int, tuple[int, ...]], ...]
    """(name, dtype, element count, offset into the binary data, shape) of each input, in the header's order."""
    size: int
    """The binary data's length."""
    largest: int
    """The element count of the largest input, checked against the limit of each request read."""
    rows: int
    selected: list[tuple[str, bool]]
    """Shared by every request read with this layout, never changed by a reader."""


@dataclass(frozen=True, slots=True)
class _JsonLayout:
    """What a whole-JSON request said outside its data arrays, once checked."""

    inputs: tuple[tuple[str, np.dtype[Any], int, tuple[int, ...]], ...]
    """(name, dtype, element count, shape) of each input, in the order of its data array in the body."""
    largest: int
    rows: int
    selected: list[tuple[str, bool]]
    """Shared by every request read with this layout, never changed by a reader."""


class RequestPlan:
    """The common requests of one signature; `read_body` and `read` give None for any other."""

    def __init__(self, inputs: Sequence[TensorSpec], output_names: Sequence[str]) -> None:
        self._inputs = {
            spec.name: _Input(spec, NUMPY[spec.datatype], ITEMSIZE[spec.datatype], spec.datatype in _JSON_FLOATS)
            for spec in inputs
            if spec.datatype in _PLANNED_TYPES
        }
        # An input of another datatype: every request takes the general path.
        self._enabled = len(self._inputs) == len(inputs) and len(inputs) > 0
        # Every input may come as JSON floats: whole-JSON requests are read by `native_json`.
        self._json_ready = self._enabled and all(i.json_floats for i in self._inputs.values())
        self._specs = tuple(inputs)
        self._outputs = tuple(output_names)
        self._known_outputs = frozenset(output_names)
        self._all_outputs = {flag: [(name, flag) for name in output_names] for flag in (False, True)}
        """What `_selected` gives for a request that names no outputs: shared, never changed by a reader."""
        self._layouts: dict[bytes, _BinaryLayout] = {}
        """Binary requests' JSON headers read before, by their bytes."""
        self._json_layouts: dict[tuple[bytes, ...], _JsonLayout] = {}
        """Whole-JSON requests read before, by their bytes outside the data arrays (`_read_known_json`)."""

    def read(self, header: RequestHeader, max_elements: int) -> PlannedRequest | None:
        document = header.document
        if not self._enabled or document is None or not document.keys() <= _DOCUMENT_KEYS:
            return None
        request_id = document.get("id")
        binary_default = _binary_default(request_id, document.get("parameters"))
        raw_inputs = document.get("inputs")
        if binary_default is None or type(raw_inputs) is not list or len(raw_inputs) != len(self._inputs):
            return None
        binary = header.binary
        feeds: dict[str, np.ndarray] = {}
        offset = 0
        for raw in raw_inputs:
            offset = self._input(raw, binary, offset, feeds, max_elements)
            if offset < 0:
                return None
        rows = self._rows(feeds)
        selected = self._selected(document.get("outputs"), binary_default)
        if offset != len(binary) or rows is None or selected is None:
            return None
        request = PlannedRequest(document.get("id"), feeds, rows, selected)
        if offset and all("parameters" in raw for raw in raw_inputs):
            self._remember(header, raw_inputs, request)
        return request

    def read_body(self, body: bytes, headers: Mapping[str, str], max_elements: int) -> PlannedRequest | None:
        """A request read from its body as it came (not compressed): a whole-JSON request, or a binary
        request whose JSON header this plan has read before. None for any other, which `read` may
        still read once the header is parsed."""
        if "content-encoding" in headers:
            return None
        length = headers.get(HEADER_LENGTH)
        if length is None:
            if not self._json_ready:
                return None
            split = native_json.split_data(body)  # once: to look the layout up, else to remember it
            return self._read_known_json(body, split, max_elements) or self._read_json(body, split, max_elements)
        return self._read_known_binary(body, length, max_elements)

    def _read_known_json(self, body: bytes, split: _Split | None, max_elements: int) -> PlannedRequest | None:
        """A whole-JSON request whose bytes outside its data arrays are those of one `_read_json` read
        before. The same bytes with other flat number arrays in the same places make the same document
        but for those arrays, so only the arrays are read (natively, as `parse` reads them) and their
        lengths and values checked; nothing else of the body is parsed again."""
        if split is None or not self._json_layouts:
            return None
        segments, spans = split
        request_id = None
        if segments[0].startswith(_ID_MEMBER):
            cut, request_id = _cut_id(segments[0])
            if cut is None:
                return None
            segments = (cut, *segments[1:])
        layout = self._json_layouts.get(segments)
        if layout is None or layout.largest > max_elements:
            return None
        feeds: dict[str, np.ndarray] = {}
        read_floats = native_json.read_floats
        for (name, dtype, count, shape), start, stop in zip(layout.inputs, spans[::2], spans[1::2], strict=True):
            array = _native_floats(read_floats(body, start, stop), dtype, count)
            if array is None:
                return None
            feeds[name] = array.reshape(shape)
        return PlannedRequest(request_id, feeds, layout.rows, layout.selected)

    def _remember_json(self, split: _Split | None, request: PlannedRequest) -> None:
        """Keeps what `_read_json` found in ``body`` by the bytes outside its data arrays (with a leading
        id cut out, as for binary headers). In a document the plan accepts, the only ``"data"`` keys are
        the inputs' own, so `native_json.split_data` finds exactly their arrays."""
        if split is None or len(split[1]) != 2 * len(request.feeds):
            return
        segments = split[0]
        if request.request_id is not None:
            cut, request_id = _cut_id(segments[0]) if segments[0].startswith(_ID_MEMBER) else (None, None)
            if cut is None or request_id != request.request_id:
                return
            segments = (cut, *segments[1:])
        if sum(map(len, segments)) > _REMEMBERED_HEADER_BYTES or segments in self._json_layouts:
            return
        if len(self._json_layouts) >= _REMEMBERED_HEADERS:
            self._json_layouts.clear()
        inputs = tuple((name, array.dtype, array.size, array.shape) for name, array in request.feeds.items())
        largest = max(count for _, _, count, _ in inputs)
        self._json_layouts[segments] = _JsonLayout(inputs, largest, request.rows, request.selected)

    def _read_known_binary(self, body: bytes, length: str, max_elements: int) -> PlannedRequest | None:
        """Reads exactly what `read` read from the same header bytes: the same bytes parse to the same
        document, so only the binary data's length and the element limit are left to check."""
        if not self._layouts:
            return None
        text = length.strip()
        if not text.isascii() or not text.isdigit():
            return None
        end = int(text)
        key = body[:end]
        request_id = None
        if key.startswith(_ID_MEMBER):
            cut, request_id = _cut_id(key)
            if cut is None:
                return None
            key = cut
        layout = self._layouts.get(key)
        if layout is None or len(body) != end + layout.size or layout.largest > max_elements:
            return None
        feeds: dict[str, np.ndarray] = {}
        for name, dtype, count, offset, shape in layout.inputs:
            feeds[name] = np.frombuffer(body, dtype, count, end + offset).reshape(shape)
        return PlannedRequest(request_id, feeds, layout.rows, layout.selected)

    def _remember(self, header: RequestHeader, raw_inputs: list[Any], request: PlannedRequest) -> None:
        """Keeps where a binary request's inputs lie, by its JSON header's bytes without a leading id
        (every input binary)."""
        if header.end > _REMEMBERED_HEADER_BYTES:
            return
        key = bytes(header.body[: header.end])
        if request.request_id is not None:
            cut, request_id = _cut_id(key) if key.startswith(_ID_MEMBER) else (None, None)
            if cut is None or request_id != request.request_id:
                return
            key = cut
        if key in self._layouts:  # a compressed request, read here each time: known already
            return
        inputs = []
        offset = 0
        for raw in raw_inputs:
            array = request.feeds[raw["name"]]
            inputs.append((raw["name"], array.dtype, array.size, offset, array.shape))
            offset += array.nbytes
        if len(self._layouts) >= _REMEMBERED_HEADERS:
            self._layouts.clear()
        largest = max(count for _, _, count, _, _ in inputs)
        selected = list(request.selected)  # its own: `read` made this request's list
        self._layouts[key] = _BinaryLayout(tuple(inputs), offset, largest, request.rows, selected)

    def _read_json(self, body: bytes, split: _Split | None, max_elements: int) -> PlannedRequest | None:
        """A whole-JSON request read by `native_json` in one pass: its data arrays come as float64 and
        float32 bytes, never as Python floats. Reads what `read` reads from such a request, exactly as it
        does, and gives None for the rest. ``split`` is the body's `native_json.split_data`, kept with
        what was read so that the next request with the same text around its arrays is read from them."""
        document = native_json.parse(body)
        if document is None or not document.keys() <= _DOCUMENT_KEYS:
            return None
        request_id = document.get("id")
        binary_default = _binary_default(request_id, document.get("parameters"))
        raw_inputs = document.get("inputs")
        if binary_default is None or type(raw_inputs) is not list or len(raw_inputs) != len(self._inputs):
            return None
        feeds: dict[str, np.ndarray] = {}
        rows = 1
        for raw in raw_inputs:
            if type(raw) is not dict or len(raw) != 4:  # name, datatype, shape and data
                return None
            name = raw.get("name")
            planned = self._inputs.get(name) if type(name) is str else None
            if planned is None or name in feeds or raw.get("datatype") != planned.spec.datatype:
                return None
            shape = raw.get("shape")
            fitting = _fitting_shape(planned, shape, max_elements)
            if fitting is None:
                return None
            array = _native_floats(raw.get("data"), planned.dtype, fitting[0])
            if array is None:
                return None
            feeds[planned.spec.name] = array.reshape(shape)
            rows = fitting[1]
        if len(feeds) > 1:
            found = self._rows(feeds)
            if found is None:
                return None
            rows = found
        selected = self._selected(document.get("outputs"), binary_default)
        if selected is None:
            return None
        request = PlannedRequest(request_id, feeds, rows, selected)
        self._remember_json(split, request)
        return request

    def _input(
        self, raw: Any, binary: memoryview, offset: int, feeds: dict[str, np.ndarray], max_elements: int
    ) -> int:
        """Decode one input into ``feeds``; the offset of the binary data after it, or -1 to give up."""
        if type(raw) is not dict or len(raw) != 4:  # name, datatype, shape, and data or parameters
            return -1
        name = raw.get("name")
        planned = self._inputs.get(name) if type(name) is str else None
        if planned is None or name in feeds:
            return -1
        spec = planned.spec
        shape = raw.get("shape")
        count = _count(spec, shape, max_elements) if raw.get("datatype") == spec.datatype else -1
        if count < 0:
            return -1
        parameters = raw.get("parameters")
        if parameters is None:
            array = _json_floats(raw.get("data"), planned.dtype, count) if planned.json_floats else None
        else:
            size = count * planned.itemsize
            given = parameters.get("binary_data_size") if type(parameters) is dict else None
            if type(given) is not int or given != size or len(parameters) != 1 or offset + size > len(binary):
                return -1
            array = np.frombuffer(binary[offset : offset + size], dtype=planned.dtype)
            offset += size
        if array is None:
            return -1
        feeds[spec.name] = array.reshape(shape)
        return offset

    def _rows(self, feeds: dict[str, np.ndarray]) -> int | None:
        """The request's samples (`signature.request_rows`); None when inputs disagree, which the general
        path words as an error."""
        try:
            return request_rows(self._specs, feeds)
        except InvalidInput:
            return None

    def _selected(self, raw_outputs: Any, binary_default: bool) -> list[tuple[str, bool]] | None:
        if raw_outputs is None:
            return self._all_outputs[binary_default]
        if type(raw_outputs) is not list:
            return None
        selected: dict[str, bool] = {}
        for raw in raw_outputs:
            if type(raw) is not dict:
                return None
            name = raw.get("name")
            if type(name) is not str or name not in self._known_outputs or name in selected:
                return None
            parameters = raw.get("parameters")
            if parameters is None:
                if len(raw) != 1:
                    return None
                selected[name] = binary_default
                continue
            binary = parameters.get("binary_data") if type(parameters) is dict else None
            if len(raw) != 2 or len(parameters) != 1 or type(binary) is not bool:
                return None
            selected[name] = binary
        return list(selected.items())


_ID_MEMBER = b'{"id":"'
"""How a header that leads with its request id starts, as tritonclient writes it."""
_PLAIN_LEADING_ID = re.compile(rb'\{"id":"([^"\\\x00-\x1f]*)",')
"""A leading id with no escapes and no control characters: its bytes are its text."""


def _cut_id(header: bytes) -> tuple[bytes | None, str | None]:
    """(the header with its leading id member cut out, the id) for a header that starts with
    ``_ID_MEMBER``; (None, None) where the cut is not safe: an id with escapes or control characters or
    bytes that are not UTF-8 (the general path judges those), or ``"id"`` anywhere after it (a second
    id, whose meaning the cut would change)."""
    plain = _PLAIN_LEADING_ID.match(header)
    if plain is None:
        return None, None
    rest = header[plain.end() :]
    if rest.find(b'"id"') >= 0:
        return None, None
    try:
        return b"{" + rest, plain.group(1).decode("utf-8")
    except UnicodeDecodeError:
        return None, None


def _native_floats(data: Any, target: np.dtype[Any], count: int) -> np.ndarray | None:
    """Float data `native_json` read, as ``target``: float32 and float64 as the extension converted them
    (the same correctly rounded doubles, cast as numpy casts), float16 narrowed as `decode` narrows it;
    None where the general path must judge it (nested lists, a wrong count, values out of range)."""
    if type(data) is not tuple:
        return None
    wide, narrow = data
    if len(wide) != count * 8:
        return None
    if target.itemsize == 4:
        return None if narrow is None else np.frombuffer(narrow, dtype=np.float32)
    numbers = np.frombuffer(wide, dtype=np.float64)
    return numbers if target.itemsize == 8 else narrow_floats(numbers, target)


def _json_floats(data: Any, target: np.dtype[Any], count: int) -> np.ndarray | None:
    """Float data ``fast_json`` read into float64, narrowed as `decode` narrows it; None where the general
    path must judge it (nested lists, a wrong count, values out of the datatype's range)."""
    if type(data) is not np.ndarray or data.size != count:
        return None
    return narrow_floats(data, target)


def _fitting_shape(planned: _Input, shape: Any, max_elements: int) -> tuple[int, int] | None:
    """(element count, rows along the batch axis) of an input sent with ``shape`` (a list, as sent) when
    it fits the input and the limit, else None. A shape that fitted before is looked up, not checked
    again: only that its members are exact integers (``true`` and ``1.0`` equal ``1`` as dictionary keys)."""
    if type(shape) is not list:
        return None
    key = tuple(shape)
    known = planned.shapes.get(key)
    if known is None:
        count = _count(planned.spec, shape, max_elements)
        if count < 0:
            return None
        axis = planned.spec.batch_axis
        known = (count, shape[axis] if axis is not None and axis < len(shape) else 1)
        if len(planned.shapes) < _SHAPES_KEPT:
            planned.shapes[key] = known
        return known
    if (key and set(map(type, key)) != _INT_ONLY) or known[0] > max_elements:
        return None
    return known


def _count(spec: TensorSpec, shape: Any, max_elements: int) -> int:
    """The elements of an input of ``shape`` (a list, as sent) when it fits ``spec`` and the limit, else -1."""
    if type(shape) is not list or len(shape) != len(spec.shape):
        return -1
    count = 1
    for got, want in zip(shape, spec.shape, strict=False):  # of equal length, checked above
        if type(got) is not int or got < 0 or (want >= 0 and got != want):
            return -1
        count *= got
    return count if count <= max_elements else -1


def _binary_default(request_id: Any, parameters: Any) -> bool | None:
    """Whether outputs are binary unless asked otherwise (``parameters.binary_data_output``); None when the
    request's id or parameters need the general path."""
    if request_id is not None and type(request_id) is not str:
        return None
    if parameters is None:
        return False
    if type(parameters) is not dict or not parameters.keys() <= {"binary_data_output"}:
        return None
    value = parameters.get("binary_data_output", False)
    return value if type(value) is bool else None
