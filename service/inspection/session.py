"""The inspection session: a second onnxruntime session over a model, with intermediate values promoted.

Promoting a value to a graph output stops onnxruntime fusing it away (a Conv+ReLU stays two kernels),
so this session is kept apart from the serving one, which keeps every fusion. It is built once per
model version on first use. Its errors go through the runtime's one onnxruntime boundary
(`service.serving.runtime.map_run_errors` / `map_load_errors`), so a caller mistake is a 400 here as
in `/infer`.
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

from service.errors import InvalidRequest, ModelLoadError
from service.inspection.graph import (
    FLOAT_TYPES,
    ImageInput,
    UnreachableValue,
    WatchedValue,
    constants,
    element_types,
    image_input,
    unreachable_values,
    watched_values,
)
from service.inspection.head import Head, find_head
from service.protocol.signature import TensorSpec, name_batch_axes
from service.serving.runtime import map_load_errors, map_run_errors, tensor_spec

Dim = int | str | None
"""A dimension as the graph gives it: a size, a symbolic name, or nothing."""


@dataclass(frozen=True, slots=True)
class ValueShape:
    """A value's shape as far as the (shape-inferred) graph tells it."""

    dims: tuple[Dim, ...]
    itemsize: int

    def nbytes(self, sizes: Mapping[str, int]) -> int | None:
        """Bytes for a run whose symbolic dimensions have the given sizes; None if one is unknown."""
        resolved = [d if isinstance(d, int) else sizes.get(d) if isinstance(d, str) else None for d in self.dims]
        if any(d is None for d in resolved):
            return None
        return math.prod(d for d in resolved if d is not None) * self.itemsize


class InspectionSession:
    """One model version's inspection session and the graph facts inspection needs."""

    def __init__(self, model_path: Path, *, threads: int = 1, label: str | None = None) -> None:
        self.label = label or str(model_path)
        try:
            # Without external data: weights kept beside the model stay on disk, and a model over
            # protobuf's 2 GB (which always keeps them there) is read as a small graph.
            model = onnx.load(str(model_path), load_external_data=False)
        except (OSError, ValueError, onnx.checker.ValidationError) as exc:
            raise ModelLoadError(f"cannot read {self.label} for inspection: {exc}") from exc
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except (ValueError, onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
            # Without shapes the up-front size estimate is blind; the check after the run still holds.
            inferred = model
        self.model_path = model_path
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.watched: tuple[WatchedValue, ...] = tuple(watched_values(model))
        self.unreachable: tuple[UnreachableValue, ...] = tuple(unreachable_values(model))
        self.image: ImageInput | None = image_input(model)
        self.output_names: tuple[str, ...] = tuple(o.name for o in model.graph.output)
        self.heads: dict[str, Head] = _heads(inferred, model_path.parent)
        self._shapes = _value_shapes(inferred)
        del inferred
        graph_inputs = {i.name for i in model.graph.input}
        promoted = [v.name for v in self.watched]
        for head in self.heads.values():
            if head.differentiable:
                promoted += [name for name in head.reads if name not in graph_inputs]
        self._session = _session_with_outputs(model, model_path.parent, promoted, threads, self.label)
        # The serving session accepted these inputs, so each has a V2 datatype.
        self.inputs: tuple[TensorSpec, ...] = name_batch_axes(
            tuple(tensor_spec(arg) for arg in self._session.get_inputs()), ()
        )[0]
        self.input_names: tuple[str, ...] = tuple(i.name for i in self._session.get_inputs())
        self.available: frozenset[str] = frozenset(o.name for o in self._session.get_outputs())
        self._input_dims = {
            i.name: self._shapes[i.name].dims for i in model.graph.input if i.name in self._shapes
        }
        self._batch_symbols = {
            spec.dim_names[spec.batch_axis]
            for spec in self.inputs
            if spec.batch_axis is not None and spec.batch_axis < len(spec.dim_names) and spec.dim_names[spec.batch_axis]
        }

    def head(self, output: str) -> Head:
        return self.heads.get(output) or Head(output, None, problem=f"output '{output}' is not a float tensor")

    def value_batch_axis(self, name: str) -> int | None:
        """The axis of a value that carries the samples: the one the graph names like an input's batch
        axis; 0 (the common [N, ...] layout) when the graph gives no shape or a dynamic one it cannot
        tie to an input; None when its shape is all fixed sizes."""
        shape = self._shapes.get(name)
        if shape is None:
            return 0
        found = next((axis for axis, dim in enumerate(shape.dims) if dim in self._batch_symbols), None)
        if found is not None:
            return found
        return None if all(isinstance(d, int) for d in shape.dims) else 0

    def estimate_bytes(self, names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> int:
        """Bytes the named values will take for these feeds; values whose size the graph does not tell
        count as zero here and are checked after the run (see `run`)."""
        sizes = self._symbol_sizes(feeds)
        total = 0
        for name in dict.fromkeys(names):
            shape = self._shapes.get(name)
            size = shape.nbytes(sizes) if shape is not None else None
            total += size or 0
        return total

    def check_budget(self, names: Sequence[str], feeds: Mapping[str, np.ndarray], cap_bytes: int) -> None:
        needed = self.estimate_bytes(names, feeds)
        if needed > cap_bytes:
            raise InvalidRequest(_over_cap(needed, cap_bytes))

    def run(
        self, feeds: Mapping[str, np.ndarray], names: Sequence[str], cap_bytes: int | None = None
    ) -> dict[str, np.ndarray]:
        """Run the inspection graph and return the named values (blocking; call it from a thread).
        Names that are graph inputs come straight from the feeds."""
        unknown = [n for n in names if n not in self.available and n not in feeds]
        if unknown:
            raise InvalidRequest(f"unknown intermediate value(s): {', '.join(map(repr, unknown))}")
        wanted = list(dict.fromkeys(n for n in names if n in self.available))
        arrays: list[np.ndarray] = []
        if wanted:  # onnxruntime reads an empty list as "every output"
            with map_run_errors(self.label):
                arrays = self._session.run(wanted, dict(feeds))
        values = {name: np.asarray(a) for name, a in zip(wanted, arrays, strict=True)}
        values |= {n: np.asarray(feeds[n]) for n in names if n not in values}
        if cap_bytes is not None:
            needed = sum(a.nbytes for a in values.values())
            if needed > cap_bytes:
                raise InvalidRequest(_over_cap(needed, cap_bytes))
        return values

    def _symbol_sizes(self, feeds: Mapping[str, np.ndarray]) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for name, dims in self._input_dims.items():
            array = feeds.get(name)
            if array is None or array.ndim != len(dims):
                continue
            for dim, size in zip(dims, array.shape, strict=True):
                if isinstance(dim, str):
                    sizes.setdefault(dim, int(size))
        return sizes


def _over_cap(needed: int, cap: int) -> str:
    return (
        f"the intermediate values of this request need {needed / 2**20:.1f} MiB, over the inspection "
        f"cap of {cap / 2**20:.1f} MiB; send fewer samples or ask for fewer values"
    )


def _heads(model: onnx.ModelProto, directory: Path) -> dict[str, Head]:
    """The scoring head in front of every float graph output."""
    consts = constants(model.graph, directory)
    types = element_types(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    return {
        out.name: find_head(model.graph, out.name, consts, types, opset)
        for out in model.graph.output
        if out.type.tensor_type.elem_type in FLOAT_TYPES
    }


def _session_with_outputs(
    model: onnx.ModelProto, directory: Path, names: Sequence[str], threads: int, label: str
) -> ort.InferenceSession:
    """A session whose outputs include the named intermediate values.

    The graph is changed in place and handed over as bytes, with onnxruntime told where the external
    data lives: no second copy of the weights in Python, and no protobuf over 2 GB.
    """
    present = {o.name for o in model.graph.output}
    for name in dict.fromkeys(names):
        if name not in present:
            # An untyped ValueInfoProto is enough for onnxruntime (weights.md §4).
            model.graph.output.append(helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(directory))
    with map_load_errors(f"{label} (inspection session)"):
        payload = model.SerializeToString()
        return ort.InferenceSession(payload, sess_options=options, providers=["CPUExecutionProvider"])


def _value_shapes(model: onnx.ModelProto) -> dict[str, ValueShape]:
    graph = model.graph
    shapes: dict[str, ValueShape] = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor = info.type.tensor_type
        if not info.type.HasField("tensor_type") or not tensor.HasField("shape"):
            continue
        dims: tuple[Dim, ...] = tuple(
            d.dim_value if d.HasField("dim_value") else d.dim_param if d.HasField("dim_param") else None
            for d in tensor.shape.dim
        )
        try:
            itemsize = helper.tensor_dtype_to_np_dtype(tensor.elem_type).itemsize
        except KeyError:
            continue
        shapes[info.name] = ValueShape(dims, itemsize)
    return shapes
