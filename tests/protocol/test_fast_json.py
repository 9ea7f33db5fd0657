"""Float tensor data read straight into numpy must equal what the general JSON path produces."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import InvalidInput
from service.protocol import fast_json
from service.protocol.decode import decode_inputs
from service.protocol.request import parse_request
from service.protocol.signature import TensorSpec

pytest.importorskip("simdjson")

MAX = 1 << 26


def body(datatype: str, data: Any, shape: list[int]) -> bytes:
    return orjson.dumps({"id": "r1", "inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": data}]})


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**63), 2**63 - 1)), max_size=40
    ),
    datatype=st.sampled_from(["FP16", "FP32", "FP64"]),
)
def test_flat_float_data_decodes_exactly_as_python_floats_would(values: list[float | int], datatype: str) -> None:
    raw = body(datatype, values, [len(values)])
    document = fast_json.loads(raw)
    assert document is not None
    dtype = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}[datatype]
    with np.errstate(over="ignore"):
        expected = np.asarray(values, dtype=dtype)
    spec = TensorSpec("x", datatype, (-1,), np.dtype(dtype))
    if np.isinf(expected).any():  # finite JSON numbers too large for the datatype are refused
        with pytest.raises(InvalidInput, match=f"outside the range of {datatype}"):
            decode_inputs(parse_request(raw, {}, MAX), (spec,), "m", MAX)
        return
    got = decode_inputs(parse_request(raw, {}, MAX), (spec,), "m", MAX)["x"]
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == dtype


FP32_MAX = float(np.finfo(np.float32).max)
FP32_HALF_ULP = 2.0**103
"""Numbers below FP32_MAX + FP32_HALF_ULP round to FP32_MAX; from there on they round to infinity."""


@pytest.mark.parametrize(
    ("datatype", "values", "fits"),
    [
        ("FP16", [65504.0, -1.0], True),
        ("FP16", [65519.0], True),  # rounds down to 65504
        ("FP16", [65520.0], False),  # rounds up to infinity
        ("FP16", [60000.0] * 10, True),  # big squares, each number in range
        ("FP16", [1.0, -70000.0], False),
        ("FP32", [FP32_MAX, -FP32_MAX], True),
        ("FP32", [FP32_MAX + FP32_HALF_ULP * 0.9], True),
        ("FP32", [FP32_MAX + FP32_HALF_ULP], False),
        ("FP32", [1.0] * 100 + [1e39], False),
        ("FP64", [1e308, -1e308], True),
    ],
)
def test_numbers_at_the_edge_of_a_narrow_range(datatype: str, values: list[float], fits: bool) -> None:
    dtype = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}[datatype]
    spec = TensorSpec("x", datatype, (-1,), np.dtype(dtype))
    request = parse_request(body(datatype, values, [len(values)]), {}, MAX)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning escapes, whichever way the check goes
        if not fits:
            with pytest.raises(InvalidInput, match=f"outside the range of {datatype}"):
                decode_inputs(request, (spec,), "m", MAX)
            return
        got = decode_inputs(request, (spec,), "m", MAX)["x"]
    np.testing.assert_array_equal(got, np.asarray(values).astype(dtype))
    assert np.isfinite(got).all()


def test_everything_but_float_data_is_plain_python() -> None:
    raw = orjson.dumps(
        {
            "id": "abc",
            "parameters": {"binary_data_output": False, "n": 3},
            "inputs": [
                {"name": "a", "datatype": "FP32", "shape": [2], "data": [1.5, 2], "parameters": {"p": "q"}},
                {"name": "b", "datatype": "INT64", "shape": [2], "data": [1, 2]},
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    )
    document = fast_json.loads(raw)
    assert document is not None
    first, second = document["inputs"]
    np.testing.assert_array_equal(first.pop("data"), [1.5, 2.0])
    assert document | {"inputs": [first, second]} == orjson.loads(raw) | {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [2], "parameters": {"p": "q"}},
            {"name": "b", "datatype": "INT64", "shape": [2], "data": [1, 2]},
        ]
    }


@pytest.mark.parametrize(
    "raw",
    [
        body("FP32", [[1.0, 2.0], [3.0, 4.0]], [2, 2]),  # nested: the usual path checks its shape
        body("FP32", [[1.0, 2.0], [3.0]], [3]),  # ragged
        body("FP32", [True, 1.0], [2]),
        body("FP32", ["1.0"], [1]),
        b'{"inputs": [], "inputs": []}',
        b'{"inputs": [{"name": "x", "name": "y", "datatype": "FP32", "shape": [1], "data": [1]}]}',
        b"[1, 2]",
        b'{"inputs": [1.0, 2.0',
        b"",
    ],
)
def test_anything_unusual_is_left_to_the_general_parser(raw: bytes) -> None:
    assert fast_json.loads(raw) is None


def test_ragged_data_is_still_refused_with_a_clear_error() -> None:
    raw = body("FP32", [[1.0, 2.0], [3.0]], [3])
    spec = TensorSpec("x", "FP32", (-1,), np.dtype(np.float32))
    with pytest.raises(InvalidInput, match="input 'x'"):
        decode_inputs(parse_request(raw, {}, MAX), (spec,), "m", MAX)
