"""Heat maps for image models: which part of the input a score depends on.

Three methods, each exact for what it claims:

- ``cam``: class activation maps, offered only where CAM equals Grad-CAM, i.e. the scored output is
  global average pooling followed by one linear layer (see `head`).
- ``grad-cam``: gradients of the chosen score through the head (any head `backprop` differentiates)
  down to the last convolutional feature map (the map feeding the last global average pool), averaged
  per channel: ReLU(Σ_k mean_ij(∂y_c/∂A_k(i,j)) · A_k).
- ``occlusion``: the score drop when a window of the input is replaced by a baseline; any model with
  an image input.

Without a method: ``cam`` where it is exact, else ``grad-cam`` where the head can be differentiated,
else ``occlusion``. A method that does not apply is a 400 that says why. The target defaults to each
sample's highest score and must be one of the scored output's classes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from service.errors import InferenceFailed, InvalidInput, InvalidRequest
from service.inspection.backprop import backpropagate
from service.inspection.head import Head
from service.inspection.heatmap import normalise, upsample_bilinear
from service.inspection.occlusion import Occlusion
from service.inspection.session import InspectionSession
from service.protocol.signature import TensorSpec

METHODS = ("cam", "grad-cam", "occlusion")
# ASCII digits only ("²".isdigit() is true, int("²") fails), and few enough for int() and for sense.
_DIGITS = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True, slots=True)
class ExplainOptions:
    method: str | None = None
    """``cam``, ``grad-cam``, ``occlusion``, or None for the exact method that applies (see above)."""
    target: int | str | None = None
    window: int | None = None
    """Occlusion window side in pixels; default a quarter of the shorter image side."""
    stride: int | None = None
    """Occlusion stride; default half the window."""
    baseline: float | None = 0.0
    """Occlusion fill value; None fills with the image's per-channel mean."""
    output: str | None = None
    """Output whose scores are explained; default the model's first output."""

    @classmethod
    def from_parameters(cls, params: Mapping[str, object]) -> ExplainOptions:
        """Options from V2 request parameters (strings, numbers, bools); anything else is a 400."""
        method = params.get("method")
        if method is not None and method not in METHODS:
            raise InvalidRequest(f"unknown explain method {method!r}; expected one of {', '.join(METHODS)}")
        target = params.get("target")
        if target is not None and (isinstance(target, bool) or not isinstance(target, int | str)):
            raise InvalidRequest("parameter 'target' must be a class index or label")
        baseline = params.get("baseline", 0.0)
        output = params.get("output")
        if output is not None and not isinstance(output, str):
            raise InvalidRequest("parameter 'output' must be the name of one of the model's outputs")
        return cls(
            method=None if method is None else str(method),
            target=target,
            window=_positive_int(params, "window"),
            stride=_positive_int(params, "stride"),
            baseline=None if baseline == "mean" else _finite_number(baseline, "baseline"),
            output=output,
        )


@dataclass(frozen=True, slots=True)
class Explanation:
    method: str
    heatmaps: np.ndarray
    """[N, H, W] in [0, 1] at input resolution."""
    scores: np.ndarray
    """[N, S] scores of the explained output."""
    targets: np.ndarray
    predicted: np.ndarray
    scores_name: str
    feature_map: str | None = None
    feature_map_shape: tuple[int, ...] | None = None
    coarse: np.ndarray | None = None
    """[N, h, w] in [0, 1] at the feature map's resolution (cam and grad-cam)."""
    head: tuple[str, ...] = ()
    """Op types from the feature map to the scored output (cam and grad-cam)."""


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
        raise InvalidRequest(
            "heat maps need an image input (rank 4, [N, C, H, W]) and this model has none; "
            "/activations works for any model"
        )
    output = options.output or session.output_names[0]
    if output not in session.output_names:
        raise InvalidRequest(
            f"unknown output '{output}'; the model's outputs are {', '.join(session.output_names)}"
        )
    images = np.asarray(feeds[image.name])
    head = session.head(output)
    method = _method(options.method, head)
    if method == "occlusion":
        return _occlusion(session, feeds, images, output, options, labels, max_windows)
    return _gradient_map(session, feeds, images, head, method, options, labels, cap_bytes)


def _method(requested: str | None, head: Head) -> str:
    if requested is None:
        if head.differentiable:
            return "cam" if head.exact_cam else "grad-cam"
        return "occlusion"
    if requested == "occlusion":
        return requested
    if not head.differentiable:
        raise InvalidRequest(f"method '{requested}' does not apply: {head.problem}; use method 'occlusion'")
    if requested == "cam" and not head.exact_cam:
        raise InvalidRequest(
            "method 'cam' is exact only for global average pooling followed by one linear layer that "
            f"produces the scores, and the head in front of output '{head.output}' is "
            f"{' -> '.join(head.ops)}; use method 'grad-cam' (gradients through this head) or 'occlusion'"
        )
    return requested


def _gradient_map(
    session: InspectionSession,
    feeds: Mapping[str, np.ndarray],
    images: np.ndarray,
    head: Head,
    method: str,
    options: ExplainOptions,
    labels: Sequence[str] | None,
    cap_bytes: int | None,
) -> Explanation:
    assert head.feature_map is not None
    if cap_bytes is not None:
        session.check_budget(head.reads, feeds, cap_bytes)
    values = session.run(feeds, head.reads, cap_bytes)
    maps = values[head.feature_map]
    if maps.ndim != 4 or maps.shape[0] != images.shape[0]:
        raise InvalidRequest(
            f"the pooled feature map '{head.feature_map}' has shape {list(maps.shape)}, not "
            f"[{images.shape[0]}, K, h, w]; use method 'occlusion'"
        )
    scores = _scores(values[head.output], images.shape[0], head.output)
    targets, predicted = _targets(scores, options.target, labels)
    seed = np.zeros(scores.shape)
    seed[np.arange(len(targets)), targets] = 1.0
    try:
        gradient = backpropagate(
            head.nodes,
            {**head.constants, **values},
            wrt=head.feature_map,
            output=head.output,
            seed=seed.reshape(values[head.output].shape),
            opset=session.opset,
        )
    except (ValueError, IndexError, TypeError) as exc:  # a head the static checks let through by mistake
        raise InferenceFailed(
            f"gradients through the head of output '{head.output}' failed: {exc}; method 'occlusion' "
            "works for any image model"
        ) from exc
    coarse = grad_cam(maps, gradient)
    return Explanation(
        method,
        normalise(upsample_bilinear(coarse, *images.shape[-2:])),
        scores,
        targets,
        predicted,
        head.output,
        head.feature_map,
        tuple(maps.shape),
        normalise(coarse),
        tuple(head.ops),
    )


def grad_cam(feature_map: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """ReLU(Σ_k α_k A_k) with α_k the mean over positions of ∂y/∂A_k: [N, K, h, w] twice -> [N, h, w].
    For a global-average-pool + linear head α_k = W[c, k] / (h·w), which makes this CAM / (h·w)."""
    alpha = gradient.astype(np.float64).mean(axis=(2, 3))
    cam: np.ndarray = np.einsum("nk,nkhw->nhw", alpha, feature_map.astype(np.float64))
    relu: np.ndarray = np.maximum(cam, 0.0)
    return relu


def _scores(value: np.ndarray, samples: int, name: str) -> np.ndarray:
    if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
        raise InvalidRequest(f"output '{name}' holds {value.dtype} values, not scores")
    if value.ndim == 0 or value.shape[0] != samples:
        raise InvalidRequest(f"output '{name}' has shape {list(value.shape)}, which has no row per image")
    scores = value.reshape(samples, -1).astype(np.float64)
    if not np.isfinite(scores).all():
        # A heat map says which pixels move a score; a score that is already NaN or infinite moves no more.
        raise InvalidInput(
            f"output '{name}' is not finite (NaN or infinity) for this input, so there is nothing to explain; "
            "the values may be outside what the model was trained on"
        )
    return scores


def _occlusion(
    session: InspectionSession,
    feeds: Mapping[str, np.ndarray],
    images: np.ndarray,
    output: str,
    options: ExplainOptions,
    labels: Sequence[str] | None,
    max_windows: int,
) -> Explanation:
    assert session.image is not None
    image = session.image
    scores = _scores(session.run(feeds, [output])[output], images.shape[0], output)
    targets, predicted = _targets(scores, options.target, labels)
    window = options.window if options.window is not None else max(1, min(images.shape[-2:]) // 4)
    occlusion = Occlusion(
        window=window,
        stride=options.stride if options.stride is not None else max(1, window // 2),
        baseline=options.baseline,
        max_positions=max_windows,
        chunk=64 if image.batched else 1,
    )
    windows = len(occlusion.positions(*images.shape[-2:])) * images.shape[0]
    if windows > max_windows:
        raise InvalidRequest(
            f"occlusion needs {windows} occluded copies for this request, over the cap of {max_windows}; "
            "send fewer images or use a larger stride or window"
        )
    specs = {spec.name: spec for spec in session.inputs}
    maps = np.empty(images.shape[0:1] + images.shape[-2:])
    for n in range(images.shape[0]):
        others = {
            k: _row(v, specs.get(k), n) if image.batched else v for k, v in feeds.items() if k != image.name
        }

        def score_fn(batch: np.ndarray, others: dict[str, np.ndarray] = others) -> np.ndarray:
            rows = {k: _repeat(v, specs.get(k), batch.shape[0]) for k, v in others.items()}
            out = session.run({**rows, image.name: batch.astype(images.dtype)}, [output])[output]
            return out.reshape(batch.shape[0], -1)

        maps[n] = occlusion.heatmaps(images[n : n + 1], targets[n : n + 1], scores[n : n + 1], score_fn)[0]
    return Explanation("occlusion", maps, scores, targets, predicted, output)


def _row(array: np.ndarray, spec: TensorSpec | None, n: int) -> np.ndarray:
    """Sample n of an input, kept as a batch of one along its batch axis; inputs without one as they are."""
    axis = None if spec is None else spec.batch_axis
    if axis is None or axis >= array.ndim:
        return array
    return np.take(array, [n], axis=axis)


def _repeat(array: np.ndarray, spec: TensorSpec | None, copies: int) -> np.ndarray:
    axis = None if spec is None else spec.batch_axis
    if axis is None or axis >= array.ndim:
        return array
    return np.repeat(array, copies, axis=axis)


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
        text = target.strip()
        if not _DIGITS.fullmatch(text.removeprefix("-")):
            raise InvalidRequest(f"unknown class '{target}'")
        target = int(text)
    if not 0 <= target < classes:
        raise InvalidRequest(f"unknown class {target}: the scored output has {classes} classes (0..{classes - 1})")
    return target


def _positive_int(params: Mapping[str, object], key: str) -> int | None:
    value = params.get(key)
    if value is None:
        return None
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        number = int(value.strip())
    if number is None or number < 1:
        raise InvalidRequest(f"parameter '{key}' must be a positive integer, got {value!r}")
    return number


def _finite_number(value: object, key: str) -> float:
    number: float | None = None
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if numeric or (isinstance(value, str) and value.strip().isascii()):
        try:
            number = float(value)  # type: ignore[arg-type]
        except (ValueError, OverflowError):
            number = None
    if number is None or not math.isfinite(number):
        raise InvalidRequest(f"parameter '{key}' must be a finite number or 'mean', got {value!r}")
    return number
