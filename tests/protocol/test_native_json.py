"""The native JSON reader gives what Python's json module gives, numbers bit for bit, or None: never
a different document, and never a document where the text is not valid JSON."""

from __future__ import annotations

import json
import math
import random
import struct
import sys
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from service.protocol import native_json


def bits(value: float) -> bytes:
    return struct.pack("<d", value)


def assert_reads_as_python(text: str) -> None:
    expected = float(text)
    got = native_json.read_float(text.encode())
    if math.isinf(expected):
        assert got is None, text  # out of float64's range: the general path words that
    else:
        assert got is not None, text
        assert bits(got) == bits(expected), (text, got, expected)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_shortest_representations_read_back_bit_for_bit(value: float) -> None:
    assert_reads_as_python(repr(value))


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float32_values_as_clients_write_them(value: float) -> None:
    assert_reads_as_python(repr(value))  # what tolist() and json.dumps give: up to 17 digits


@given(st.floats(allow_nan=False, allow_infinity=False), st.integers(0, 30))
def test_any_number_of_digits(value: float, digits: int) -> None:
    assert_reads_as_python(f"{value:.{digits}e}")
    assert_reads_as_python(f"{value:.{digits}E}".replace("E+", "E"))


@given(st.text("0123456789", min_size=1, max_size=40), st.integers(-400, 400), st.booleans())
def test_any_decimal_string(digits: str, power: int, negative: bool) -> None:
    mantissa = digits.lstrip("0") or "0"
    text = f"{'-' if negative else ''}{mantissa[0]}.{mantissa[1:] or '0'}e{power}"
    assert_reads_as_python(text)


def test_halfway_between_two_doubles_rounds_to_even() -> None:
    """The exact midpoints (and a hair either side) are where a 128-bit product cannot decide alone."""
    rng = random.Random(7)
    for _ in range(3000):
        low = abs(struct.unpack("<d", struct.pack("<Q", rng.getrandbits(63)))[0])
        high = math.nextafter(low, math.inf)
        if not math.isfinite(high) or low == 0:
            continue
        middle = (Decimal(low) + Decimal(high)) / 2
        for text in (str(middle), format(middle, "e"), format(middle.next_plus(), "e"), format(middle.next_minus(), "e")):
            assert_reads_as_python(text)


@pytest.mark.parametrize(
    "text",
    [
        "0", "0.0", "-0.0", "0e5", "-0e-5", "1", "-1", "9007199254740992", "9007199254740993",
        "9007199254740993.0", "123456789012345678901234567890", "0.1", "0.30000001192092896",
        "1e22", "1e23", "1E-5", "1e+5", "4.9e-324", "5e-324", "2.4703282292062327e-324",
        "2.4703282292062328e-324", "2.2250738585072011e-308", "2.2250738585072014e-308",
        "1.7976931348623157e308", "1.7976931348623158e308", "1.7976931348623159e308", "1e400", "-1e400",
        "1e-400", "0." + "0" * 400 + "1", "1" + "0" * 400, "7." + "9" * 30 + "e-300",
        "0.000000000000000000000000000000000000000000001",
    ],
)
def test_numbers_at_the_edges(text: str) -> None:
    assert_reads_as_python(text)


@pytest.mark.parametrize("text", ["01", "-01", "1.", ".1", "-", "+1", "1e", "1e+", "--1", "1.e5", "0x10", "NaN", "Infinity", "1 "])
def test_text_that_is_not_a_json_number_is_not_read(text: str) -> None:
    assert native_json.read_float(text.encode()) is None


def test_the_powers_table_is_normalised_128_bit_values() -> None:
    table = native_json.powers_of_five()
    pairs = [
        (int.from_bytes(table[i : i + 8], sys.byteorder), int.from_bytes(table[i + 8 : i + 16], sys.byteorder))
        for i in range(0, len(table), 16)
    ]
    assert len(pairs) == native_json.POWER_MAX - native_json.POWER_MIN + 1
    assert all(high >> 63 == 1 for high, _ in pairs)
    one = pairs[-native_json.POWER_MIN]  # 5**0 = 1, shifted to the top bit
    assert one == (1 << 63, 0)
    assert pairs[-native_json.POWER_MIN + 1] == (5 << 61, 0)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**18) + 1, 10**18 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


def layout(document: Any, indent: int | None, spaced: bool, ascii_only: bool) -> bytes:
    separators = (", ", ": ") if spaced else (",", ":")
    return json.dumps(document, indent=indent, separators=separators, ensure_ascii=ascii_only).encode()


@settings(max_examples=300)
@given(
    st.dictionaries(st.text(max_size=6), json_values, max_size=5),
    st.sampled_from([None, 0, 2]),
    st.booleans(),
    st.booleans(),
)
def test_any_document_reads_as_json_reads_it_or_not_at_all(
    document: dict[str, Any], indent: int | None, spaced: bool, ascii_only: bool
) -> None:
    text = layout(document, indent, spaced, ascii_only)
    parsed = native_json.parse(text)
    if b"\\" in text:  # an escape: left to the general parser
        event("escaped")
        assert parsed is None
        return
    event("read")
    assert parsed is not None
    assert parsed == json.loads(text)
    assert json.dumps(parsed, sort_keys=True) == json.dumps(json.loads(text), sort_keys=True)  # -0.0, types


numbers = st.lists(
    st.floats(allow_nan=False, allow_infinity=False, width=32) | st.integers(-(2**53), 2**53) | st.floats(-1e6, 1e6),
    max_size=50,
)


@settings(max_examples=200)
@given(
    st.lists(numbers, min_size=1, max_size=3),
    st.sampled_from([None, 1]),
    st.booleans(),
    st.sampled_from([{}, {"id": "r-1"}, {"parameters": {"binary_data_output": True}}]),
)
def test_input_data_arrives_as_float64_and_float32_bytes(
    arrays: list[list[float | int]], indent: int | None, spaced: bool, extra: dict[str, Any]
) -> None:
    inputs = [{"name": f"x{i}", "datatype": "FP32", "shape": [len(a)], "data": a} for i, a in enumerate(arrays)]
    document = {**extra, "inputs": inputs, "outputs": [{"name": "y"}]}
    parsed = native_json.parse(layout(document, indent, spaced, True))
    assert parsed is not None
    assert parsed.keys() == document.keys()
    assert parsed["outputs"] == [{"name": "y"}]
    for raw, values in zip(parsed["inputs"], arrays, strict=True):
        wide, narrow = raw.pop("data")
        expected = np.asarray([float(v) for v in values], dtype=np.float64)
        assert wide == expected.tobytes()
        assert narrow == expected.astype(np.float32).tobytes()
        assert raw == {"name": raw["name"], "datatype": "FP32", "shape": [len(values)]}


def test_data_is_read_natively_only_under_inputs() -> None:
    parsed = native_json.parse(b'{"data": [1, 2], "inputs": [{"data": [1.5, -0]}], "outputs": [{"data": [3]}]}')
    assert parsed is not None
    assert parsed["data"] == [1, 2]
    assert parsed["outputs"] == [{"data": [3]}]
    wide, narrow = parsed["inputs"][0]["data"]
    assert np.frombuffer(wide, np.float64).tolist() == [1.5, 0.0]
    assert narrow == np.asarray([1.5, 0.0], np.float32).tobytes()
    assert struct.pack("<d", np.frombuffer(wide, np.float64)[1]) == bits(0.0)  # the integer -0 is +0.0


def test_a_value_beyond_float32_keeps_its_float64_bytes_only() -> None:
    parsed = native_json.parse(b'{"inputs": [{"data": [1.0, 3.5e38, 3.4028235e38]}]}')
    assert parsed is not None
    wide, narrow = parsed["inputs"][0]["data"]
    assert narrow is None
    assert np.frombuffer(wide, np.float64).tolist() == [1.0, 3.5e38, 3.4028235e38]
    fits = native_json.parse(b'{"inputs": [{"data": [3.4028235e38, -3.4028235e38, 1e-50]}]}')
    assert fits is not None
    assert fits["inputs"][0]["data"][1] == np.asarray([3.4028235e38, -3.4028235e38, 1e-50]).astype(np.float32).tobytes()


def test_large_input_arrays_are_read_whole() -> None:
    values = np.random.default_rng(3).standard_normal(50_000).astype(np.float32)
    text = json.dumps({"inputs": [{"name": "x", "data": values.tolist()}]}).encode()
    parsed = native_json.parse(text)
    assert parsed is not None
    assert parsed["inputs"][0]["data"][1] == values.tobytes()


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"[]",
        b"1",
        b'"inputs"',
        b"{",
        b'{"a": 1',
        b'{"a": 1,}',
        b'{"a": [1, 2,]}',
        b'{"a": 1} x',
        b'{"a": 1}{}',
        b'{"a" 1}',
        b"{'a': 1}",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": 01}',
        b'{"a": tru}',
        b'{"a": nul}',
        b'{"a": "x\ty"}',
        b'{"a": "\xff"}',
        b'{"a": "\\u0041"}',
        b'{"a": 1, "a": 2}',
        b'{"a": 12345678901234567890}',
        b'{"a": 1e400}',
        b'{"inputs": [{"data": [1, [2]]}]}',
        b'{"inputs": [{"data": [[1, 2]]}]}',
        b'{"inputs": [{"data": [1, "2"]}]}',
        b'{"inputs": [{"data": [1, true]}]}',
        b'{"inputs": [{"data": [1, null]}]}',
        b'{"inputs": [{"data": [9007199254740993]}]}',
        b'{"inputs": [{"data": [1e400]}]}',
        b'{"inputs": [{"data": [1 2]}]}',
        b'{"inputs": [{"data": [1,]}]}',
        b'{"a": ' + b"[" * 70 + b"]" * 70 + b"}",
    ],
)
def test_anything_else_is_left_to_the_general_parser(text: bytes) -> None:
    assert native_json.parse(text) is None


def test_nesting_within_the_limit_is_read() -> None:
    text = b'{"a": ' + b"[" * 60 + b"]" * 60 + b"}"
    assert native_json.parse(text) == json.loads(text)
    assert native_json.parse(b' \n\t{"a": 1}\r\n ') == {"a": 1}
    assert native_json.parse(b'{"inputs": [{"data": []}], "a": "\xc3\xa9"}') == {"inputs": [{"data": (b"", b"")}], "a": "é"}


def as_json_reads_it(parsed: Any) -> Any:
    """The document `parse` gave, with each input's data bytes back as the list of floats they hold."""
    inputs = parsed.get("inputs") if type(parsed) is dict else None
    if type(inputs) is not list:
        return parsed
    out = dict(parsed)
    out["inputs"] = [
        {**item, "data": np.frombuffer(item["data"][0], np.float64).tolist()}
        if type(item) is dict and type(item.get("data")) is tuple
        else item
        for item in inputs
    ]
    return out


V2_BODY = (
    b'{"id": "r-1", "parameters": {"binary_data_output": false}, "inputs": [{"name": "x", "datatype": "FP32",'
    b' "shape": [2, 3], "data": [0.5, -1.25e-3, 7, 0.30000001192092896, 1E5, -0]}], "outputs": [{"name": "y"}]}'
)


@settings(max_examples=1500)
@given(st.lists(st.tuples(st.integers(0, len(V2_BODY)), st.integers(0, 255), st.sampled_from("xid")), max_size=4))
def test_a_damaged_body_is_read_as_json_reads_it_or_left_alone(edits: list[tuple[int, int, str]]) -> None:
    """Flipped, inserted and deleted bytes anywhere: the reader never accepts text json refuses, and
    what it accepts it reads as json does (and it never crashes the process)."""
    text = bytearray(V2_BODY)
    for at, byte, kind in edits:
        at = min(at, len(text))
        if kind == "x" and at < len(text):
            text[at] = byte
        elif kind == "i":
            text.insert(at, byte)
        elif kind == "d" and at < len(text):
            del text[at]
    parsed = native_json.parse(bytes(text))
    if parsed is None:
        return
    event("read")
    expected = json.loads(bytes(text))
    assert as_json_reads_it(parsed) == expected


@pytest.mark.parametrize("size", range(len(V2_BODY)))
def test_every_truncation_is_refused(size: int) -> None:
    assert native_json.parse(V2_BODY[:size]) is None
    assert native_json.parse(V2_BODY) is not None


def test_the_data_arrays_are_found_without_reading_the_rest() -> None:
    parts = native_json.split_data(V2_BODY)
    assert parts is not None
    segments, spans = parts
    start, stop = spans
    assert segments == (V2_BODY[:start], V2_BODY[stop:])
    assert V2_BODY[start:stop] == b"[0.5, -1.25e-3, 7, 0.30000001192092896, 1E5, -0]"
    parsed = native_json.parse(V2_BODY)
    assert parsed is not None
    assert native_json.read_floats(V2_BODY, start, stop) == parsed["inputs"][0]["data"]
    two = b'{"inputs":[{"data" :[1]},{"name":"binary_data","data":\n[2.5, 3]}],"outputs":[{"parameters":{"binary_data":true}}]}'
    parts = native_json.split_data(two)
    assert parts is not None
    assert [two[a:b] for a, b in zip(parts[1][::2], parts[1][1::2], strict=True)] == [b"[1]", b"[2.5, 3]"]
    first, middle, last = parts[0]
    assert first + b"[1]" + middle + b"[2.5, 3]" + last == two  # the segments and arrays are the whole body
    assert middle == b'},{"name":"binary_data","data":\n'
    for none in (b'{"inputs":[]}', b'{"inputs":[{"data":[1,2}]}'[:-3], b'"data":', b"", b'{"data": 3}'):
        assert native_json.split_data(none) is None, none


@pytest.mark.parametrize(
    "span",
    [b"[1, 2", b"1, 2]", b"[1, [2]]", b'[1, "2"]', b"[1,]", b"[true]", b"[1] ", b" [1]", b"[9007199254740993]"],
)
def test_a_span_that_is_not_exactly_a_flat_number_array_is_not_read(span: bytes) -> None:
    assert native_json.read_floats(span, 0, len(span)) is None


def test_read_floats_reads_only_inside_the_body() -> None:
    body = b"[1, 2]"
    assert native_json.read_floats(body, 0, len(body)) is not None
    assert native_json.read_floats(body, 0, len(body) + 1) is None
    assert native_json.read_floats(body, -1, len(body)) is None
    assert native_json.read_floats(body, 3, 3) is None
    assert native_json.read_floats(b"[]", 0, 2) == (b"", b"")
