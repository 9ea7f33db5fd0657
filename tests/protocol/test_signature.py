"""Where a request's samples are: the batch axis from the signature, names first."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import InvalidInput
from service.protocol.signature import TensorSpec, name_batch_axes, request_rows

F32 = np.dtype(np.float32)


def spec(name: str, shape: tuple[int, ...], names: tuple[str | None, ...] = ()) -> TensorSpec:
    return TensorSpec(name, "FP32", shape, F32, names)


def test_without_names_the_first_dynamic_dimension_is_the_batch_axis() -> None:
    assert [s.batch_axis for s in (spec("a", (-1, 3)), spec("b", (2, -1, 8)), spec("c", ()), spec("d", (2, 3)))] == [
        0, 1, None, None,
    ]  # fmt: skip


def test_a_name_shared_by_every_input_places_the_batch_axis() -> None:
    inputs = (spec("h0", (-1, 7), ("batch", None)), spec("seq", (-1, -1, 5), ("time", "batch", None)))
    outputs = (spec("h_last", (-1, 7), ("batch", None)), spec("ys", (-1, -1, 7), ("time", "batch", None)))
    placed_in, placed_out = name_batch_axes(inputs, outputs)
    assert [s.batch_axis for s in placed_in] == [0, 1]
    assert [s.batch_axis for s in placed_out] == [0, 1]
    feeds = {"h0": np.zeros((2, 7), np.float32), "seq": np.zeros((4, 2, 5), np.float32)}
    assert request_rows(placed_in, feeds) == 2
    with pytest.raises(InvalidInput, match="disagree"):
        request_rows(inputs, feeds)  # the unnamed rule would read the sequence's 4 steps as samples


def test_scalars_and_states_beside_a_named_batch() -> None:
    inputs = (
        spec("audio", (-1, 64), ("batch", None)),
        spec("state", (2, -1, 16), (None, "batch", None)),
        TensorSpec("sr", "INT64", (), np.dtype(np.int64)),
    )
    placed, _ = name_batch_axes(inputs, ())
    assert [s.batch_axis for s in placed] == [0, 1, None]


@pytest.mark.parametrize(
    "inputs",
    [
        (spec("a", (-1, 3), ("n", None)), spec("b", (-1, 3), ("m", None))),  # no shared name
        (spec("a", (-1, 3), ("n", None)), spec("b", (-1, 3))),  # one input unnamed
    ],
)
def test_without_a_shared_name_the_first_dynamic_rule_stands(inputs: tuple[TensorSpec, ...]) -> None:
    placed, _ = name_batch_axes(inputs, ())
    assert placed == inputs
