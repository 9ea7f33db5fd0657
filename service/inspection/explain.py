"""Heat maps for image models: which part of the input a score depends on.

`method="cam"` needs a global-average-pool + linear head (found in the graph); `method="occlusion"`
works for any model with an NCHW image input; without a method, CAM where the graph allows it, else
occlusion. The target defaults to each sample's highest score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from service.errors import InvalidRequest
from service.inspection.cam import cam_heatmaps
from service.inspection.occlusion import Occlusion
from service.inspection.session import InspectionSession

METHODS = ("cam", "occlusion")


@dataclass(frozen=True, slots=True)
class ExplainOptions:
    method: str | None = None
    """``cam``, ``occlusion``, or None for CAM where the graph has the head, else occlusion."""
    target: int | str | None = None
    window: int | None = None
    """Occlusion window side in pixels; default a quarter of the shorter image side."""
    stride: int | None = None
    """Occlusion stride; default half the window."""
    baseline: float | None = 0.0
    """Occlusion fill value; None fills with the image's per-channel mean."""
    output: str | None = None
    """Output whose scores occlusion watches; default the model's first output."""

    @classmethod
    def from_parameters(cls, params: Mapping[str, object]) -> ExplainOptions:
        """Options from V2 request parameters (strings, numbers, bools only)."""
        method = None if params.get("method") is None else str(params["method"])
        if method is not None and method not in METHODS:
            raise InvalidRequest(f"unknown explain method '{method}'; expected one of {', '.join(METHODS)}")
        target = params.get("target")
        if (target is not None and not isinstance(target, int | str)) or isinstance(target, bool):
            raise InvalidRequest("parameter 'target' must be a class index or label")
        baseline = params.get("baseline", 0.0)
        output = params.get("output")
        return cls(
            method=method,
            target=target,
            window=_optional_int(params, "window"),
            stride=_optional_int(params, "stride"),
            baseline=None if baseline == "mean" else _number(baseline, "baseline"),
            output=None if output is None else str(output),
        )


@dataclass(frozen=True, slots=True)
class Explanation:
    method: str
    heatmaps: np.ndarray
    """[N, H, W] in [0, 1] at input resolution."""
    scores: np.ndarray
    """[N, S] scores of the watched output."""
    targets: np.ndarray
    predicted: np.ndarray
    scores_name: str
    feature_map: str | None = None
    feature_map_shape: tuple[int, ...] | None = None


def explain(
    session: InspectionSession,
    feeds: Mapping[str, np.ndarray],
    options: ExplainOptions,
    labels: Sequence[str] | None = None,
    cap_bytes: int | None = None,
    max_windows: int = 16384,
) -> Explanation:
    """Compute heat maps for every sample in `feeds` (blocking; run it in a thread)."""
    image = session.image
    if image is None:
        raise InvalidRequest("heat maps need an image input (rank 4, [N, C, H, W]) and this model has none")
    images = np.asarray(feeds[image.name])
    if options.method == "cam" or (options.method is None and session.cam is not None):
        return _cam(session, feeds, images, options, labels, cap_bytes)
    return _occlusion(session, feeds, images, options, labels, max_windows)


def _cam(
    session: InspectionSession,
    feeds: Mapping[str, np.ndarray],
    images: np.ndarray,
    options: ExplainOptions,
    labels: Sequence[str] | None,
    cap_bytes: int | None,
) -> Explanation:
    head = session.cam
    if head is None:
        raise InvalidRequest(
            "method 'cam' needs a global-average-pool + linear head and this model's graph has none; "
            "use method 'occlusion'"
        )
    names = [head.feature_map, head.scores]
    if cap_bytes is not None:
        session.check_budget(names, images.shape[0], cap_bytes)
    values = session.run(feeds, names, cap_bytes)
    scores = values[head.scores].reshape(images.shape[0], -1).astype(np.float64)
    targets, predicted = _targets(scores, options.target, labels)
    maps = cam_heatmaps(values[head.feature_map], head.weight, targets, *images.shape[-2:])
    return Explanation(
        "cam", maps, scores, targets, predicted, head.scores, head.feature_map, values[head.feature_map].shape
    )


def _occlusion(
    session: InspectionSession,
    feeds: Mapping[str, np.ndarray],
    images: np.ndarray,
    options: ExplainOptions,
    labels: Sequence[str] | None,
    max_windows: int,
) -> Explanation:
    output = options.output or session.output_names[0]
    if output not in session.output_names:
        raise InvalidRequest(
            f"unknown output '{output}'; the model's outputs are {', '.join(session.output_names)}"
        )
    assert session.image is not None
    image_name = session.image.name
    scores = session.run(feeds, [output])[output].reshape(images.shape[0], -1).astype(np.float64)
    targets, predicted = _targets(scores, options.target, labels)
    window = options.window if options.window is not None else max(1, min(images.shape[-2:]) // 4)
    occlusion = Occlusion(
        window=window,
        stride=options.stride if options.stride is not None else max(1, window // 2),
        baseline=options.baseline,
        max_positions=max_windows,
        chunk=64 if session.batch_dynamic else 1,
    )
    windows = len(occlusion.positions(*images.shape[-2:])) * images.shape[0]
    if windows > max_windows:
        raise InvalidRequest(
            f"occlusion needs {windows} occluded copies for this request, over the cap of {max_windows}; "
            "send fewer images or use a larger stride or window"
        )
    maps = np.empty(images.shape[0:1] + images.shape[-2:])
    for n in range(images.shape[0]):
        others = {k: v[n : n + 1] for k, v in feeds.items() if k != image_name}

        def score_fn(batch: np.ndarray, others: dict[str, np.ndarray] = others) -> np.ndarray:
            rows = {k: np.repeat(v, batch.shape[0], axis=0) for k, v in others.items()}
            out = session.run({**rows, image_name: batch.astype(images.dtype)}, [output])[output]
            return out.reshape(batch.shape[0], -1)

        maps[n] = occlusion.heatmaps(images[n : n + 1], targets[n : n + 1], scores[n : n + 1], score_fn)[0]
    return Explanation("occlusion", maps, scores, targets, predicted, output)


def _targets(
    scores: np.ndarray, target: int | str | None, labels: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    predicted = scores.argmax(axis=1)
    if target is None:
        return predicted, predicted
    index = _class_index(target, labels, scores.shape[1])
    return np.full(scores.shape[0], index, dtype=np.int64), predicted


def _class_index(target: int | str, labels: Sequence[str] | None, classes: int) -> int:
    if isinstance(target, str):
        if labels is not None and target in labels:
            return list(labels).index(target)
        if not target.lstrip("-").isdigit():
            raise InvalidRequest(f"unknown class '{target}'")
        target = int(target)
    if not 0 <= target < classes:
        raise InvalidRequest(f"unknown class {target}: the model scores {classes} classes (0..{classes - 1})")
    return target


def _optional_int(params: Mapping[str, object], key: str) -> int | None:
    value = params.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | str)
        or not str(value).isdigit()
        or not int(value)
    ):
        raise InvalidRequest(f"parameter '{key}' must be a positive integer")
    return int(value)


def _number(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequest(f"parameter '{key}' must be a number or 'mean'")
    try:
        return float(value)
    except ValueError:
        raise InvalidRequest(f"parameter '{key}' must be a number or 'mean'") from None
