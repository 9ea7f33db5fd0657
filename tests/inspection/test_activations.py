from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.errors import InvalidRequest
from service.inspection.activations import histogram, value_stats
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
    assert histogram(np.full(5, 3.0)) == {"edges": [2.5, 3.5], "counts": [5]}
    stats = value_stats(np.array([[1.0, np.nan], [3.0, np.inf]]))
    assert (stats["nan_count"], stats["inf_count"], stats["mean"]) == (1, 1, 2.0)
    assert stats["per_channel_mean"] == [2.0, None]


def test_promoted_values_over_the_cap_are_refused(dead_mlp_path: Path) -> None:
    session = InspectionSession(dead_mlp_path)
    # [N, 6] float32 values: 24 bytes per sample each.
    assert session.estimate_bytes(["hidden", "act"], batch=10) == 480
    session.check_budget(["hidden", "act"], batch=10, cap_bytes=480)
    with pytest.raises(InvalidRequest, match="over the inspection cap"):
        session.check_budget(["hidden", "act"], batch=11, cap_bytes=480)


def test_unknown_value_names_are_refused(dead_mlp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="unknown intermediate value"):
        InspectionSession(dead_mlp_path).run({"x": np.zeros((1, 3), np.float32)}, ["nope"])
