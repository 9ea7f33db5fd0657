"""Spectral metrics against weightwatcher 0.7.7's own numbers (tests/fixtures/weightwatcher/)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from service.weights.spectral import SpectralLimits, spectral_metrics
from service.weights.values import TensorValues

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "weightwatcher"
# Columns that are bookkeeping in weightwatcher's frame, not metrics of the matrix.
NOT_METRICS = {"layer_id", "name", "longname", "has_esd", "layer_type"}


def _rows(net: str) -> list[dict[str, str]]:
    with (FIXTURES / f"ww_{net}_default.csv").open() as handle:
        return list(csv.DictReader(handle))


CASES = [(net, row) for net in ("mlp", "cnn") for row in _rows(net)]


@pytest.mark.parametrize(("net", "row"), CASES, ids=[f"{n}-{r['name']}" for n, r in CASES])
def test_every_shared_column_equals_weightwatcher(net: str, row: dict[str, str]) -> None:
    weight = np.load(FIXTURES / f"weights_{net}.npz")[f"{row['name']}.weight"]
    metrics = spectral_metrics(weight, conv=weight.ndim == 4)
    shared = [c for c in row if c not in NOT_METRICS and c in metrics]
    assert len(shared) >= 25, shared
    for column in shared:
        want, got = row[column], metrics[column]
        if column in ("status", "warning"):
            assert str(got) == want, column
            continue
        reference = float(want)
        assert abs(float(got) - reference) <= 1e-6 * abs(reference), (column, got, reference)
    assert metrics["layer_type"] == row["layer_type"]


def test_small_n_branch_is_used_below_twenty_eigenvalues() -> None:
    weight = np.load(FIXTURES / "weights_mlp.npz")["4.weight"]
    metrics = spectral_metrics(weight, conv=False)
    assert metrics["num_evals"] == 10
    assert metrics["pl_fit"] == "small_n"
    assert metrics["alpha"] == pytest.approx(3.118464, abs=1e-6)


def test_conv_reports_raw_norms_without_the_half_scaling() -> None:
    weight = np.load(FIXTURES / "weights_cnn.npz")["0.weight"]
    metrics = spectral_metrics(weight, conv=True)
    assert metrics["ww_compat"] == {"version": "0.7.7", "conv2d_norm": True}
    raw_norm = float(np.sum(weight.astype(np.float64) ** 2))
    assert metrics["raw"]["norm"] == pytest.approx(raw_norm, rel=1e-12)
    assert metrics["norm"] == pytest.approx(raw_norm / 2, rel=1e-12)


@pytest.mark.parametrize(
    ("shape", "conv", "reason"),
    [
        ((3, 2), False, "too few eigenvalues"),
        ((20000, 16000), False, "SPECTRAL_MAX_M"),
        ((70000, 10), False, "SPECTRAL_MAX_N"),
        ((200, 200, 9, 9), True, "too many eigenvalues"),
        ((7,), False, "not a 2-D"),
    ],
)
def test_skips_say_why(shape: tuple[int, ...], conv: bool, reason: str) -> None:
    weight = np.lib.stride_tricks.as_strided(np.zeros(1), shape=shape, strides=(0,) * len(shape))
    metrics = spectral_metrics(weight, conv=conv)
    assert metrics["status"] == "skipped"
    assert reason in metrics["skipped_reason"]


def test_size_limits_are_settings() -> None:
    weight = np.random.default_rng(0).normal(size=(64, 32))
    assert spectral_metrics(weight, conv=False)["status"] == "success"
    narrow = spectral_metrics(weight, conv=False, limits=SpectralLimits(max_m=16))
    assert (narrow["status"], narrow["M"]) == ("skipped", 32)
    short = spectral_metrics(weight, conv=False, limits=SpectralLimits(max_n=60))
    assert "N = 64 > 60" in short["skipped_reason"]


def test_non_finite_weight_is_skipped() -> None:
    weight = np.random.default_rng(0).normal(size=(16, 16))
    weight[3, 4] = np.nan
    metrics = spectral_metrics(weight, conv=False)
    assert metrics["status"] == "skipped"
    assert "NaN" in metrics["skipped_reason"]


def test_transpose_invariance() -> None:
    weight = np.random.default_rng(1).normal(size=(40, 24))
    a, b = spectral_metrics(weight, conv=False), spectral_metrics(weight.T, conv=False)
    for key in ("alpha", "D", "log_norm", "stable_rank", "entropy", "matrix_rank", "num_pl_spikes"):
        assert a[key] == pytest.approx(b[key], rel=1e-9), key


def test_zero_and_overflowing_weights_are_skipped() -> None:
    assert spectral_metrics(np.zeros((16, 16)), conv=False)["status"] == "skipped"
    huge = np.full((16, 16), 1e300)
    assert spectral_metrics(huge, conv=False)["status"] == "skipped"


# ------------------------------------------------------------------ the Gram route is exact


def _svd_reference(weight: np.ndarray) -> dict[str, object]:
    """The metrics from numpy's SVD of the whole float64 matrix: the route the Gram route replaces."""
    from service.weights.spectral import norm_metrics, powerlaw_fit

    w = np.asarray(weight, dtype=np.float64)
    sv = np.linalg.svd(w, compute_uv=False)
    evals = np.sort(sv * sv)
    return norm_metrics(evals, [sv], max(w.shape), False) | powerlaw_fit(evals)


@pytest.mark.parametrize("shape", [(300, 120), (120, 300), (257, 64)])
def test_gram_route_equals_the_svd_route(shape: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    import service.weights.spectral as spectral

    monkeypatch.setattr(spectral, "GRAM_BLOCK", 5000)  # many blocks, rows or columns
    weight = np.random.default_rng(sum(shape)).standard_t(5, size=shape).astype(np.float32)
    got = spectral_metrics(weight, conv=False)
    want = _svd_reference(weight)
    assert got["eigensolver"] == "gram"
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        elif not isinstance(value, dict):
            assert got[key] == value, key


def test_quantized_weights_are_dequantized_block_by_block(monkeypatch: pytest.MonkeyPatch) -> None:
    import service.weights.spectral as spectral

    monkeypatch.setattr(spectral, "GRAM_BLOCK", 700)
    rng = np.random.default_rng(3)
    q = rng.integers(-120, 120, size=(90, 40), dtype=np.int8)
    for axis, scale in [(0, rng.uniform(0.01, 0.1, 90)), (1, rng.uniform(0.01, 0.1, 40)), (None, np.array(0.05))]:
        zero = rng.integers(-3, 3, size=scale.shape).astype(np.int8)
        values = TensorValues(q, 0, scale.astype(np.float32), zero, axis)
        dense = values.to_float64()
        eig = spectral.eigenvalues(values, conv=False)
        want = np.sort(np.linalg.svd(dense, compute_uv=False) ** 2)
        np.testing.assert_allclose(eig.evals, want, rtol=1e-9, atol=1e-12 * want.max())


def test_a_rank_deficient_matrix_is_decomposed_by_svd() -> None:
    rng = np.random.default_rng(4)
    weight = rng.normal(size=(40, 5)) @ rng.normal(size=(5, 30))  # rank 5
    metrics = spectral_metrics(weight, conv=False)
    assert metrics["eigensolver"] == "svd"
    assert metrics["matrix_rank"] == np.linalg.matrix_rank(weight) == 5
    assert metrics["rank_loss"] == 25
    assert metrics["weak_rank_loss"] == 25


def test_conv_slices_pool_gram_eigenvalues() -> None:
    import service.weights.spectral as spectral

    weight = np.random.default_rng(5).normal(size=(12, 20, 3, 3)).astype(np.float32)
    eig = spectral.eigenvalues(TensorValues(weight), conv=True)
    want = np.sort(np.concatenate([
        np.linalg.svd(weight[:, :, i, j].astype(np.float64) * np.sqrt(0.5), compute_uv=False) ** 2
        for i in range(3) for j in range(3)
    ]))
    assert eig.routes == ("gram",) * 9
    np.testing.assert_allclose(eig.evals, want, rtol=1e-10)


def test_no_float64_copy_of_the_whole_weight(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import tracemalloc

    import service.weights.spectral as spectral

    monkeypatch.setattr(spectral, "GRAM_BLOCK", 1 << 14)
    rows, cols = 3000, 200
    path = tmp_path / "w.bin"
    np.random.default_rng(6).normal(size=(rows, cols)).astype(np.float32).tofile(path)
    stored = np.memmap(path, dtype=np.float32, mode="r", shape=(rows, cols))
    tracemalloc.start()
    try:
        spectral.eigenvalues(TensorValues(stored), conv=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    gram_bytes, weight_f64_bytes = cols * cols * 8, rows * cols * 8
    assert peak < weight_f64_bytes / 2
    assert peak < 2 * gram_bytes + 8 * (1 << 14) * 2


def test_eigenvalue_listing_is_bounded() -> None:
    from service.weights.spectral import eigenvalue_listing

    evals = np.sort(np.random.default_rng(7).lognormal(size=500))
    evals[:3] = 0.0
    full = eigenvalue_listing(evals, 1000)
    assert (full["count"], full["truncated"], full["nonpositive"]) == (500, False, 3)
    assert full["values"] == evals.tolist()
    assert full["sum"] == pytest.approx(evals.sum())
    assert sum(full["log10_histogram"]["counts"]) == 497
    short = eigenvalue_listing(evals, 100)
    assert short["truncated"]
    assert short["values"] == evals[-100:].tolist()  # the largest: where the power-law tail is
    assert short["log10_histogram"] == full["log10_histogram"]


def test_no_layer_up_to_8192_by_8192_is_skipped_by_default() -> None:
    from service.weights.spectral import matrix_shape, skip_reason

    limits = SpectralLimits()
    for shape in [(8192, 8192), (4096, 3072), (50257, 768), (65536, 8)]:
        found = matrix_shape(shape, False)
        assert found is not None
        assert skip_reason(found, limits) is None, shape
    conv = matrix_shape((512, 512, 3, 3), True)
    assert conv is not None
    assert skip_reason(conv, limits) is None
    wider = matrix_shape((8193, 8193), False)
    assert wider is not None
    assert "WEIGHTSERVE_WEIGHTS_SPECTRAL_MAX_M" in (skip_reason(wider, limits) or "")
    assert skip_reason(wider, SpectralLimits(max_m=9000)) is None  # the setting for beyond
