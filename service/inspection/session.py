"""The inspection session: a second onnxruntime session over a model, with intermediate values promoted.

Promoting a value to a graph output stops onnxruntime fusing it away (a Conv+ReLU stays two kernels),
so this session is kept apart from the serving one, which keeps every fusion. It is built once per
model version on first use. This module is the one place that turns onnxruntime's and onnx's errors
into the service's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from service.errors import InferenceFailed, InvalidInput, InvalidRequest, ModelLoadError
from service.inspection.graph import CamHead, ImageInput, WatchedValue, cam_head, image_input, watched_values

# onnxruntime's pybind errors derive from Exception only, so they are named one by one.
_INPUT_ERRORS: tuple[type[Exception], ...] = (ort_state.InvalidArgument,)
_ORT_ERRORS: tuple[type[Exception], ...] = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.InvalidProtobuf,
    ort_state.NotImplemented,
    ort_state.RuntimeException,
    RuntimeError,
    ValueError,
)


@dataclass(frozen=True, slots=True)
class ValueShape:
    """A value's shape as far as the graph tells it; None marks a dimension only a run reveals."""

    dims: tuple[int | None, ...]
    itemsize: int
    batched: bool
    """Whether axis 0 is the (dynamic) batch axis, which scales with the request."""

    def nbytes(self, batch: int) -> int | None:
        sizes = list(self.dims)
        if self.batched and sizes:
            sizes[0] = batch
        if any(d is None for d in sizes):
            return None
        return math.prod(d for d in sizes if d is not None) * self.itemsize


class InspectionSession:
    """One model version's inspection session and the graph facts inspection needs."""

    def __init__(self, model_path: Path, *, threads: int = 1) -> None:
        try:
            model = onnx.load(str(model_path))
        except (OSError, ValueError, onnx.checker.ValidationError) as exc:
            raise ModelLoadError(f"cannot read '{model_path}' for inspection: {exc}") from exc
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except (ValueError, onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
            # Without shapes the up-front size estimate is blind; the check after the run still holds.
            inferred = model
        self.model_path = model_path
        self.watched: tuple[WatchedValue, ...] = tuple(watched_values(model))
        self.cam: CamHead | None = cam_head(model)
        self.image: ImageInput | None = image_input(model)
        self.output_names: tuple[str, ...] = tuple(o.name for o in model.graph.output)
        self._shapes = _value_shapes(inferred)
        promoted = [v.name for v in self.watched]
        if self.cam is not None:
            promoted += [self.cam.feature_map, self.cam.scores]
        self._session = _session_with_outputs(model, promoted, threads)
        self.input_names: tuple[str, ...] = tuple(i.name for i in self._session.get_inputs())
        self.available: frozenset[str] = frozenset(o.name for o in self._session.get_outputs())
        self.batch_dynamic = all(
            not isinstance(i.shape[0], int) for i in self._session.get_inputs() if i.shape
        )

    def estimate_bytes(self, names: Sequence[str], batch: int) -> int:
        """Bytes the named values will take for a batch; values of unknown shape count as zero here
        and are checked after the run (see `run`)."""
        total = 0
        for name in names:
            shape = self._shapes.get(name)
            size = shape.nbytes(batch) if shape is not None else None
            total += size or 0
        return total

    def check_budget(self, names: Sequence[str], batch: int, cap_bytes: int) -> None:
        needed = self.estimate_bytes(names, batch)
        if needed > cap_bytes:
            raise InvalidRequest(_over_cap(needed, cap_bytes))

    def run(
        self, feeds: Mapping[str, np.ndarray], names: Sequence[str], cap_bytes: int | None = None
    ) -> dict[str, np.ndarray]:
        """Run the inspection graph and return the named values (blocking; call it from a thread)."""
        unknown = [n for n in names if n not in self.available]
        if unknown:
            raise InvalidRequest(f"unknown intermediate value(s): {', '.join(map(repr, unknown))}")
        try:
            arrays = self._session.run(list(names), dict(feeds))
        except _INPUT_ERRORS as exc:
            raise InvalidInput(f"the model refused the input: {exc}") from exc
        except _ORT_ERRORS as exc:
            raise InferenceFailed(f"inspection run failed: {exc}") from exc
        values = {name: np.asarray(a) for name, a in zip(names, arrays, strict=True)}
        if cap_bytes is not None:
            needed = sum(a.nbytes for a in values.values())
            if needed > cap_bytes:
                raise InvalidRequest(_over_cap(needed, cap_bytes))
        return values


def _over_cap(needed: int, cap: int) -> str:
    return (
        f"the intermediate values of this request need {needed / 2**20:.1f} MiB, over the inspection "
        f"cap of {cap / 2**20:.1f} MiB; send fewer samples or ask for fewer values"
    )


def _session_with_outputs(model: onnx.ModelProto, names: Sequence[str], threads: int) -> ort.InferenceSession:
    promoted = onnx.ModelProto()
    promoted.CopyFrom(model)
    present = {o.name for o in promoted.graph.output}
    for name in dict.fromkeys(names):
        if name not in present:
            # An untyped ValueInfoProto is enough for onnxruntime (weights.md §4).
            promoted.graph.output.append(helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(
            promoted.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except _ORT_ERRORS as exc:
        raise ModelLoadError(f"cannot build the inspection session: {exc}") from exc


def _value_shapes(model: onnx.ModelProto) -> dict[str, ValueShape]:
    graph = model.graph
    shapes: dict[str, ValueShape] = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor = info.type.tensor_type
        if not info.type.HasField("tensor_type") or not tensor.HasField("shape"):
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
        batched = bool(dims) and dims[0] is None
        try:
            itemsize = helper.tensor_dtype_to_np_dtype(tensor.elem_type).itemsize
        except KeyError:
            continue
        shapes[info.name] = ValueShape(dims, itemsize, batched)
    return shapes
