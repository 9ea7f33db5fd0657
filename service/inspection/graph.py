"""What an ONNX graph offers to inspection, read from the graph alone.

The intermediate values worth watching (outputs of weight-bearing layers and of activation functions)
in the main graph; the ones that live inside control-flow subgraphs (If / Loop / Scan bodies, nested),
which onnxruntime cannot return and which are reported with that reason; the image input (rank 4,
NCHW); the constants (initializers and Constant nodes); and the element types the graph declares.
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from service.weights.stored import stored_values

# Nodes that consume a parameter tensor in a weight slot (weights.md §5.1).
_WEIGHT_OPS = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "Gemm",
        "MatMul",
        "Gather",
        "BatchNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "InstanceNormalization",
    }
)
_ACTIVATION_OPS = frozenset(
    {
        "Relu",
        "LeakyRelu",
        "PRelu",
        "Elu",
        "Selu",
        "Celu",
        "Gelu",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Tanh",
        "Softplus",
        "Softsign",
        "Mish",
        "ThresholdedRelu",
        "Clip",
        "Softmax",
        "LogSoftmax",
    }
)
FLOAT_TYPES = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
)


@dataclass(frozen=True, slots=True)
class WatchedValue:
    """An intermediate value the inspection session promotes to a graph output."""

    name: str
    op_type: str
    node: str
    kind: str
    """``layer`` (a weight-bearing node's output) or ``activation``."""


@dataclass(frozen=True, slots=True)
class UnreachableValue:
    """A value worth watching that the inspection session cannot return, and why."""

    name: str
    op_type: str
    node: str
    kind: str
    place: str
    """Where it lives, e.g. ``If_0/then_branch``."""
    reason: str

    def as_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "op_type": self.op_type,
            "node": self.node,
            "kind": self.kind,
            "place": self.place,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class ImageInput:
    name: str
    channels: int | None
    height: int | None
    width: int | None
    batched: bool = True
    """Axis 0 is dynamic (images stack along it); else the model takes exactly one image."""


class Constants(Mapping[str, np.ndarray]):
    """Initializers and Constant-node tensors of one graph, by value name; each is converted to numpy
    only when read, so a look at a few (axes, one head's weights) does not copy every weight."""

    def __init__(self, graph: onnx.GraphProto, directory: Path | None = None) -> None:
        self._directory = directory
        self._protos: dict[str, onnx.TensorProto | onnx.NodeProto] = {i.name: i for i in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.output and _constant_value(node, probe=True) is not None:
                self._protos[node.output[0]] = node
        self._arrays: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            proto = self._protos[name]
            value: np.ndarray | None
            if isinstance(proto, onnx.TensorProto):
                # External data (a model loaded without it) is read from the checked file, one tensor.
                value = stored_values(proto, self._directory) if self._directory else numpy_helper.to_array(proto)
            else:
                value = _constant_value(proto)
            assert value is not None
            self._arrays[name] = value
        return self._arrays[name]

    def __contains__(self, name: object) -> bool:
        return name in self._protos

    def __iter__(self) -> Iterator[str]:
        return iter(self._protos)

    def __len__(self) -> int:
        return len(self._protos)


def constants(graph: onnx.GraphProto, directory: Path | None = None) -> Constants:
    """Initializers and Constant-node tensors of a graph, by value name (converted when read); with the
    model's folder, initializers kept as external data are read from there."""
    return Constants(graph, directory)


def _constant_value(node: onnx.NodeProto, probe: bool = False) -> np.ndarray | None:
    """A Constant node's tensor; with `probe`, only whether it has one (an empty array stands for it)."""
    for attr in node.attribute:
        if attr.name == "value":
            return np.empty(0) if probe else numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.array(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.array(list(attr.ints), dtype=np.int64)
    return None  # sparse or string constants: never a weight operand of the ops watched here


def element_types(model: onnx.ModelProto) -> dict[str, int]:
    """ONNX element type of every main-graph value the (shape-inferred) graph declares."""
    graph = model.graph
    types = {init.name: init.data_type for init in graph.initializer}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
            types[info.name] = info.type.tensor_type.elem_type
    for node in graph.node:
        if node.op_type != "Constant" or not node.output:
            continue
        for attr in node.attribute:
            if attr.name == "value":
                types[node.output[0]] = attr.t.data_type
            elif attr.name in ("value_float", "value_floats"):
                types[node.output[0]] = onnx.TensorProto.FLOAT
            elif attr.name in ("value_int", "value_ints"):
                types[node.output[0]] = onnx.TensorProto.INT64
    return types


def _watch_kind(node: onnx.NodeProto, consts: Container[str]) -> str | None:
    # A MatMul of two activations (attention) is not a layer; its weightless twin is excluded.
    if node.op_type in _WEIGHT_OPS and any(name in consts for name in node.input[:2] if name):
        return "layer"
    if node.op_type in _ACTIVATION_OPS:
        return "activation"
    return None


def watched_values(model: onnx.ModelProto) -> list[WatchedValue]:
    """Outputs of weight-bearing layers and activation functions of the main graph, in graph order."""
    consts = constants(model.graph)
    found: list[WatchedValue] = []
    for node in model.graph.node:
        kind = _watch_kind(node, consts)
        if kind is not None and node.output and node.output[0]:
            found.append(WatchedValue(node.output[0], node.op_type, node.name, kind))
    return found


def unreachable_values(model: onnx.ModelProto) -> list[UnreachableValue]:
    """The values worth watching inside control-flow subgraphs, each with its place and the reason."""
    found: list[UnreachableValue] = []
    outer = frozenset(constants(model.graph))
    for index, node in enumerate(model.graph.node):
        for place, owner, body, consts in _subgraphs(node, index, "", outer):
            reason = (
                f"lives inside the {place.rsplit('/', 1)[-1]} subgraph of {owner.op_type} node "
                f"'{owner.name or owner.op_type}'; onnxruntime returns only values of the main graph, "
                "so it cannot be promoted to an output"
            )
            for inner in body.node:
                kind = _watch_kind(inner, consts)
                if kind is not None and inner.output and inner.output[0]:
                    found.append(
                        UnreachableValue(inner.output[0], inner.op_type, inner.name, kind, place, reason)
                    )
    return found


def _subgraphs(
    node: onnx.NodeProto, index: int, prefix: str, outer: frozenset[str] = frozenset()
) -> Iterator[tuple[str, onnx.NodeProto, onnx.GraphProto, frozenset[str]]]:
    """(place, owning node, body, names of the constants visible in it) for every subgraph under a
    node, nested ones included; a body sees its own constants and those of every enclosing graph."""
    label = f"{prefix}{node.name or f'{node.op_type}_{index}'}"
    for attr in node.attribute:
        bodies: Sequence[onnx.GraphProto] = []
        if attr.type == onnx.AttributeProto.GRAPH:
            bodies = [attr.g]
        elif attr.type == onnx.AttributeProto.GRAPHS:
            bodies = list(attr.graphs)
        for number, body in enumerate(bodies):
            place = f"{label}/{attr.name}" + (f"[{number}]" if len(bodies) > 1 else "")
            visible = outer | frozenset(constants(body))
            yield place, node, body, visible
            for inner_index, inner in enumerate(body.node):
                yield from _subgraphs(inner, inner_index, place + "/", visible)


def subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Outer-scope values a node's subgraphs read without listing them as the node's inputs."""
    used: set[str] = set()
    for _, _, body, _ in _subgraphs(node, 0, ""):
        defined = {i.name for i in body.input} | {i.name for i in body.initializer}
        defined |= {out for inner in body.node for out in inner.output}
        used |= {name for inner in body.node for name in inner.input if name and name not in defined}
    return used


def image_input(model: onnx.ModelProto) -> ImageInput | None:
    """The first numeric rank-4 (NCHW) graph input whose axis 0 is the batch axis or a fixed 1."""
    initializers = {init.name for init in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers or not value.type.HasField("tensor_type"):
            continue
        tensor = value.type.tensor_type
        if len(tensor.shape.dim) != 4 or tensor.elem_type in (onnx.TensorProto.STRING, onnx.TensorProto.BOOL):
            continue
        sizes = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if sizes[0] not in (None, 1):
            continue
        return ImageInput(value.name, sizes[1], sizes[2], sizes[3], batched=sizes[0] is None)
    return None
