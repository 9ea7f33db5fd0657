"""A version's response encoder writes exactly what the general encoder writes, whatever the outputs."""

from __future__ import annotations

import gzip
import math

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from service.protocol.datatypes import NUMPY
from service.protocol.encode import EncodedResponse, ResponseEncoder, encode_response

_NUMERIC = [name for name in NUMPY if name not in ("BYTES", "BF16")]


def general(
    encoder_args: tuple[str, str],
    request_id: str | None,
    selected: list[tuple[str, bool]],
    outputs: dict[str, np.ndarray],
    accept_encoding: str | None = None,
) -> EncodedResponse:
    name, version = encoder_args
    return encode_response(name, version, request_id, [(out, outputs[out], b) for out, b in selected], accept_encoding)


def assert_same(a: EncodedResponse, b: EncodedResponse) -> None:
    assert a.body == b.body
    assert a.headers == b.headers
    assert a.media_type == b.media_type


arrays = st.sampled_from(_NUMERIC).flatmap(
    lambda datatype: hnp.arrays(NUMPY[datatype], hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
)


@given(
    st.lists(st.tuples(arrays, st.booleans()), min_size=0, max_size=3),
    st.one_of(st.none(), st.text(max_size=12)),
)
def test_any_numeric_outputs_encode_as_the_general_encoder_does(
    items: list[tuple[np.ndarray, bool]], request_id: str | None
) -> None:
    encoder = ResponseEncoder("model \"q\"", "3")
    outputs = {f"out{i}": array for i, (array, _) in enumerate(items)}
    selected = [(f"out{i}", binary) for i, (_, binary) in enumerate(items)]
    for _ in range(2):  # the second time from the kept entries
        assert_same(
            encoder.encode(request_id, selected, outputs, None),
            general(("model \"q\"", "3"), request_id, selected, outputs),
        )


def test_kept_entries_serve_new_values_of_the_same_layout() -> None:
    encoder = ResponseEncoder("m", "1")
    for seed in range(3):
        values = np.random.default_rng(seed).random((2, 5), dtype=np.float32)
        got = orjson.loads(encoder.encode("r", [("y", False)], {"y": values}, None).body)
        assert np.array_equal(np.array(got["outputs"][0]["data"], np.float32), values.reshape(-1))
        assert got["outputs"][0]["shape"] == [2, 5]
        assert got["id"] == "r"


def test_binary_outputs_carry_their_bytes_after_the_header() -> None:
    encoder = ResponseEncoder("m", "1")
    values = np.arange(6, dtype=np.int64).reshape(2, 3)
    fortran = np.asfortranarray(values)  # not C-ordered: written in C order all the same
    for array in (values, fortran, values[:, ::2]):
        encoded = encoder.encode(None, [("y", True)], {"y": array}, None)
        size = int(encoded.headers["Inference-Header-Content-Length"])
        header = orjson.loads(encoded.body[:size])
        assert header["outputs"][0]["parameters"] == {"binary_data_size": array.size * 8}
        assert np.array_equal(np.frombuffer(encoded.body[size:], dtype=np.int64).reshape(array.shape), array)
        assert encoded.media_type == "application/octet-stream"


def test_strings_and_bf16_go_through_the_general_encoder() -> None:
    encoder = ResponseEncoder("m", "1")
    strings = np.array([b"a", "b\u00e9"], dtype=object)
    bf16 = np.array([1.5, -2.0], dtype=np.float32).view(np.uint32) >> 16
    outputs = {"s": strings, "h": bf16.astype(np.uint16).view(NUMPY["BF16"]), "f": np.ones(2, np.float32)}
    for selected in ([("s", False), ("f", True)], [("h", False)], [("h", True), ("s", True)]):
        assert_same(encoder.encode("x", selected, outputs, None), general(("m", "1"), "x", selected, outputs))


def test_non_native_byte_order_is_left_to_the_general_encoder() -> None:
    encoder = ResponseEncoder("m", "1")
    outputs = {"y": np.arange(3, dtype=">i4")}
    with pytest.raises(TypeError):  # as the general encoder does: no V2 datatype for it
        general(("m", "1"), None, [("y", True)], outputs)
    with pytest.raises(TypeError):
        encoder.encode(None, [("y", True)], outputs, None)


def test_nan_and_infinities_are_written_as_the_general_encoder_writes_them() -> None:
    encoder = ResponseEncoder("m", "1")
    outputs = {"y": np.array([math.nan, math.inf, -math.inf, 1.0], np.float32)}
    assert_same(encoder.encode(None, [("y", False)], outputs, None), general(("m", "1"), None, [("y", False)], outputs))


def test_compression_is_negotiated_as_the_general_encoder_does() -> None:
    encoder = ResponseEncoder("m", "1")
    outputs = {"y": np.zeros((4, 100), np.float32)}
    for accept in ("gzip", "deflate;q=0, gzip", "br", "gzip;q=0", ""):
        ours = encoder.encode(None, [("y", False)], outputs, accept)
        theirs = general(("m", "1"), None, [("y", False)], outputs, accept)
        assert ours.headers == theirs.headers
        if ours.headers.get("Content-Encoding") == "gzip":
            assert gzip.decompress(ours.body) == gzip.decompress(theirs.body)
        else:
            assert ours.body == theirs.body


def test_the_kept_layouts_are_bounded() -> None:
    """A model whose output shapes vary without end (sequence lengths) does not grow the encoder."""
    encoder = ResponseEncoder("m", "1")
    for length in range(1, 600):
        values = np.ones((1, length), np.float32)
        assert_same(
            encoder.encode(None, [("y", False)], {"y": values}, None), general(("m", "1"), None, [("y", False)], {"y": values})
        )
    assert 0 < encoder.layouts_kept <= 256
