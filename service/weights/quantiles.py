"""Exact quantiles of a tensor streamed in blocks, without a sorted (or partitioned) copy of it.

A fine histogram, counted during the statistics' second pass, tells which fine bins hold the order
statistics the quantiles need; one more pass gathers only the values of those bins, and a small
partition of them gives the exact order statistics. Interpolation is numpy's default ('linear').
The binning only locates values: any monotone bin function works, so it needs none of numpy's
edge corrections.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

QUANTILES: tuple[tuple[str, float], ...] = (
    ("p0.1", 0.001),
    ("p1", 0.01),
    ("p5", 0.05),
    ("p25", 0.25),
    ("p50", 0.5),
    ("p75", 0.75),
    ("p95", 0.95),
    ("p99", 0.99),
    ("p99.9", 0.999),
)
FINE_BINS = 4096


class QuantileLocator:
    """Counts finite values into fine bins over [low, high], then finds the exact order statistics."""

    def __init__(self, low: float, high: float) -> None:
        self.low = low
        span = high - low
        self.scale = FINE_BINS / span if np.isfinite(span) and span > 0 else 0.0
        self.counts = np.zeros(FINE_BINS, dtype=np.int64)

    def bins(self, x: np.ndarray) -> np.ndarray:
        """A monotone bin index per value (the same function counts and gathers)."""
        index = ((x - self.low) * self.scale).astype(np.intp)
        return np.clip(index, 0, FINE_BINS - 1, out=index)

    def add(self, finite_values: np.ndarray) -> None:
        self.counts += np.bincount(self.bins(finite_values), minlength=FINE_BINS)

    def quantiles(self, blocks: Iterable[np.ndarray]) -> dict[str, float | None]:
        """``blocks`` yields the finite values again, in any order."""
        n = int(self.counts.sum())
        if n == 0:
            return {name: None for name, _ in QUANTILES}
        qs = np.array([q for _, q in QUANTILES])
        virtual = n * qs + (1 - qs) - 1  # numpy's virtual index for the 'linear' method
        below = np.clip(np.floor(virtual).astype(np.int64), 0, n - 1)
        above = np.clip(below + 1, 0, n - 1)
        ranks = np.unique(np.concatenate([below, above]))
        ends = np.cumsum(self.counts)
        wanted = np.zeros(FINE_BINS, dtype=bool)
        wanted[np.searchsorted(ends, ranks, side="right")] = True
        gathered = np.concatenate([x[wanted[self.bins(x)]] for x in blocks] or [np.empty(0)])
        # Gathered values keep bin order after a partition; a rank's position among them is its
        # rank minus the values in the bins skipped before its bin.
        starts = ends - self.counts
        skipped = starts - np.cumsum(np.where(wanted, self.counts, 0)) + np.where(wanted, self.counts, 0)
        positions = ranks - skipped[np.searchsorted(ends, ranks, side="right")]
        gathered.partition(positions)
        order = dict(zip(ranks.tolist(), gathered[positions].tolist(), strict=True))
        a = np.array([order[int(r)] for r in below])
        b = np.array([order[int(r)] for r in above])
        gamma = virtual - np.floor(virtual)
        diff = b - a
        lerp = np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
        return {name: float(v) if np.isfinite(v) else None for (name, _), v in zip(QUANTILES, lerp, strict=True)}
