"""Occlusion sensitivity: how much a score drops when a window of the input is replaced by a baseline.

A pixel's value is the mean score drop over the windows that cover it. Windows start every `stride`
pixels and one more window is added flush with the bottom / right edge when the stride does not land
there, so every pixel is covered. Occluded copies run through the model in chunks along the batch axis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.errors import InvalidRequest
from service.inspection.heatmap import normalise

ScoreFn = Callable[[np.ndarray], np.ndarray]
"""Runs a batch of [B, C, H, W] images and returns their scores as [B, S]."""


@dataclass(frozen=True, slots=True)
class Occlusion:
    window: int
    stride: int
    baseline: float | None
    """Fill value; None fills with each image's per-channel mean."""
    max_positions: int = 4096
    chunk: int = 64

    def positions(self, height: int, width: int) -> list[tuple[int, int]]:
        if not 1 <= self.window <= min(height, width):
            raise InvalidRequest(
                f"occlusion window must be between 1 and {min(height, width)}, got {self.window}"
            )
        if self.stride < 1:
            raise InvalidRequest(f"occlusion stride must be at least 1, got {self.stride}")
        tops = _starts(height, self.window, self.stride)
        lefts = _starts(width, self.window, self.stride)
        if len(tops) * len(lefts) > self.max_positions:
            raise InvalidRequest(
                f"occlusion grid of {len(tops) * len(lefts)} windows per image is over the cap of "
                f"{self.max_positions}; use a larger stride or window"
            )
        return [(top, left) for top in tops for left in lefts]

    def heatmaps(
        self, images: np.ndarray, targets: np.ndarray, scores: np.ndarray, score_fn: ScoreFn
    ) -> np.ndarray:
        """[N, H, W] maps in [0, 1] for [N, C, H, W] images, given their unoccluded [N, S] scores."""
        height, width = images.shape[-2:]
        places = self.positions(height, width)
        maps = np.empty((images.shape[0], height, width))
        for n, image in enumerate(images):
            drops = scores[n, targets[n]] - self._occluded_scores(image, places, score_fn)[:, targets[n]]
            maps[n] = _spread(drops, places, self.window, height, width)
        return normalise(np.maximum(maps, 0.0))

    def _occluded_scores(
        self, image: np.ndarray, places: list[tuple[int, int]], score_fn: ScoreFn
    ) -> np.ndarray:
        fill = image.mean(axis=(1, 2), keepdims=True) if self.baseline is None else self.baseline
        results = []
        for start in range(0, len(places), self.chunk):
            chunk = places[start : start + self.chunk]
            batch = np.repeat(image[None], len(chunk), axis=0)
            for i, (top, left) in enumerate(chunk):
                batch[i, :, top : top + self.window, left : left + self.window] = fill
            results.append(np.asarray(score_fn(batch), dtype=np.float64).reshape(len(chunk), -1))
        return np.concatenate(results)


def _starts(size: int, window: int, stride: int) -> list[int]:
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def _spread(
    drops: np.ndarray, places: list[tuple[int, int]], window: int, height: int, width: int
) -> np.ndarray:
    total = np.zeros((height, width))
    covered = np.zeros((height, width))
    for drop, (top, left) in zip(drops, places, strict=True):
        total[top : top + window, left : left + window] += drop
        covered[top : top + window, left : left + window] += 1.0
    return total / np.maximum(covered, 1.0)
