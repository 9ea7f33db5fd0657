"""ONNX export with the dynamo exporter, and the checks every exported graph must pass.

The dynamo exporter (torch's default since 2.9) keeps state_dict names on initializers; its
onnxscript optimizer folds each BatchNorm into the preceding Conv, so those Conv initializers hold
the folded ("effective") values under the original name. `training.manifest` records which.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from numpy.typing import NDArray
from torch import nn

from training.errors import ExportError, UsageError

EXPORTER = "dynamo"
OPSET = 20
STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"
BATCH = "batch"

Axes = dict[str, dict[int, str]]
"""Tensor name -> {axis: symbolic dimension name}; a name shared by several tensors is one dimension."""


def batch_axes(input_names: Sequence[str], output_names: Sequence[str]) -> Axes:
    """The default: axis 0 of every input and output is one dynamic `batch` dimension."""
    return {name: {0: BATCH} for name in [*input_names, *output_names]}


def normalise_axes(
    dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]] | None,
    input_names: Sequence[str],
    output_names: Sequence[str],
) -> Axes:
    """`dynamic_axes` as torch.onnx.export takes it ({name: {axis: dim name}} or {name: [axes]}), checked.

    In the list form axis 0 is called `batch` and any other axis `<tensor>_<axis>`.
    """
    if dynamic_axes is None:
        return batch_axes(input_names, output_names)
    known = {*input_names, *output_names}
    axes: Axes = {}
    for name, spec in dynamic_axes.items():
        if name not in known:
            raise UsageError(f"dynamic_axes names {name!r}, which is neither an input nor an output name")
        plain = re.sub(r"\W", "_", name)
        named = dict(spec) if isinstance(spec, Mapping) else {a: BATCH if a == 0 else f"{plain}_{a}" for a in spec}
        for axis, dim in named.items():
            if isinstance(axis, bool) or not isinstance(axis, int) or axis < 0:
                raise UsageError(f"dynamic_axes[{name!r}]: axes are non-negative integers, got {axis!r}")
            if not isinstance(dim, str) or not dim.isidentifier():
                raise UsageError(f"dynamic_axes[{name!r}][{axis}]: the dimension name must be an identifier")
        axes[name] = named
    return axes


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's notes about optional torchvision ops and torch-internal warnings."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # The exporter's notes while torch traces its own modules (a recurrent layer's flat
            # weights "assigned during export", size checks due for removal, inputs that share one
            # batch dimension, deprecations inside torch): nothing a caller can act on, and they
            # come from frames torch synthesises, so no module filter catches them. The export
            # either succeeds (and the parity check follows) or raises.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logger.setLevel(level)


def trace_inputs(inputs: Sequence[NDArray[Any]], input_names: Sequence[str], axes: Axes) -> list[torch.Tensor]:
    """The inputs the exporter traces with: a dynamic axis of size 1 is repeated to 2, since
    torch.export fixes every dimension it sees at size 0 or 1."""
    traced = []
    for name, array in zip(input_names, inputs, strict=True):
        for axis in axes.get(name, {}):
            if axis >= array.ndim:
                raise UsageError(f"dynamic axis {axis} of input {name!r} does not exist: its shape is {array.shape}")
            if array.shape[axis] == 1:
                array = np.repeat(array, 2, axis=axis)
        traced.append(torch.from_numpy(np.ascontiguousarray(array)))
    return traced


def export(
    module: nn.Module,
    example: NDArray[Any] | Sequence[NDArray[Any]],
    input_names: str | Sequence[str],
    output_names: str | Sequence[str],
    path: Path,
    metadata: Mapping[str, str],
    dynamic_axes: Axes | None = None,
    opset: int = OPSET,
) -> None:
    """Write `module` (in eval mode) to `path` with named inputs and outputs and dynamic axes
    (default: a dynamic batch axis on every tensor); raise ExportError if the graph fails a check."""
    inputs = [example] if isinstance(example, np.ndarray) else list(example)
    ins = [input_names] if isinstance(input_names, str) else list(input_names)
    outs = [output_names] if isinstance(output_names, str) else list(output_names)
    axes = batch_axes(ins, outs) if dynamic_axes is None else dynamic_axes
    dims: dict[str, Any] = {}
    shapes = tuple(
        {axis: dims.setdefault(dim, torch.export.Dim(dim)) for axis, dim in axes.get(name, {}).items()} or None
        for name in ins
    )
    traced = trace_inputs(inputs, ins, axes)
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                module.eval(),
                tuple(traced),
                input_names=ins,
                output_names=outs,
                dynamic_shapes=shapes,
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many kinds; the user needs its message
        raise ExportError(f"the ONNX exporter failed: {_first_line(exc)}") from exc
    if program is None:
        raise ExportError("the ONNX exporter returned no program")
    proto = program.model_proto
    drop_stack_traces(proto.graph)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph fails the ONNX checker: {_first_line(exc)}") from exc
    onnx.save_model(proto, str(path))
    check_dynamic_axes(path, axes)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def drop_stack_traces(graph: onnx.GraphProto) -> None:
    """Remove the exporter's per-node Python stack traces: they hold absolute paths of the machine
    that trained the model and nothing a consumer needs (module scopes stay)."""
    for node in graph.node:
        kept = [entry for entry in node.metadata_props if entry.key != STACK_TRACE_KEY]
        if len(kept) != len(node.metadata_props):
            del node.metadata_props[:]
            node.metadata_props.extend(kept)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                drop_stack_traces(attribute.g)
            for subgraph in attribute.graphs:
                drop_stack_traces(subgraph)


def check_dynamic_axes(path: Path, axes: Axes) -> None:
    """Every axis asked to be dynamic is symbolic in the graph (batching clients need the batch axis)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        for axis in axes.get(value.name, {}):
            if axis >= len(dims):
                raise ExportError(f"{value.name!r} has {len(dims)} dimensions in the exported graph, no axis {axis}")
            if not dims[axis].HasField("dim_param"):
                what = "the batch dimension" if axis == 0 else f"axis {axis}"
                raise ExportError(
                    f"the exported graph fixes {what} of {value.name!r} at {dims[axis].dim_value}; "
                    "it must stay dynamic (check that forward does not depend on that size)"
                )
