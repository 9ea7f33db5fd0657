from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from service.errors import InvalidRequest
from service.weights.tensor_stats import MAX_CHANNELS, histogram_counts, histogram_spec, tensor_stats
from service.weights.values import BLOCK, TensorValues
from tests.weights.reference import assert_stats_match

RNG = np.random.default_rng(42)


@pytest.mark.parametrize(
    ("shape", "out_axis"),
    [
        ((16, 8), 0),
        ((8, 16), 1),
        ((6, 3, 3, 3), 0),
        ((3, 6, 3, 3), 1),
        ((10,), None),
        ((), None),
        ((4, 5, 6), 2),
    ],
)
def test_every_statistic_matches_numpy(shape: tuple[int, ...], out_axis: int | None) -> None:
    x = (RNG.standard_t(4, size=shape) * 0.1).astype(np.float32)
    stats = tensor_stats(TensorValues(x, out_axis))
    assert_stats_match(stats, x, out_axis, f"{shape} axis {out_axis}")
    assert stats["std_ddof"] == 0


@pytest.mark.parametrize(
    ("shape", "out_axis"),
    [((3, BLOCK // 2 + 7), 0), ((2, BLOCK + 5), 0), ((BLOCK + 11,), None), ((BLOCK // 3, 7), 1)],
)
def test_block_streaming_gives_whole_array_numbers(shape: tuple[int, ...], out_axis: int | None) -> None:
    x = RNG.normal(0.01, 0.2, size=shape).astype(np.float32)
    x.reshape(-1)[::97] = 0.0
    assert_stats_match(tensor_stats(TensorValues(x, out_axis)), x, out_axis, f"streamed {shape}")


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float64])
def test_storage_dtypes_are_widened_exactly(dtype: type) -> None:
    x: np.ndarray = RNG.normal(0, 1, size=(12, 5)).astype(dtype)
    stats = tensor_stats(TensorValues(x, 0))
    assert_stats_match(stats, x.astype(np.float64), 0, str(dtype))


def test_nan_and_inf_are_counted_and_left_out() -> None:
    x = RNG.normal(0, 1, size=(6, 10))
    x[0, 0], x[1, 3], x[2, 2], x[5, 9] = np.nan, np.inf, -np.inf, np.nan
    stats = tensor_stats(TensorValues(x, 0))
    finite = x[np.isfinite(x)]
    assert (stats["nan_count"], stats["inf_count"], stats["finite_count"]) == (2, 2, 56)
    np.testing.assert_allclose(stats["mean"], finite.mean(), rtol=1e-12)
    np.testing.assert_allclose(stats["std"], finite.std(), rtol=1e-12)
    np.testing.assert_allclose(stats["min"], finite.min())
    np.testing.assert_allclose(stats["quantiles"]["p50"], np.median(finite), rtol=1e-12)
    assert sum(stats["histogram"]["counts"]) == 56
    row = x[1][np.isfinite(x[1])]
    np.testing.assert_allclose(stats["per_channel"]["mean"][1], row.mean(), rtol=1e-12)
    np.testing.assert_allclose(stats["per_channel"]["std"][1], row.std(), rtol=1e-12)


def test_all_non_finite_tensor_does_not_crash() -> None:
    stats = tensor_stats(TensorValues(np.full((3, 2), np.nan, dtype=np.float32), 0))
    assert stats["nan_count"] == 6
    assert stats["mean"] is None
    assert stats["min"] is None
    assert stats["skewness"] is None
    assert stats["quantiles"]["p50"] is None


def test_constant_tensor_has_one_bin_and_no_shape_moments() -> None:
    stats = tensor_stats(TensorValues(np.full((4, 4), 0.25, dtype=np.float32), 0))
    assert stats["histogram"] == {"bins": 1, "edges": [-0.25, 0.75], "counts": [16]}
    assert stats["skewness"] is None
    assert stats["excess_kurtosis"] is None
    assert stats["std"] == 0.0


def test_zero_tensor() -> None:
    stats = tensor_stats(TensorValues(np.zeros((3, 3), dtype=np.float32), 0))
    assert stats["zero_fraction"] == 1.0
    assert stats["log_abs_histogram"] is None
    assert stats["quant_readiness"]["int8_sqnr_db"] == {"per_tensor": None, "per_channel": None}


def test_histogram_options() -> None:
    x = np.array([-1.0, -0.5, 0.0, 0.25, 2.0])
    spec = histogram_spec(4, "symmetric", -1.0, 2.0, 2.0)
    assert spec.edges().tolist() == [-2.0, -1.0, 0.0, 1.0, 2.0]
    body = histogram_counts(TensorValues(x), spec)
    assert body["counts"] == np.histogram(x, bins=4, range=(-2, 2))[0].tolist()
    shared = histogram_counts(TensorValues(x), histogram_spec(2, "minmax", -0.75, 0.5, 0.75))
    assert (shared["below"], shared["above"], sum(shared["counts"])) == (1, 1, 3)
    for bins, range_name in [(0, "minmax"), (1025, "minmax"), (8, "log")]:
        with pytest.raises(InvalidRequest):
            histogram_spec(bins, range_name, 0.0, 1.0, 1.0)


def test_log_abs_histogram_covers_non_zero_magnitudes() -> None:
    x = np.array([0.0, 1e-3, -1e-2, 0.1, 1.0, -10.0])
    stats = tensor_stats(TensorValues(x))
    log_hist = stats["log_abs_histogram"]
    assert sum(log_hist["counts"]) == 5
    assert log_hist["edges"][0] == pytest.approx(-3.0)
    assert log_hist["edges"][-1] == pytest.approx(1.0)


def test_quantized_values_are_dequantized_per_channel() -> None:
    q = RNG.integers(-128, 128, size=(4, 6), dtype=np.int8)
    scale = np.array([0.01, 0.02, 0.005, 0.1], dtype=np.float32)
    zero = np.array([0, 3, -2, 1], dtype=np.int8)
    values = TensorValues(q, out_axis=0, scale=scale, zero_point=zero, quant_axis=0)
    dequantized = (q.astype(np.float64) - zero[:, None]) * scale.astype(np.float64)[:, None]
    np.testing.assert_array_equal(values.to_float64(), dequantized)
    stats = tensor_stats(values)
    assert_stats_match(stats, dequantized, 0, "int8 per channel")
    view = stats["quant_readiness"]["integer_view"]
    assert view["distinct_levels"] == np.unique(q).size
    assert view["clip_fraction"] == np.count_nonzero((q == -128) | (q == 127)) / q.size


def test_quantization_axis_other_than_output_axis() -> None:
    q = RNG.integers(-50, 50, size=(3, 5), dtype=np.int8)
    scale = RNG.uniform(0.01, 0.1, size=5).astype(np.float32)
    values = TensorValues(q, out_axis=0, scale=scale, zero_point=None, quant_axis=1)
    assert_stats_match(tensor_stats(values), q * scale.astype(np.float64)[None, :], 0, "axis 1 scale")


def test_fp16_readiness_counts() -> None:
    x = np.array([1e5, -7e4, 1e-6, -3e-5, 1.0, 0.0])
    readiness = tensor_stats(TensorValues(x))["quant_readiness"]
    assert readiness["fp16_overflow"] == 2
    assert readiness["fp16_subnormal"] == 2


def test_float64_extremes_beyond_float32_do_not_crash() -> None:
    x = np.array([1e-300, -1e300, 0.5, 2.0, np.finfo(np.float64).max])
    stats = tensor_stats(TensorValues(x))
    assert stats["abs_max"] == np.finfo(np.float64).max
    assert stats["l2"] is None  # overflows float64: null, not an error
    assert stats["quant_readiness"]["fp16_overflow"] == 2


def test_nearly_equal_values_get_one_bin() -> None:
    x = np.array([1.0, np.nextafter(1.0, 2.0), 1.0])
    hist = tensor_stats(TensorValues(x))["histogram"]
    assert hist["bins"] == 1
    assert hist["edges"] == [1.0, float(np.nextafter(1.0, 2.0))]
    assert sum(hist["counts"]) == 3


@pytest.mark.parametrize(
    "case",
    ["sparse", "duplicates", "clustered", "one", "two", "constant", "heavy_tail"],
)
def test_exact_quantiles_on_awkward_data(case: str) -> None:
    rng = np.random.default_rng(3)
    x = {
        "sparse": np.where(rng.random(50_000) < 0.9, 0.0, rng.normal(size=50_000)),
        "duplicates": rng.integers(-3, 4, size=30_000).astype(np.float64),
        "clustered": np.concatenate([rng.normal(0, 1e-9, 20_000), [1e3, -1e3, 5e2]]),
        "one": np.array([0.7]),
        "two": np.array([2.0, -1.0]),
        "constant": np.full(1000, 3.25),
        "heavy_tail": rng.standard_cauchy(40_000),
    }[case]
    quantiles = tensor_stats(TensorValues(x))["quantiles"]
    for name, q in {"p0.1": 0.001, "p1": 0.01, "p25": 0.25, "p50": 0.5, "p99": 0.99, "p99.9": 0.999}.items():
        assert quantiles[name] == pytest.approx(np.quantile(x, q), rel=1e-12, abs=1e-300), name


def test_per_channel_figures_stop_at_a_bound_and_say_so() -> None:
    rows = MAX_CHANNELS + 1
    values = TensorValues(np.arange(rows * 2, dtype=np.float32).reshape(rows, 2), out_axis=0)
    stats = tensor_stats(values)
    assert stats["per_channel"] == {
        "axis": 0,
        "channels": rows,
        "skipped": f"{rows} channels: per-channel figures are computed up to {MAX_CHANNELS}",
    }
    assert stats["numel"] == rows * 2
    assert stats["max"] == rows * 2 - 1
    assert stats["quant_readiness"]["int8_sqnr_db"]["per_channel"] is None
    within = tensor_stats(TensorValues(np.ones((MAX_CHANNELS, 2), np.float32), out_axis=0))
    assert within["per_channel"]["channels"] == MAX_CHANNELS
    assert len(within["per_channel"]["abs_max"]) == MAX_CHANNELS
