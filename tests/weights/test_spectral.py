"""Spectral metrics against weightwatcher 0.7.7's own numbers (tests/fixtures/weightwatcher/)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from service.weights.spectral import spectral_metrics

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
        ((20000, 16000), False, "too many eigenvalues"),
        ((60000, 10), False, "max_N"),
        ((7,), False, "not a 2-D"),
    ],
)
def test_skips_say_why(shape: tuple[int, ...], conv: bool, reason: str) -> None:
    weight = np.lib.stride_tricks.as_strided(np.zeros(1), shape=shape, strides=(0,) * len(shape))
    metrics = spectral_metrics(weight, conv=conv)
    assert metrics["status"] == "skipped"
    assert reason in metrics["skipped_reason"]


def test_work_budget_skips_instead_of_stalling() -> None:
    weight = np.random.default_rng(0).normal(size=(64, 32))
    assert spectral_metrics(weight, conv=False, budget=1e12)["status"] == "success"
    over = spectral_metrics(weight, conv=False, budget=1000.0)
    assert over["status"] == "skipped"
    assert "work budget" in over["skipped_reason"]


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
