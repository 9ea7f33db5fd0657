from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.errors import InvalidRequest
from service.inspection.activations import value_stats
from service.inspection.session import InspectionSession

from .conftest import DEAD_UNITS


def _reference(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """The hidden values from a plain onnxruntime session of a model that lists them as outputs."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    hidden, act = session.run(["hidden", "act"], {"x": x})
    return {"hidden": hidden, "act": act}


def test_statistics_equal_an_independent_numpy_computation(
    dead_mlp_path: Path, dead_mlp_reference_path: Path
) -> None:
    x = np.random.default_rng(7).normal(size=(32, 3)).astype(np.float32)
    session = InspectionSession(dead_mlp_path)
    values = session.run({"x": x}, ["hidden", "act"])
    reference = _reference(dead_mlp_reference_path, x)

    for name in ("hidden", "act"):
        expected = reference[name].astype(np.float64)
        stats = value_stats(values[name], bins=16)
        np.testing.assert_array_equal(values[name], reference[name])
        assert stats["shape"] == [32, 6]
        assert stats["mean"] == pytest.approx(expected.mean(), abs=1e-12)
        assert stats["std"] == pytest.approx(np.sqrt(((expected - expected.mean()) ** 2).mean()), abs=1e-12)
        assert (stats["min"], stats["max"]) == (expected.min(), expected.max())
        assert stats["zero_fraction"] == pytest.approx((expected == 0).sum() / expected.size)
        np.testing.assert_allclose(stats["per_channel_mean"], expected.mean(axis=0), atol=1e-12)
        counts, edges = np.histogram(expected, bins=16)
        assert stats["histogram"]["counts"] == counts.tolist()
        np.testing.assert_allclose(stats["histogram"]["edges"], edges)


def test_dead_units_are_the_channels_never_active(dead_mlp_path: Path) -> None:
    x = np.random.default_rng(3).normal(size=(64, 3)).astype(np.float32) * 5
    act = InspectionSession(dead_mlp_path).run({"x": x}, ["act"])["act"]

    stats = value_stats(act)

    assert stats["never_active_channels"] == list(DEAD_UNITS)
    assert stats["never_active_fraction"] == pytest.approx(2 / 6)
    assert stats["zero_fraction"] >= 2 / 6


def test_constant_values_get_one_centred_bin_and_nan_is_counted_not_averaged() -> None:
    assert value_stats(np.full((5, 1), 3.0))["histogram"] == {"bins": 1, "edges": [2.5, 3.5], "counts": [5]}
    stats = value_stats(np.array([[1.0, np.nan], [3.0, np.inf]]))
    assert (stats["nan_count"], stats["inf_count"], stats["mean"]) == (1, 1, 2.0)
    assert stats["per_channel_mean"] == [2.0, None]


def test_promoted_values_over_the_cap_are_refused(dead_mlp_path: Path) -> None:
    session = InspectionSession(dead_mlp_path)
    # [N, 6] float32 values: 24 bytes per sample each.
    ten, eleven = {"x": np.zeros((10, 3), np.float32)}, {"x": np.zeros((11, 3), np.float32)}
    assert session.estimate_bytes(["hidden", "act"], ten) == 480
    session.check_budget(["hidden", "act"], ten, cap_bytes=480)
    with pytest.raises(InvalidRequest, match="over the inspection cap"):
        session.check_budget(["hidden", "act"], eleven, cap_bytes=480)


def test_unknown_value_names_are_refused(dead_mlp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="unknown intermediate value"):
        InspectionSession(dead_mlp_path).run({"x": np.zeros((1, 3), np.float32)}, ["nope"])


@pytest.mark.parametrize("spread", [2.0**-52, 1e-300, 0.0])
def test_a_near_constant_float64_value_gets_a_histogram_not_numpy_too_many_bins(spread: float) -> None:
    # np.histogram(x, bins=64, range=(1, 1 + 2**-52)) raises "Too many bins for data range".
    value = np.array([[1.0, 1.0 + spread], [1.0, 1.0]], dtype=np.float64)

    stats = value_stats(value, bins=64)

    histogram = stats["histogram"]
    assert sum(histogram["counts"]) == 4
    assert len(histogram["edges"]) == len(histogram["counts"]) + 1
    assert histogram["edges"][0] <= 1.0 <= 1.0 + spread <= histogram["edges"][-1]


def test_the_histogram_is_the_weight_statistics_one() -> None:
    from service.weights.tensor_stats import value_histogram

    data = np.random.default_rng(0).normal(size=(50, 4))

    assert value_stats(data, bins=10)["histogram"] == value_histogram(data.reshape(-1), 10)


def test_channels_follow_the_batch_axis() -> None:
    # A recurrent state [layers, batch, hidden]: the channels are the hidden units on axis 2.
    state = np.zeros((2, 3, 4))
    state[:, :, 1] = 1.0

    stats = value_stats(state, batch_axis=1)

    assert (stats["batch_axis"], stats["channel_axis"]) == (1, 2)
    assert stats["never_active_channels"] == [0, 2, 3]
    assert value_stats(np.ones(4), batch_axis=None)["channel_axis"] is None


def test_a_model_with_nothing_to_watch_answers_with_no_values(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(tmp_path / "identity.onnx"))
    session = InspectionSession(tmp_path / "identity.onnx")

    assert session.watched == ()
    assert session.run({"x": np.zeros((1, 2), np.float32)}, []) == {}
