"""The request plan reads what the general path reads, exactly as it does, and gives up on the rest:
it never accepts a request the general path refuses, nor decodes one differently."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from service.errors import ServiceError
from service.protocol import native_json
from service.protocol.datatypes import NUMPY
from service.protocol.decode import decode_inputs
from service.protocol.encode import select_outputs
from service.protocol.request import check_request, read_header
from service.protocol.request_plan import PlannedRequest, RequestPlan
from service.protocol.signature import TensorSpec, request_rows

MAX = 1 << 20
HEADER = "inference-header-content-length"
OUTPUTS = ("out", "aux")


def spec(name: str, datatype: str, shape: tuple[int, ...]) -> TensorSpec:
    return TensorSpec(name, datatype, shape, NUMPY[datatype])


def body_of(document: dict[str, Any], chunks: list[bytes]) -> tuple[bytes, dict[str, str]]:
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, {}
    return header + b"".join(chunks), {"inference-header-content-length": str(len(header))}


def general(specs: tuple[TensorSpec, ...], body: bytes, headers: dict[str, str]) -> Any:
    try:
        request = check_request(read_header(body, headers, MAX))
        feeds = decode_inputs(request, specs, "m", MAX)
        return request.id, feeds, request_rows(specs, feeds), select_outputs(request, OUTPUTS, "m")
    except ServiceError:
        return None


def ask(plan: RequestPlan, body: bytes, headers: dict[str, str]) -> PlannedRequest | None:
    """As the infer path asks the plan: from the body as it came, else from the parsed header."""
    return plan.read_body(body, headers, MAX) or plan.read(read_header(body, headers, MAX), MAX)


def planned(specs: tuple[TensorSpec, ...], body: bytes, headers: dict[str, str]) -> PlannedRequest | None:
    return ask(RequestPlan(specs, OUTPUTS), body, headers)


def from_document(specs: tuple[TensorSpec, ...], body: bytes, headers: dict[str, str]) -> PlannedRequest | None:
    return RequestPlan(specs, OUTPUTS).read_body(body, headers, MAX)


def assert_same(plan: PlannedRequest, expected: Any) -> None:
    assert expected is not None, "the plan accepted a request the general path refuses"
    request_id, feeds, rows, selected = expected
    assert (plan.request_id, plan.rows, plan.selected) == (request_id, rows, selected)
    assert plan.feeds.keys() == feeds.keys()
    for name, array in feeds.items():
        assert plan.feeds[name].dtype == array.dtype
        assert plan.feeds[name].shape == array.shape
        np.testing.assert_array_equal(plan.feeds[name], array)


def test_the_requests_clients_send_are_planned_and_decoded_as_the_general_path_decodes_them() -> None:
    specs = (spec("x", "FP32", (-1, 3)), spec("n", "INT64", (-1,)))
    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    n = np.array([5, -9], dtype=np.int64)
    binary = {
        "id": "r1",
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": x.nbytes}},
            {"name": "n", "datatype": "INT64", "shape": [2], "parameters": {"binary_data_size": n.nbytes}},
        ],
        "outputs": [{"name": "aux", "parameters": {"binary_data": True}}, {"name": "out"}],
    }
    body, headers = body_of(binary, [x.tobytes(), n.tobytes()])
    plan = planned(specs, body, headers)
    assert plan is not None
    assert_same(plan, general(specs, body, headers))
    assert plan.selected == [("aux", True), ("out", False)]
    assert plan.rows == 2

    json_only = (spec("x", "FP16", (-1, 3)),)
    document = {"inputs": [{"name": "x", "datatype": "FP16", "shape": [2, 3], "data": x.reshape(-1).tolist()}]}
    body, headers = body_of(document, [])
    plan = from_document(json_only, body, headers)  # read from simdjson's document, with no copy first
    assert plan is not None
    assert plan.feeds["x"].dtype == np.float16
    assert_same(plan, general(json_only, body, headers))
    # With every key a request may have, in any order.
    document = {
        "outputs": [{"name": "aux", "parameters": {"binary_data": True}}],
        "parameters": {"binary_data_output": False},
        "inputs": document["inputs"],
        "id": "r2",
    }
    body, headers = body_of(document, [])
    plan = from_document(json_only, body, headers)
    assert plan is not None
    assert_same(plan, general(json_only, body, headers))
    assert plan.selected == [("aux", True)]
    # Binary data, compressed bodies and models with an input that JSON floats cannot carry: from the header.
    assert from_document(specs, *body_of(binary, [x.tobytes(), n.tobytes()])) is None
    assert from_document(json_only, body, {"content-encoding": "gzip"}) is None
    assert from_document(specs, *body_of({"inputs": [document["inputs"][0]]}, [])) is None


def test_what_the_plan_leaves_to_the_general_path() -> None:
    specs = (spec("x", "FP32", (-1, 2)),)
    plain = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]}
    assert planned(specs, *body_of(plain, [])) is not None
    others = [
        {**plain, "inputs": [{**plain["inputs"][0], "data": [[1.0, 2.0]]}]},  # nested lists
        {**plain, "inputs": [{**plain["inputs"][0], "data": [1e39, 2.0]}]},  # out of FP32's range: a 400
        {**plain, "inputs": [{**plain["inputs"][0], "shape": [1, 3]}]},  # a wrong shape: a 400
        {**plain, "parameters": {"priority": 1}},  # parameters it does not know
        {**plain, "outputs": [{"name": "out", "parameters": {"classification": 2}}]},
        {**plain, "extra": True},
    ]
    others += [
        {**plain, "inputs": [{**plain["inputs"][0], "data": [1.0, True]}]},  # a boolean among the numbers
        {**plain, "inputs": [{**plain["inputs"][0], "parameters": {}}]},  # a fifth key
    ]
    for document in others:
        assert planned(specs, *body_of(document, [])) is None, document
    text = body_of(plain, [])[0]
    duplicated = text.replace(b'{"inputs"', b'{"id":"a","id":"b","inputs"')
    assert duplicated != text
    assert planned(specs, duplicated, {}) is None  # a key given twice
    assert from_document(specs, text[:-1], {}) is None  # malformed JSON: the general path words the error
    raw = np.ones((1, 2), dtype=np.float32).tobytes()
    raw_request = read_header(raw, {"inference-header-content-length": "0"}, MAX)
    assert RequestPlan(specs, OUTPUTS).read(raw_request, MAX) is None
    booleans = (spec("b", "BOOL", (-1,)),)
    document = {"inputs": [{"name": "b", "datatype": "BOOL", "shape": [1], "parameters": {"binary_data_size": 1}}]}
    assert planned(booleans, *body_of(document, [b"\x01"])) is None  # BOOL bytes need their check


def test_a_shape_read_before_is_not_checked_again_but_only_exact_integers_match_it() -> None:
    specs = (spec("x", "FP32", (-1, 2)),)
    plan = RequestPlan(specs, OUTPUTS)

    def read(shape: list[Any], limit: int = MAX) -> PlannedRequest | None:
        document = {"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": [1.0, 2.0] * 3}]}
        return plan.read_body(*body_of(document, []), limit)

    first = read([3, 2])
    again = read([3, 2])
    assert first is not None
    assert again is not None
    assert (again.rows, again.feeds["x"].shape) == (3, (3, 2))
    # Equal as dictionary keys to the remembered (3, 2), and refused by the general path: never taken here.
    for shape in ([3, 2.0], [3.0, 2], [3, True]):
        body, headers = body_of({"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": [1.0] * 6}]}, [])
        assert general(specs, body, headers) is None
        assert plan.read_body(body, headers, MAX) is None, shape
    assert read([3, 2], limit=5) is None  # the element limit holds for a remembered shape too
    assert read([2, 3]) is None  # the wrong shape is never remembered, and stays wrong
    assert read([3, 2]) is not None
    booleans_first = RequestPlan(specs, OUTPUTS)  # a refused shape leaves no trace for the valid one
    document = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [True, 2], "data": [1.0, 2.0]}]}
    assert booleans_first.read_body(*body_of(document, []), MAX) is None
    document["inputs"][0]["shape"] = [1, 2]
    assert booleans_first.read_body(*body_of(document, []), MAX) is not None


def test_a_binary_header_read_once_is_not_parsed_again_and_its_data_is_each_requests_own() -> None:
    specs = (spec("x", "FP32", (-1, 3)), spec("n", "INT64", (-1,)))
    document = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}},
            {"name": "n", "datatype": "INT64", "shape": [2], "parameters": {"binary_data_size": 16}},
        ],
        "outputs": [{"name": "aux", "parameters": {"binary_data": True}}],
    }
    plan = RequestPlan(specs, OUTPUTS)
    first, headers = body_of(document, [np.zeros(6, np.float32).tobytes(), np.zeros(2, np.int64).tobytes()])
    assert plan.read_body(first, headers, MAX) is None  # not seen yet: the header must be parsed
    read = ask(plan, first, headers)
    assert read is not None
    assert_same(read, general(specs, first, headers))

    x, n = np.arange(6, dtype=np.float32).reshape(2, 3), np.array([3, -4], dtype=np.int64)
    second, _ = body_of(document, [x.tobytes(), n.tobytes()])
    again = plan.read_body(second, headers, MAX)
    assert again is not None
    assert_same(again, general(specs, second, headers))
    np.testing.assert_array_equal(again.feeds["x"], x)
    assert again.selected == read.selected == [("aux", True)]
    padded = {HEADER: " 0" + headers[HEADER]}  # read as the general path reads the length: the same request
    assert plan.read_body(second, padded, MAX) is not None

    assert plan.read_body(second + b"\0", headers, MAX) is None  # the data's length is each request's to check
    assert plan.read_body(second[:-1], headers, MAX) is None
    assert plan.read_body(second, {**headers, "content-encoding": "gzip"}, MAX) is None
    assert plan.read_body(second, headers, 5) is None  # a lower limit than the one it was read under
    assert plan.read_body(second, {**headers, HEADER: "x"}, MAX) is None
    shorter = {**headers, HEADER: str(int(headers[HEADER]) - 1)}
    assert plan.read_body(second, shorter, MAX) is None

    # A leading id, as tritonclient writes it, is cut out: each request is read with its own id.
    for number in range(3):
        with_id, id_headers = body_of({"id": f"r-{number}", **document}, [x.tobytes(), n.tobytes()])
        read = ask(plan, with_id, id_headers) if number == 0 else plan.read_body(with_id, id_headers, MAX)
        assert read is not None
        assert read.request_id == f"r-{number}"
        assert_same(read, general(specs, with_id, id_headers))
    # Ids the general path must judge (escapes, control characters, bytes that are not UTF-8, a second
    # id), and ids anywhere but first, are read the general way.
    header_end = len(with_id) - 40
    for odd in (b'{"id":"a\\"b",', b'{"id":"a\\nb",', b'{"id":"a\tb",', b'{"id":"\xff",', b'{"id":"a","id":"b",'):
        body = odd + with_id[len(b'{"id":"r-2",') :]
        odd_headers = {HEADER: str(header_end - len(b'{"id":"r-2",') + len(odd))}
        assert plan.read_body(body, odd_headers, MAX) is None, odd
        try:
            read = ask(plan, body, odd_headers)
        except ServiceError:  # malformed: the general path's 400
            read = None
        if read is not None:
            assert_same(read, general(specs, body, odd_headers))
        assert plan.read_body(body, odd_headers, MAX) is None, odd  # and not remembered either
    id_last, last_headers = body_of({**document, "id": "r-9"}, [x.tobytes(), n.tobytes()])
    assert ask(plan, id_last, last_headers) is not None
    assert plan.read_body(id_last, last_headers, MAX) is None

    # Many shapes: the plan starts over rather than keep every header.
    for rows in range(3, 67):
        inputs = [
            {"name": "x", "datatype": "FP32", "shape": [rows, 3], "parameters": {"binary_data_size": 12 * rows}},
            {"name": "n", "datatype": "INT64", "shape": [rows], "parameters": {"binary_data_size": 8 * rows}},
        ]
        body, shaped = body_of({"inputs": inputs}, [bytes(12 * rows), bytes(8 * rows)])
        assert ask(plan, body, shaped) is not None
        assert plan.read_body(body, shaped, MAX) is not None
    assert plan.read_body(second, headers, MAX) is None
    assert ask(plan, second, headers) is not None
    assert plan.read_body(second, headers, MAX) is not None


def test_a_json_request_read_before_is_read_again_from_its_data_arrays_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    specs = (spec("x", "FP32", (-1, 3)), spec("h", "FP16", (-1,)))
    plan = RequestPlan(specs, OUTPUTS)

    def body(x: list[float], h: list[float], **extra: Any) -> bytes:
        document = {
            **extra,
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [2, 3], "data": x},
                {"name": "h", "datatype": "FP16", "shape": [2], "data": h},
            ],
        }
        return orjson.dumps(document)

    first = body([0.5] * 6, [1.0, 2.0])
    assert_same(plan.read_body(first, {}, MAX), general(specs, first, {}))

    def never(body: bytes) -> None:
        raise AssertionError("a body whose layout is known is not parsed whole again")

    with monkeypatch.context() as patched:
        patched.setattr(native_json, "parse", never)
        x, h = [0.1, -2.5, 3e-8, 7.0, 1e10, -0.0], [65504.0, -1.5]
        second = body(x, h)
        read = plan.read_body(second, {}, MAX)
        assert read is not None
        assert_same(read, general(specs, second, {}))
        np.testing.assert_array_equal(read.feeds["x"], np.array(x, dtype=np.float32).reshape(2, 3))
        for number in range(3):  # a leading id, as tritonclient writes it, is cut out: each request's own
            with_id = body(h + x[:4], [0.0, float(number)], id=f"r-{number}")
            read = plan.read_body(with_id, {}, MAX)
            assert read is not None
            assert read.request_id == f"r-{number}"
            assert_same(read, general(specs, with_id, {}))
    # Ids the general path must judge, ids anywhere but first, and a second id: read whole.
    for odd in (b'{"id":"a\\"b",', b'{"id":"a\tb",', b'{"id":"\xff",', b'{"id":"a","id":"b",'):
        odd_body = odd + second[1:]
        read = plan.read_body(odd_body, {}, MAX)
        if read is not None:
            assert_same(read, general(specs, odd_body, {}))
    id_last = body(x, h)[:-1] + b',"id":"r-9"}'
    assert_same(plan.read_body(id_last, {}, MAX), general(specs, id_last, {}))
    # What the arrays hold is each request's to check: a count, a value beyond the datatype's range,
    # a number the general path converts its own way, anything but a flat list of numbers.
    for x_data, h_data in (
        ([0.5] * 5, [1.0, 2.0]),
        ([0.5] * 7, [1.0, 2.0]),
        ([0.5] * 6, [1.0]),
        ([1e39] + [0.5] * 5, [1.0, 2.0]),
        ([0.5] * 6, [1e6, 2.0]),
        ([2**60] + [0.5] * 5, [1.0, 2.0]),
        ([[0.5] * 3, [0.5] * 3], [1.0, 2.0]),
        ([0.5] * 6, [True, 2.0]),
    ):
        changed = body(x_data, h_data)
        read = plan.read_body(changed, {}, MAX)
        expected = general(specs, changed, {})
        if read is not None:
            assert_same(read, expected)
        assert read is None or expected is not None, (x_data, h_data)
    assert plan.read_body(first, {}, 5) is None  # the limit holds for a known layout too
    spaced = first.replace(b'"data":', b'"data" : ')  # space around the colon: its own layout
    assert_same(plan.read_body(spaced, {}, MAX), general(specs, spaced, {}))
    assert_same(plan.read_body(spaced, {}, MAX), general(specs, spaced, {}))
    assert plan.read_body(first + b" ", {}, MAX) is not None  # any other bytes: read whole, then known
    assert plan.read_body(first, {"content-encoding": "gzip"}, MAX) is None


DATATYPES = ("FP32", "FP32", "FP16", "FP64", "INT64", "INT8", "UINT16", "BOOL")


def rarely(draw: st.DrawFn) -> bool:
    """A mistake, one time in five: most generated requests are good ones, which the plan must decode."""
    return draw(st.integers(0, 4)) == 0


@st.composite
def cases(draw: st.DrawFn) -> tuple[tuple[TensorSpec, ...], bytes, dict[str, str]]:
    names = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=2, unique=True))
    specs = tuple(
        spec(name, draw(st.sampled_from(DATATYPES)), draw(st.sampled_from([(-1, 2), (-1,), (3,), (2, -1)])))
        for name in names
    )
    rows = draw(st.integers(0, 3))
    inputs: list[Any] = []
    chunks: list[bytes] = []
    for item in specs:
        shape = [rows if dim < 0 else dim for dim in item.shape]
        if draw(st.integers(0, 9)) == 0:  # a mistake in the shape
            shape = draw(st.lists(st.one_of(st.integers(-1, 4), st.just(True)), max_size=3))
        count = max(0, int(np.prod([d for d in shape if not isinstance(d, bool)] or [1])))
        number = st.floats(-1000, 1000, width=16) if item.datatype.startswith("FP") else st.integers(0, 100)
        values: list[Any] = draw(st.lists(number, min_size=count, max_size=count))
        if rarely(draw) and count:  # a value out of range for the narrow types
            values[0] = draw(st.sampled_from([1e39, 70000.0, 300]))
        entry: dict[str, Any] = {"name": item.name, "datatype": "FP32" if rarely(draw) else item.datatype}
        entry["shape"] = shape
        if draw(st.booleans()) or not item.datatype.startswith("FP"):
            itemsize = NUMPY[entry["datatype"]].itemsize
            raw = draw(st.binary(min_size=count * itemsize, max_size=count * itemsize))
            size: Any = draw(st.sampled_from([len(raw) + 1, True, float(len(raw))])) if rarely(draw) else len(raw)
            entry["parameters"] = {"binary_data_size": size}
            if rarely(draw):
                entry["parameters"]["other"] = "x"
            chunks.append(raw)
        else:
            entry["data"] = values
        inputs.append(entry)
    if rarely(draw):
        inputs = draw(st.sampled_from([inputs[:1], inputs + inputs[:1]]))
    document: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        request_id = 7 if rarely(draw) else "id-1"
        # First, as tritonclient writes it, or last.
        document = {"id": request_id, **document} if draw(st.booleans()) else {**document, "id": request_id}
    if draw(st.booleans()):
        bad = [{"binary_data_output": 1}, {"x": 1}]
        good = [{}, {"binary_data_output": True}, {"binary_data_output": False}]
        document["parameters"] = draw(st.sampled_from(bad if rarely(draw) else good))
    if draw(st.booleans()):
        output = "nope" if rarely(draw) else draw(st.sampled_from(OUTPUTS))
        choices: list[Any] = [None, {"binary_data": True}, {"binary_data": False}]
        parameters = {"binary_data": 0} if rarely(draw) else draw(st.sampled_from(choices))
        entry = {"name": output} if parameters is None else {"name": output, "parameters": parameters}
        other = "aux" if output == "out" else "out"
        document["outputs"] = [entry, entry] if rarely(draw) else draw(st.sampled_from([[entry], [entry, {"name": other}]]))
    body, headers = body_of(document, chunks)
    return specs, body, headers


def with_data(body: bytes, change: Any) -> bytes:
    document = orjson.loads(body)
    for entry in document.get("inputs") if type(document.get("inputs")) is list else []:
        if type(entry) is dict and type(entry.get("data")) is list:
            entry["data"] = change(entry["data"])
    return orjson.dumps(document)


def halved(values: list[Any]) -> list[Any]:
    return [value / 2 + 0.25 if type(value) in (int, float) else value for value in values]


def shorter(values: list[Any]) -> list[Any]:
    return values[:-1]


def longer(values: list[Any]) -> list[Any]:
    return [*values, 0.5]


def huge(values: list[Any]) -> list[Any]:
    return [1e39, *values[1:]]


@settings(max_examples=1500, deadline=None)
@given(cases())
def test_a_planned_request_is_one_the_general_path_accepts_and_decodes_the_same(
    case: tuple[tuple[TensorSpec, ...], bytes, dict[str, str]],
) -> None:
    specs, body, headers = case
    reader = RequestPlan(specs, OUTPUTS)
    plan = ask(reader, body, headers)
    expected = general(specs, body, headers)
    if plan is not None:
        assert_same(plan, expected)
    # The same header again, with other data or data of another length, or another id: read as the
    # general path reads it.
    other_id = body.replace(b'"id":"id-1"', b'"id":"id-2"')
    replays = [body, body[:-1] + b"\x7f", body + b"\0", body[:-1], other_id]
    if not headers:  # whole JSON: the same bytes around other numbers, fewer, more, and out of range
        replays += [with_data(body, change) for change in (halved, shorter, longer, huge)]
    for again in replays:
        replayed = reader.read_body(again, headers, MAX)
        if replayed is not None:
            assert_same(replayed, general(specs, again, headers))
            known = "a known binary header" if headers else "a known JSON layout"
            event(known + (" with a leading id" if again.startswith(b'{"id"') else ""))
    if plan is not None and from_document(specs, body, headers) is not None:
        event("planned from simdjson's document")
    event("planned" if plan is not None else "general path" if expected is not None else "refused")
