"""Warm-up before a version takes traffic, and the check that decides whether its requests may share a batch.

Warm-up exists so the first real request does not pay for onnxruntime's lazy initialisation; it must
never refuse a model that inference can serve. With samples in ``config.json`` (Triton's
``model_warmup``) every sample must run, and a failure fails the load with its reason. Without them the
inputs are guessed: every dynamic dimension starts at 1, and on failure the dimensions other than the
batch axis grow through common sizes (a reflect Pad or a convolution
window needs a minimum length). A model no guess runs is served all the same, with a warning.

Stacking requests along axis 0 is only right when axis 0 really is a batch axis: a sequence-first
model whose axis 0 is time would silently mix one request's sequence into the next. So a model whose
signature allows batching is run on two different samples alone and then stacked, and batching is
switched on only when the stacked run gives each sample its own answer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from service.errors import ModelLoadError, ServiceError
from service.protocol.datatypes import NUMPY
from service.protocol.signature import TensorSpec
from service.serving.model_config import WarmupInput, WarmupSample
from service.serving.runtime import OnnxModel

log = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]

GROWTH = (16, 64, 256, 1024, 4096, 16000)
"""Sizes tried for non-batch dynamic dimensions after 1 fails (16000: a second of 16 kHz audio)."""
MAX_GUESS_ELEMENTS = 1 << 24
"""A guessed input larger than this (64 MiB of float32) is not tried: warm-up must stay cheap."""
ROW_TOLERANCE = 1e-4


@dataclass(frozen=True, slots=True)
class WarmupOutcome:
    feeds: Feeds | None
    """Inputs that ran (None when nothing ran): the batching check starts from them."""
    warning: str | None = None
    """Why the model serves without a warm-up run, for the repository index and the metadata."""


def warm_up(model: OnnxModel, samples: Sequence[WarmupSample]) -> WarmupOutcome:
    """Run the configured samples (each must run) or the best guess (blocking)."""
    if samples:
        feeds: Feeds | None = None
        for sample in samples:
            feeds = sample_feeds(sample, model.inputs, model.label)
            try:
                model.run_sync(feeds)
            except ServiceError as exc:
                raise ModelLoadError(f"{model.label}: warm-up sample '{sample.name}' failed: {exc.message}") from exc
        return WarmupOutcome(feeds)
    failures: list[str] = []
    for feeds in guesses(model.inputs):
        try:
            model.run_sync(feeds)
        except ServiceError as exc:
            failures.append(f"{_shapes(feeds)}: {exc.message}")
            continue
        if failures:
            log.info("%s warmed up with %s after %d smaller guesses failed", model.label, _shapes(feeds), len(failures))
        return WarmupOutcome(feeds)
    warning = (
        f"warm-up skipped: no guessed input ran ({len(failures)} tried; last {failures[-1] if failures else 'none'}); "
        "the model is served, and config.json 'warmup' samples make warm-up exact"
    )
    log.warning("%s: %s", model.label, warning)
    return WarmupOutcome(None, warning)


def guesses(specs: Sequence[TensorSpec]) -> Iterator[Feeds]:
    """Zero inputs for growing sizes of the dynamic dimensions, smallest first; each input's batch axis
    (see `service.protocol.signature`) stays 1."""

    def shape(spec: TensorSpec, size: int) -> list[int]:
        return [dim if dim >= 0 else 1 if axis == spec.batch_axis else size for axis, dim in enumerate(spec.shape)]

    grows = any(shape(spec, 2) != shape(spec, 1) for spec in specs)
    for size in (1, *GROWTH) if grows else (1,):
        feeds = {spec.name: _zeros(spec, shape(spec, size)) for spec in specs}
        if any(array.size > MAX_GUESS_ELEMENTS for array in feeds.values()):
            return
        yield feeds


def sample_feeds(sample: WarmupSample, specs: Sequence[TensorSpec], label: str) -> Feeds:
    """The configured sample as inputs; a sample that does not fit the signature fails the load."""
    by_name = {spec.name: spec for spec in specs}
    unknown = sorted(set(sample.inputs) - set(by_name))
    missing = sorted(set(by_name) - set(sample.inputs))
    if unknown or missing:
        raise ModelLoadError(
            f"{label}: warm-up sample '{sample.name}' names inputs {unknown or '[]'} the model does not have "
            f"and lacks {missing or '[]'}"
        )
    rng = np.random.default_rng(0)
    return {name: _sample_input(name, spec, sample.inputs[name], rng, label) for name, spec in by_name.items()}


def _sample_input(name: str, spec: TensorSpec, given: WarmupInput, rng: np.random.Generator, label: str) -> np.ndarray:
    if given.datatype != spec.datatype:
        raise ModelLoadError(
            f"{label}: warm-up input '{name}' is {given.datatype}, the model expects {spec.datatype}"
        )
    shape = tuple(given.shape)
    pairs = zip(shape, spec.shape, strict=False)
    if len(shape) != len(spec.shape) or any(want >= 0 and got != want for got, want in pairs):
        raise ModelLoadError(
            f"{label}: warm-up input '{name}' has shape {list(shape)}, the model takes {list(spec.shape)}"
        )
    dtype = NUMPY[spec.datatype]
    if isinstance(given.values, list):
        array = np.asarray(given.values, dtype=dtype)
        if array.size != math.prod(shape):
            raise ModelLoadError(f"{label}: warm-up input '{name}' has {array.size} values for shape {list(shape)}")
        return array.reshape(shape)
    if given.values == "random":
        return _random(spec, shape, rng)
    return _zeros(spec, list(shape))


def rows_are_independent(model: OnnxModel, feeds: Feeds) -> str | None:
    """None when stacking two samples along axis 0 answers each with its own rows, else why not (blocking)."""
    first, second = _random_like(feeds, 1), _random_like(feeds, 2)
    stacked = {name: np.concatenate([first[name], second[name]]) for name in feeds}
    try:
        alone = [model.run_sync(first), model.run_sync(second)]
        together = model.run_sync(stacked)
    except ServiceError as exc:
        return f"a batch of two samples fails: {exc.message}"
    for name, value in together.items():
        expected = [alone[0][name], alone[1][name]]
        if value.ndim == 0 or value.shape[0] != sum(e.shape[0] if e.ndim else 0 for e in expected):
            return f"output '{name}' does not grow with axis 0 of the inputs"
        parts = np.split(value, [expected[0].shape[0]])
        for part, want in zip(parts, expected, strict=True):
            if part.shape != want.shape or not _close(part, want):
                return f"output '{name}' of a stacked sample differs from the sample alone: axis 0 is no batch axis"
    return None


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind in "fc":
        wide_a, wide_b = a.astype(np.float64), b.astype(np.float64)
        return bool(np.allclose(wide_a, wide_b, rtol=ROW_TOLERANCE, atol=ROW_TOLERANCE, equal_nan=True))
    return bool(np.array_equal(a, b))


def _random_like(feeds: Feeds, seed: int) -> Feeds:
    rng = np.random.default_rng(seed)
    out: Feeds = {}
    for name, array in feeds.items():
        shape = (1, *array.shape[1:])
        if array.dtype.kind == "f":
            out[name] = rng.standard_normal(shape).astype(array.dtype)
        elif array.dtype.kind in "iu":
            out[name] = np.full(shape, seed - 1, dtype=array.dtype)  # 0 and 1: valid ids and indices
        else:
            out[name] = np.broadcast_to(array[:1], shape).copy()
    return out


def _zeros(spec: TensorSpec, shape: list[int]) -> np.ndarray:
    if spec.datatype == "BYTES":
        return np.full(shape, "", dtype=np.object_)
    return np.zeros(shape, dtype=spec.dtype)


def _random(spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if spec.dtype.kind == "f":
        return rng.standard_normal(shape).astype(spec.dtype)
    if spec.dtype.kind in "iu":
        return rng.integers(0, 2, size=shape).astype(spec.dtype)
    return _zeros(spec, list(shape))


def _shapes(feeds: Feeds) -> str:
    return ", ".join(f"{name} {list(array.shape)}" for name, array in feeds.items())
