"""ONNX export with the dynamo exporter, and the onnxruntime-vs-torch parity check.

The dynamo exporter (torch's default since 2.9) keeps state_dict names on initializers; its
onnxscript optimizer folds each BatchNorm into the preceding Conv, so those Conv initializers hold
the folded ("effective") values under the original name. `training.manifest` records which.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from numpy.typing import NDArray
from torch import nn

from training.errors import ExportError, ParityError

EXPORTER = "dynamo"
OPSET = 20
PARITY_TOLERANCE = 1e-4
STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"


@dataclass(frozen=True, slots=True)
class Parity:
    max_abs_diff: float
    samples: int


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's notes about optional torchvision ops and torch-internal deprecations."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="copyreg")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def export(
    module: nn.Module,
    example: NDArray[np.float32],
    input_name: str,
    output_name: str,
    path: Path,
    metadata: Mapping[str, str],
) -> None:
    """Write `module` (eval mode) to `path` with a dynamic batch axis and named input/output."""
    batch = torch.export.Dim("batch")
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            module.eval(),
            (torch.from_numpy(example),),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_shapes={input_name: {0: batch}},
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("the ONNX exporter returned no program")
    proto = program.model_proto
    drop_stack_traces(proto.graph)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save_model(proto, str(path))
    if not symbolic_batch(path):
        raise ExportError("the exported graph has a fixed batch dimension; batching clients need it dynamic")


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


def torch_outputs(module: nn.Module, inputs: NDArray[np.float32], batch_size: int = 512) -> NDArray[np.float32]:
    with torch.no_grad():
        parts = [module.eval()(torch.from_numpy(inputs[i : i + batch_size])) for i in range(0, len(inputs), batch_size)]
    return torch.cat(parts).numpy()


def onnx_outputs(path: Path, input_name: str, inputs: NDArray[np.float32]) -> NDArray[np.float32]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    result: NDArray[np.float32] = session.run(None, {input_name: inputs})[0]
    return result


def check_parity(expected: NDArray[np.float32], actual: NDArray[np.float32]) -> Parity:
    """Raise ParityError unless onnxruntime matches torch within PARITY_TOLERANCE on every value."""
    if expected.shape != actual.shape:
        raise ParityError(f"onnxruntime output shape {actual.shape} differs from torch's {expected.shape}")
    diff = float(np.max(np.abs(expected.astype(np.float64) - actual.astype(np.float64))))
    if not diff <= PARITY_TOLERANCE:
        raise ParityError(f"onnxruntime differs from torch by {diff:.3g} (tolerance {PARITY_TOLERANCE:g})")
    return Parity(max_abs_diff=diff, samples=len(expected))


def symbolic_batch(path: Path) -> bool:
    """Whether every graph input and output has a symbolic (not fixed) first dimension."""
    graph = onnx.load(str(path), load_external_data=False).graph
    values = list(graph.input) + list(graph.output)
    return all(v.type.tensor_type.shape.dim[0].HasField("dim_param") for v in values)
