"""Reverse-mode gradients in numpy (float64) through a network's head, for Grad-CAM.

onnxruntime computes no gradients, so the head between the feature map and the scored output is
differentiated here, node by node in reverse graph order, from the values the inspection session
returned for that very request (every input and output of every head node is promoted). Only the ops
below are differentiated; a head with any other float-valued op is refused by `check_node`, with the
op named. Nodes whose outputs are all integers (shape arithmetic such as Shape -> Gather -> Concat
feeding a Reshape) carry no gradient and are allowed anywhere.

Supported: GlobalAveragePool, ReduceMean, ReduceSum, Flatten, Reshape, Squeeze, Unsqueeze, Identity,
Dropout (inference), Cast (float to float), Transpose, Concat, Gemm, MatMul, Add, Sub, Mul, Div, Neg,
Relu, LeakyRelu, Sigmoid, Tanh, HardSigmoid, HardSwish, Clip, Softmax, LogSoftmax and
BatchNormalization (inference). Derivatives at the kinks follow torch's autograd (Relu: 0 at 0;
HardSwish: x/3 + 1/2 on [-3, 3]; Clip and HardSigmoid: 0 at the clip points), so maps match it.

Samples must stay independent through the head (the batch is axis 0 everywhere and nothing reduces,
normalises, concatenates or transposes across it), so one backward pass seeded with each sample's
own target gives every sample's gradient at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from service.errors import InvalidRequest

Grads = list[np.ndarray | None]
_Backward = Callable[["_Node", np.ndarray], Grads]


class _Node:
    """One head node with the values of its inputs and outputs (float ones in float64)."""

    def __init__(self, node: onnx.NodeProto, values: Mapping[str, np.ndarray], opset: int) -> None:
        self.proto = node
        self.opset = opset
        self.inputs: list[np.ndarray | None] = [_as_float64(values[n]) if n else None for n in node.input]
        self.outputs: list[np.ndarray] = [_as_float64(values[n]) for n in node.output[:1]]
        self._attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def attr(self, name: str, default: object) -> object:
        return self._attrs.get(name, default)

    def int_attr(self, name: str, default: int) -> int:
        value = self._attrs.get(name, default)
        return int(value) if isinstance(value, int | float) else default

    def float_attr(self, name: str, default: float) -> float:
        value = self._attrs.get(name, default)
        return float(value) if isinstance(value, int | float) else default

    def x(self, index: int = 0) -> np.ndarray:
        value = self.inputs[index] if index < len(self.inputs) else None
        if value is None:
            raise InvalidRequest(f"{self.proto.op_type} node '{self.proto.name}' lacks input {index}")
        return value

    def optional(self, index: int) -> np.ndarray | None:
        return self.inputs[index] if index < len(self.inputs) else None


def _as_float64(array: np.ndarray) -> np.ndarray:
    value = np.asarray(array)
    return value.astype(np.float64) if np.issubdtype(value.dtype, np.floating) else value


def _is_float(array: np.ndarray | None) -> bool:
    return array is not None and np.issubdtype(array.dtype, np.floating)


def _unbroadcast(gradient: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a broadcast gradient back down to an operand's shape (numpy broadcasting rules)."""
    extra = gradient.ndim - len(shape)
    summed = gradient.sum(axis=tuple(range(extra))) if extra > 0 else gradient
    axes = tuple(i for i, size in enumerate(shape) if size == 1 and summed.shape[i] != 1)
    return summed.sum(axis=axes, keepdims=True).reshape(shape) if axes else summed.reshape(shape)


# ------------------------------------------------------------------------------------- the ops


def _same_shape(node: _Node, dy: np.ndarray) -> Grads:
    return [dy.reshape(node.x().shape)] + [None] * (len(node.inputs) - 1)


def _transpose(node: _Node, dy: np.ndarray) -> Grads:
    perm = node.attr("perm", None)
    order = list(perm) if isinstance(perm, list) else list(reversed(range(dy.ndim)))
    return [dy.transpose(np.argsort(order))]


def _reduce_axes(node: _Node) -> tuple[int, ...]:
    rank = node.x().ndim
    raw = node.attr("axes", None)
    axes = None
    if isinstance(raw, list):
        axes = [int(a) for a in raw]
    elif node.optional(1) is not None:
        axes = [int(a) for a in np.asarray(node.optional(1)).reshape(-1)]
    if not axes:
        if node.int_attr("noop_with_empty_axes", 0):
            return ()
        axes = list(range(rank))
    return tuple(sorted(a % rank for a in axes))


def _reduce(node: _Node, dy: np.ndarray) -> Grads:
    x = node.x()
    axes = _reduce_axes(node)
    if not node.int_attr("keepdims", 1):
        dy = np.expand_dims(dy, axes)
    scale = 1.0
    if node.proto.op_type == "ReduceMean":
        scale = 1.0 / max(1, int(np.prod([x.shape[a] for a in axes])))
    return [np.broadcast_to(dy * scale, x.shape).copy()] + [None] * (len(node.inputs) - 1)


def _global_average_pool(node: _Node, dy: np.ndarray) -> Grads:
    x = node.x()
    return [np.broadcast_to(dy / int(np.prod(x.shape[2:])), x.shape).copy()]


def _concat(node: _Node, dy: np.ndarray) -> Grads:
    axis = node.int_attr("axis", 0) % dy.ndim
    sizes = [value.shape[axis] if value is not None else 0 for value in node.inputs]
    parts = np.split(dy, np.cumsum(sizes)[:-1], axis=axis)
    return [part if _is_float(value) else None for part, value in zip(parts, node.inputs, strict=True)]


def _gemm(node: _Node, dy: np.ndarray) -> Grads:
    a, b, c = node.x(0), node.x(1), node.optional(2)
    alpha, beta = node.float_attr("alpha", 1.0), node.float_attr("beta", 1.0)
    trans_a, trans_b = node.int_attr("transA", 0), node.int_attr("transB", 0)
    a2 = a.T if trans_a else a
    b2 = b.T if trans_b else b
    da2 = alpha * dy @ b2.T
    db2 = alpha * a2.T @ dy
    grads: Grads = [da2.T if trans_a else da2, db2.T if trans_b else db2]
    if c is not None:
        grads.append(_unbroadcast(beta * dy, c.shape))
    return grads


def _matmul(node: _Node, dy: np.ndarray) -> Grads:
    a, b = node.x(0), node.x(1)
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    dy2 = dy
    if a.ndim == 1:
        dy2 = np.expand_dims(dy2, -2)
    if b.ndim == 1:
        dy2 = np.expand_dims(dy2, -1)
    da = dy2 @ np.swapaxes(b2, -1, -2)
    db = np.swapaxes(a2, -1, -2) @ dy2
    return [_unbroadcast(da, a2.shape).reshape(a.shape), _unbroadcast(db, b2.shape).reshape(b.shape)]


def _add(node: _Node, dy: np.ndarray) -> Grads:
    return [_unbroadcast(dy, node.x(0).shape), _unbroadcast(dy, node.x(1).shape)]


def _sub(node: _Node, dy: np.ndarray) -> Grads:
    return [_unbroadcast(dy, node.x(0).shape), _unbroadcast(-dy, node.x(1).shape)]


def _mul(node: _Node, dy: np.ndarray) -> Grads:
    a, b = node.x(0), node.x(1)
    return [_unbroadcast(dy * b, a.shape), _unbroadcast(dy * a, b.shape)]


def _div(node: _Node, dy: np.ndarray) -> Grads:
    a, b = node.x(0), node.x(1)
    return [_unbroadcast(dy / b, a.shape), _unbroadcast(-dy * a / (b * b), b.shape)]


def _neg(node: _Node, dy: np.ndarray) -> Grads:
    return [-dy]


def _relu(node: _Node, dy: np.ndarray) -> Grads:
    return [dy * (node.x() > 0)]


def _leaky_relu(node: _Node, dy: np.ndarray) -> Grads:
    return [dy * np.where(node.x() > 0, 1.0, node.float_attr("alpha", 0.01))]


def _sigmoid(node: _Node, dy: np.ndarray) -> Grads:
    y = node.outputs[0]
    return [dy * y * (1.0 - y)]


def _tanh(node: _Node, dy: np.ndarray) -> Grads:
    y = node.outputs[0]
    return [dy * (1.0 - y * y)]


def _hard_sigmoid(node: _Node, dy: np.ndarray) -> Grads:
    alpha, beta = node.float_attr("alpha", 0.2), node.float_attr("beta", 0.5)
    z = alpha * node.x() + beta
    return [dy * alpha * ((z > 0.0) & (z < 1.0))]


def _hard_swish(node: _Node, dy: np.ndarray) -> Grads:
    x = node.x()
    return [dy * np.where(x < -3.0, 0.0, np.where(x <= 3.0, x / 3.0 + 0.5, 1.0))]


def _clip(node: _Node, dy: np.ndarray) -> Grads:
    x = node.x()
    if node.opset < 11:
        low, high = node.float_attr("min", -np.inf), node.float_attr("max", np.inf)
    else:
        low_v, high_v = node.optional(1), node.optional(2)
        low = -np.inf if low_v is None else float(low_v)
        high = np.inf if high_v is None else float(high_v)
    return [dy * ((x > low) & (x < high))] + [None] * (len(node.inputs) - 1)


def _softmax_axis(node: _Node) -> int:
    return node.int_attr("axis", -1 if node.opset >= 13 else 1) % node.x().ndim


def _as_2d(node: _Node, array: np.ndarray) -> np.ndarray:
    """Softmax before opset 13 works on the input flattened to 2-D at `axis`."""
    if node.opset >= 13:
        return array
    axis = _softmax_axis(node)
    return array.reshape(int(np.prod(array.shape[:axis])), -1)


def _softmax(node: _Node, dy: np.ndarray) -> Grads:
    axis = _softmax_axis(node) if node.opset >= 13 else 1
    y, g = _as_2d(node, node.outputs[0]), _as_2d(node, dy)
    return [(y * (g - (g * y).sum(axis=axis, keepdims=True))).reshape(node.x().shape)]


def _log_softmax(node: _Node, dy: np.ndarray) -> Grads:
    axis = _softmax_axis(node) if node.opset >= 13 else 1
    y, g = _as_2d(node, node.outputs[0]), _as_2d(node, dy)
    return [(g - np.exp(y) * g.sum(axis=axis, keepdims=True)).reshape(node.x().shape)]


def _batch_norm(node: _Node, dy: np.ndarray) -> Grads:
    x, scale, var = node.x(0), node.x(1), node.x(4)
    factor = scale / np.sqrt(var + node.float_attr("epsilon", 1e-5))
    shape = [1, -1] + [1] * (x.ndim - 2)
    return [dy * factor.reshape(shape)] + [None] * 4


_BACKWARD: dict[str, _Backward] = {
    "GlobalAveragePool": _global_average_pool,
    "ReduceMean": _reduce,
    "ReduceSum": _reduce,
    "Flatten": _same_shape,
    "Reshape": _same_shape,
    "Squeeze": _same_shape,
    "Unsqueeze": _same_shape,
    "Identity": _same_shape,
    "Dropout": _same_shape,
    "Cast": _same_shape,
    "Transpose": _transpose,
    "Concat": _concat,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Add": _add,
    "Sub": _sub,
    "Mul": _mul,
    "Div": _div,
    "Neg": _neg,
    "Relu": _relu,
    "LeakyRelu": _leaky_relu,
    "Sigmoid": _sigmoid,
    "Tanh": _tanh,
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _hard_swish,
    "Clip": _clip,
    "Softmax": _softmax,
    "LogSoftmax": _log_softmax,
    "BatchNormalization": _batch_norm,
}
SUPPORTED_OPS: tuple[str, ...] = tuple(_BACKWARD)


# ------------------------------------------------------------------------------- static checks


def check_node(node: onnx.NodeProto, consts: Mapping[str, np.ndarray], opset: int) -> str | None:
    """Why gradients cannot pass this float-valued head node (None: they can)."""
    op = node.op_type
    where = f"{op} node '{node.name or node.output[0]}'"
    if node.domain not in ("", "ai.onnx") or op not in _BACKWARD:
        return f"{where} is not among the ops differentiated here ({', '.join(SUPPORTED_OPS)})"
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    mixes = f"{where} mixes samples across the batch axis"
    if op in ("ReduceMean", "ReduceSum"):
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            stored = consts.get(node.input[1])
            if stored is None:
                return f"{where} takes its axes from a computed value"
            axes = [int(a) for a in stored.reshape(-1)]
        if not axes and not attrs.get("noop_with_empty_axes", 0):
            return mixes
        if isinstance(axes, list) and 0 in axes:
            return mixes
    if op in ("Softmax", "LogSoftmax") and attrs.get("axis", -1 if opset >= 13 else 1) == 0:
        return mixes
    if op == "Concat" and attrs.get("axis") == 0:
        return mixes
    if op == "Flatten" and attrs.get("axis", 1) == 0:
        return mixes
    if op == "Transpose" and isinstance(attrs.get("perm"), list) and attrs["perm"][0] != 0:
        return mixes
    if op == "Gemm" and attrs.get("transA", 0):
        return mixes
    if op == "BatchNormalization" and attrs.get("training_mode", 0):
        return f"{where} normalises in training mode"
    return None


# ------------------------------------------------------------------------------------ the pass


def backpropagate(
    nodes: Sequence[onnx.NodeProto],
    values: Mapping[str, np.ndarray],
    *,
    wrt: str,
    output: str,
    seed: np.ndarray,
    opset: int,
) -> np.ndarray:
    """∂(Σ seed · values[output]) / ∂values[wrt] through `nodes` (given in graph order), in float64.

    `values` holds every input and output of every node (constants included). Gradients flow only
    through float values; each node's float inputs that depend on `wrt` receive them."""
    samples = values[wrt].shape[0]
    derived = {wrt}
    for proto in nodes:
        if derived.intersection(proto.input):
            derived.update(proto.output)
    grads: dict[str, np.ndarray] = {output: np.asarray(seed, dtype=np.float64)}
    for proto in reversed(nodes):
        dy = grads.pop(proto.output[0], None) if proto.output else None
        if dy is None or proto.op_type not in _BACKWARD:
            continue  # no gradient reaches it, or integer shape arithmetic
        node = _Node(proto, values, opset)
        if not _is_float(node.outputs[0]):
            continue
        _check_rows(proto, node.outputs[0], samples)
        for name, value, grad in zip(proto.input, node.inputs, _BACKWARD[proto.op_type](node, dy), strict=False):
            if name not in derived or grad is None or not _is_float(value):
                continue
            grads[name] = grads[name] + grad if name in grads else grad
    found = grads.get(wrt)
    return np.zeros(values[wrt].shape) if found is None else found


def _check_rows(node: onnx.NodeProto, value: np.ndarray, samples: int) -> None:
    # One sample cannot mix with another, whatever a squeeze does to its axis 0.
    if samples > 1 and (value.ndim == 0 or value.shape[0] != samples):
        raise InvalidRequest(
            f"{node.op_type} node '{node.name or node.output[0]}' gives shape {list(value.shape)}, which "
            f"does not keep the {samples} samples on axis 0, so per-sample gradients cannot be taken "
            "through it; use method 'occlusion'"
        )
