"""What an ONNX graph offers to inspection, read from the graph alone.

Three facts: the intermediate values worth watching (outputs of weight-bearing layers and of
activation functions), the image input (rank 4, NCHW), and whether the network ends in a global
average pool feeding a linear head, which is what makes CAM equal to Grad-CAM.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

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
# Ops that only reshape the pooled vector on its way to the head.
_PASS_THROUGH_OPS = frozenset({"Flatten", "Reshape", "Squeeze", "Identity"})


@dataclass(frozen=True, slots=True)
class WatchedValue:
    """An intermediate value the inspection session promotes to a graph output."""

    name: str
    op_type: str
    node: str
    kind: str
    """``layer`` (a weight-bearing node's output) or ``activation``."""


@dataclass(frozen=True, slots=True)
class ImageInput:
    name: str
    channels: int | None
    height: int | None
    width: int | None


@dataclass(frozen=True, slots=True)
class CamHead:
    """A global-average-pool + linear head: scores = W · mean_hw(feature_map) + b."""

    feature_map: str
    """The value directly feeding the pool (after the last ReLU / BN), shape [N, K, h, w]."""
    scores: str
    """The head's output value, shape [N, C]."""
    weight: np.ndarray
    """W[c, k] in float64, with Gemm's alpha and transB already applied."""


def constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node tensors of the main graph, by value name."""
    found = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    found[node.output[0]] = numpy_helper.to_array(attr.t)
    return found


def watched_values(model: onnx.ModelProto) -> list[WatchedValue]:
    """Outputs of weight-bearing layers and activation functions, in graph (topological) order."""
    consts = constants(model)
    found: list[WatchedValue] = []
    for node in model.graph.node:
        if node.op_type in _WEIGHT_OPS and _has_constant_operand(node, consts):
            kind = "layer"
        elif node.op_type in _ACTIVATION_OPS:
            kind = "activation"
        else:
            continue
        if node.output and node.output[0]:
            found.append(WatchedValue(node.output[0], node.op_type, node.name, kind))
    return found


def _has_constant_operand(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> bool:
    # A MatMul of two activations (attention) is not a layer; its weightless twin is excluded.
    return any(name in consts for name in node.input[:2] if name)


def image_input(model: onnx.ModelProto) -> ImageInput | None:
    """The first rank-4 (NCHW) graph input, if any."""
    initializers = {init.name for init in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers or not value.type.HasField("tensor_type"):
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) != 4:
            continue
        sizes = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        return ImageInput(value.name, sizes[1], sizes[2], sizes[3])
    return None


def cam_head(model: onnx.ModelProto) -> CamHead | None:
    """The global-pool + linear head, if the graph ends in one (the last such pool wins)."""
    consts = constants(model)
    consumers = _consumers(model)
    head: CamHead | None = None
    for node in model.graph.node:
        if not _is_global_spatial_mean(node, consts):
            continue
        found = _linear_after(node.output[0], consumers, consts)
        if found is None:
            continue
        scores, weight = found
        head = CamHead(feature_map=node.input[0], scores=scores, weight=weight)
    return head


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    table: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            table.setdefault(name, []).append(node)
    return table


def _attr(node: onnx.NodeProto, name: str) -> onnx.AttributeProto | None:
    return next((a for a in node.attribute if a.name == name), None)


def _int_attr(node: onnx.NodeProto, name: str, default: int) -> int:
    attr = _attr(node, name)
    return int(attr.i) if attr is not None else default


def _is_global_spatial_mean(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> bool:
    if node.op_type == "GlobalAveragePool":
        return True
    if node.op_type != "ReduceMean":
        return False
    attr = _attr(node, "axes")
    if attr is not None:
        axes = list(attr.ints)
    elif len(node.input) > 1 and node.input[1] in consts:
        axes = [int(a) for a in consts[node.input[1]].reshape(-1)]
    else:
        return False
    # Rank 4 is the only case the head detection supports, so -2/-1 mean 2/3.
    return sorted(a % 4 for a in axes) == [2, 3]


def _linear_after(
    pooled: str, consumers: dict[str, list[onnx.NodeProto]], consts: dict[str, np.ndarray]
) -> tuple[str, np.ndarray] | None:
    value = pooled
    for node in _chain(value, consumers):
        if node.op_type in _PASS_THROUGH_OPS:
            value = node.output[0]
            continue
        if node.op_type == "Gemm":
            return _gemm_head(node, value, consts)
        if node.op_type == "MatMul":
            return _matmul_head(node, value, consumers, consts)
        return None
    return None


def _chain(value: str, consumers: dict[str, list[onnx.NodeProto]]) -> Iterator[onnx.NodeProto]:
    """Walk single-consumer edges forward from `value`."""
    while len(users := consumers.get(value, [])) == 1:
        node = users[0]
        yield node
        if not node.output:
            return
        value = node.output[0]


def _gemm_head(
    node: onnx.NodeProto, value: str, consts: dict[str, np.ndarray]
) -> tuple[str, np.ndarray] | None:
    if node.input[0] != value or _int_attr(node, "transA", 0) or node.input[1] not in consts:
        return None
    b = consts[node.input[1]].astype(np.float64)
    alpha_attr = _attr(node, "alpha")
    alpha = float(alpha_attr.f) if alpha_attr is not None else 1.0
    # Gemm computes A·B' with B' = B if transB else B; the class-by-channel matrix is B'ᵀ.
    weight = b if _int_attr(node, "transB", 0) else b.T
    return node.output[0], alpha * weight


def _matmul_head(
    node: onnx.NodeProto,
    value: str,
    consumers: dict[str, list[onnx.NodeProto]],
    consts: dict[str, np.ndarray],
) -> tuple[str, np.ndarray] | None:
    if node.input[0] != value or node.input[1] not in consts:
        return None
    stored = consts[node.input[1]]
    if stored.ndim != 2:
        return None
    weight = stored.astype(np.float64).T  # MatMul stores [in, out]
    scores = node.output[0]
    users = consumers.get(scores, [])
    if len(users) == 1 and users[0].op_type == "Add" and any(i in consts for i in users[0].input):
        scores = users[0].output[0]
    return scores, weight
