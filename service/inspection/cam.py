"""Class activation maps for networks ending in global average pool + linear head.

With A_k the maps feeding the pool (Z = h·w positions) and W[c, k] the head, Grad-CAM's channel
weight is α_k = w_ck / Z, so Grad-CAM = ReLU(Σ_k w_ck A_k) / Z: CAM divided by a constant. After
normalisation the two are the same map, computed here without any gradient.
"""

from __future__ import annotations

import numpy as np

from service.inspection.heatmap import normalise, upsample_bilinear


def class_activation_maps(feature_map: np.ndarray, weight: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """ReLU(Σ_k W[target, k] · A_k) for each sample: [N, K, h, w] maps, [C, K] head -> [N, h, w]."""
    chosen = weight[targets].astype(np.float64)
    cam: np.ndarray = np.einsum("nk,nkhw->nhw", chosen, feature_map.astype(np.float64))
    relu: np.ndarray = np.maximum(cam, 0.0)
    return relu


def cam_heatmaps(
    feature_map: np.ndarray, weight: np.ndarray, targets: np.ndarray, height: int, width: int
) -> np.ndarray:
    """CAM upsampled (bilinear) to the input's height and width, then scaled to [0, 1] by its maximum."""
    maps = class_activation_maps(feature_map, weight, targets)
    return normalise(upsample_bilinear(maps, height, width))
