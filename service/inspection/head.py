"""The scoring head of an image network: everything between its last convolutional feature map and a
scored output, read from the graph.

The feature map is the input of the last global average pool (GlobalAveragePool, or ReduceMean over
the spatial axes 2 and 3) from which the output is reached. The head is every node that depends on that
map and on which the output depends, in graph order, so a second path from the map to the scores
(bypassing the pool) is part of it too.

Two facts follow. **CAM is exact** when the head is the pool, reshapes, and one linear layer (Gemm, or
MatMul with an optional bias Add) on a constant weight that produces the output: then Grad-CAM's channel
weights are W[c, k] / (h·w) and Grad-CAM is CAM divided by a constant. **Grad-CAM is computable** when
every float-valued head node is one `backprop` differentiates; otherwise `problem` says which node is
not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from service.inspection.backprop import check_node
from service.inspection.graph import FLOAT_TYPES, subgraph_inputs

_RESHAPING = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout"})


@dataclass(frozen=True, slots=True)
class Head:
    output: str
    """The scored graph output."""
    feature_map: str | None
    """The [N, K, h, w] value feeding the last global average pool; None when there is none."""
    nodes: tuple[onnx.NodeProto, ...] = ()
    reads: tuple[str, ...] = ()
    """Non-constant values the backward pass reads: the feature map and every other input and output
    of the head's nodes (graph inputs among them come from the request's feeds)."""
    constants: Mapping[str, np.ndarray] = field(default_factory=dict)
    """The constant inputs of the head's nodes (weights, biases, axes, shapes)."""
    exact_cam: bool = False
    problem: str | None = None
    """Why gradients cannot be taken through the head (None: they can)."""

    @property
    def differentiable(self) -> bool:
        return self.feature_map is not None and self.problem is None

    @property
    def ops(self) -> list[str]:
        return [node.op_type for node in self.nodes]


def find_head(
    graph: onnx.GraphProto,
    output: str,
    consts: Mapping[str, np.ndarray],
    types: Mapping[str, int],
    opset: int,
) -> Head:
    """The head in front of one graph output."""
    producers = {out: node for node in graph.node for out in node.output if out}
    upstream = _ancestors(output, producers)
    pools = [n for n in graph.node if id(n) in upstream and _is_global_spatial_mean(n, consts)]
    if not pools:
        return Head(
            output,
            None,
            problem=f"no global average pooling (GlobalAveragePool, or ReduceMean over axes 2 and 3) "
            f"leads to output '{output}', so there is no convolutional feature map pooled into its scores",
        )
    feature_map = pools[-1].input[0]
    derived = {feature_map}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if derived.intersection(_inputs(node)):
            derived.update(o for o in node.output if o)
            if id(node) in upstream:
                nodes.append(node)
    names = dict.fromkeys([feature_map, *(v for n in nodes for v in (*n.input, *n.output) if v)])
    reads = tuple(v for v in names if v not in consts)
    head_consts = {v: consts[v] for v in names if v in consts}
    return Head(
        output,
        feature_map,
        tuple(nodes),
        reads,
        head_consts,
        exact_cam=_is_one_linear_layer(nodes, output, consts, types),
        problem=_first_problem(nodes, output, consts, types, opset),
    )


def _inputs(node: onnx.NodeProto) -> set[str]:
    return {name for name in node.input if name} | subgraph_inputs(node)


def _ancestors(output: str, producers: Mapping[str, onnx.NodeProto]) -> set[int]:
    """ids of the nodes the output depends on (through subgraph reads too)."""
    seen: set[int] = set()
    pending = [output]
    while pending:
        node = producers.get(pending.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        pending.extend(_inputs(node))
    return seen


def _is_global_spatial_mean(node: onnx.NodeProto, consts: Mapping[str, np.ndarray]) -> bool:
    if node.op_type == "GlobalAveragePool":
        return True
    if node.op_type != "ReduceMean":
        return False
    attr = next((a for a in node.attribute if a.name == "axes"), None)
    if attr is not None:
        axes = list(attr.ints)
    elif len(node.input) > 1 and node.input[1] in consts:
        axes = [int(a) for a in consts[node.input[1]].reshape(-1)]
    else:
        return False
    # A pooled feature map is rank 4 ([N, K, h, w]), so -2 / -1 mean 2 / 3; the run checks the rank.
    return sorted(a % 4 for a in axes) == [2, 3]


def _is_float(name: str, types: Mapping[str, int]) -> bool:
    """Whether a value may carry a gradient; a value of unknown type is taken to be a float."""
    kind = types.get(name)
    return kind is None or kind in FLOAT_TYPES


def _first_problem(
    nodes: list[onnx.NodeProto],
    output: str,
    consts: Mapping[str, np.ndarray],
    types: Mapping[str, int],
    opset: int,
) -> str | None:
    for node in nodes:
        if not any(_is_float(o, types) for o in node.output if o):
            continue  # integer shape arithmetic carries no gradient
        problem = check_node(node, consts, opset)
        if problem is not None:
            return f"the head between the feature map and output '{output}' cannot be differentiated: {problem}"
    return None


def _is_one_linear_layer(
    nodes: list[onnx.NodeProto], output: str, consts: Mapping[str, np.ndarray], types: Mapping[str, int]
) -> bool:
    """The pool, reshapes, then one Gemm / MatMul (+ bias Add) on a constant weight that gives the output."""
    float_nodes = [n for n in nodes if any(_is_float(o, types) for o in n.output if o)]
    layers = [n for n in float_nodes if n.op_type not in _RESHAPING]
    if not layers or layers[0].op_type not in ("GlobalAveragePool", "ReduceMean") or layers[-1].output[0] != output:
        return False
    linear = layers[1:]
    if [n.op_type for n in linear] == ["Gemm"]:
        gemm = linear[0]
        trans_a = next((a.i for a in gemm.attribute if a.name == "transA"), 0)
        gemm_bias = gemm.input[2] if len(gemm.input) > 2 else ""
        return not trans_a and gemm.input[1] in consts and (not gemm_bias or gemm_bias in consts)
    if [n.op_type for n in linear] == ["MatMul"]:
        return linear[0].input[1] in consts and consts[linear[0].input[1]].ndim == 2
    if [n.op_type for n in linear] == ["MatMul", "Add"]:
        matmul, add = linear
        bias = [name for name in add.input if name != matmul.output[0]]
        return (
            matmul.input[1] in consts
            and consts[matmul.input[1]].ndim == 2
            and len(bias) == 1
            and bias[0] in consts
        )
    return False
