"""Layers and parameter tensors of an ONNX graph.

A layer is a compute node that consumes a parameter tensor in a weight slot. A parameter tensor is
an initializer or a Constant node's value, found by following Transpose, Cast, Identity, Reshape
and DequantizeLinear back from the slot. Names are never trusted as module names: roles come from
the consuming op and its input slot.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError
from onnx import AttributeProto, NodeProto, TensorProto, helper

from service.errors import ModelLoadError
from service.weights.stored import FLOAT_TYPES, QUANT_TYPES, dtype_name, stored_bytes

# op -> {input slot: role}; the weight slot is listed first.
WEIGHT_SLOTS: dict[str, dict[int, str]] = {
    "Conv": {1: "weight", 2: "bias"},
    "ConvTranspose": {1: "weight", 2: "bias"},
    "Gemm": {1: "weight", 2: "bias"},
    "MatMul": {1: "weight", 0: "weight"},
    "Gather": {0: "embedding"},
    "BatchNormalization": {1: "bn_scale", 2: "bn_bias", 3: "bn_mean", 4: "bn_var"},
    "LayerNormalization": {1: "norm_scale", 2: "norm_bias"},
    "GroupNormalization": {1: "norm_scale", 2: "norm_bias"},
    "InstanceNormalization": {1: "norm_scale", 2: "norm_bias"},
    "QLinearConv": {3: "weight", 8: "bias"},
    "QLinearMatMul": {3: "weight"},
    "QGemm": {3: "weight", 6: "bias"},
    "MatMulInteger": {1: "weight"},
}
# op -> weight slot -> (scale slot, zero point slot) for ops that dequantize their own weight.
_OWN_QUANT: dict[str, tuple[int, int, int | None]] = {
    "QLinearConv": (3, 4, 5),
    "QLinearMatMul": (3, 4, 5),
    "QGemm": (3, 4, 5),
    "MatMulInteger": (1, -1, 3),
}
_PASS_THROUGH = frozenset({"Transpose", "Cast", "Identity", "Reshape", "DequantizeLinear"})
_CONV_OPS = frozenset({"Conv", "ConvTranspose", "QLinearConv"})


def opaque_id(prefix: str, name: str) -> str:
    """A URL-safe id that depends on the name only, so it is stable across versions."""
    return prefix + hashlib.blake2b(name.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class Quantization:
    """How stored integers become weights: (q - zero_point) * scale, broadcast along ``axis``."""

    op: str
    scale: TensorProto | None
    zero_point: TensorProto | None
    axis: int | None


@dataclass(slots=True)
class ParamTensor:
    """One parameter tensor as stored, with what its consumers say about it."""

    id: str
    name: str
    proto: TensorProto
    source: str
    role: str
    out_axis: int | None
    transposed: bool
    chain: tuple[str, ...]
    quantization: Quantization | None
    overridable: bool
    folded: dict[str, Any] | None = None
    consumers: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.proto.dims)

    @property
    def storage_dtype(self) -> str:
        return dtype_name(self.proto.data_type)

    @property
    def nbytes(self) -> int:
        return stored_bytes(self.proto)

    @property
    def is_conv_weight(self) -> bool:
        return self.role == "weight" and len(self.shape) >= 3


@dataclass(frozen=True, slots=True)
class LayerTensor:
    tensor_id: str
    role: str


@dataclass(frozen=True, slots=True)
class Layer:
    id: str
    op_type: str
    node: str
    module_path: str
    attributes: dict[str, Any]
    tensors: tuple[LayerTensor, ...]


@dataclass(frozen=True, slots=True)
class WeightGraph:
    """Layers in topological order and the parameter tensors they consume, by id."""

    directory: Path
    opset: int | None
    producer: dict[str, str]
    layers: tuple[Layer, ...]
    tensors: dict[str, ParamTensor]

    def tensor_by_name(self, name: str) -> ParamTensor | None:
        return next((t for t in self.tensors.values() if t.name == name), None)


@dataclass(frozen=True, slots=True)
class _Resolved:
    name: str
    chain: tuple[str, ...]
    perm: tuple[int, ...] | None
    reshaped: bool
    quantization: Quantization | None


def load_graph(model_path: Path) -> WeightGraph:
    """Parse ``model_path`` without reading external data and index its layers."""
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except (OSError, ValueError, DecodeError) as exc:
        raise ModelLoadError(f"cannot parse {model_path.name}: {exc}") from exc
    return build_graph(model, model_path.parent)


def build_graph(model: onnx.ModelProto, directory: Path) -> WeightGraph:
    return _GraphIndexer(model, directory).index()


class _GraphIndexer:
    def __init__(self, model: onnx.ModelProto, directory: Path) -> None:
        self._model = model
        self._directory = directory
        graph = model.graph
        self._params: dict[str, tuple[TensorProto, str]] = {
            t.name: (t, "initializer") for t in graph.initializer
        }
        self._producers: dict[str, NodeProto] = {}
        for node in graph.node:
            constant = _constant_value(node) if node.op_type == "Constant" else None
            if constant is not None:
                constant.name = node.output[0]
                self._params[node.output[0]] = (constant, "constant")
            for out in node.output:
                self._producers[out] = node
        self._graph_inputs = {i.name for i in graph.input}
        self._tensors: dict[str, ParamTensor] = {}

    def index(self) -> WeightGraph:
        layers: list[Layer] = []
        for node in self._model.graph.node:
            slots = WEIGHT_SLOTS.get(node.op_type)
            if slots is None:
                continue
            members = self._layer_members(node, slots, f"L{len(layers):04d}")
            if members:
                layers.append(
                    Layer(
                        id=f"L{len(layers):04d}",
                        op_type=node.op_type,
                        node=node.name,
                        module_path=_module_path(node),
                        attributes={a.name: _attribute_value(a) for a in node.attribute},
                        tensors=tuple(members),
                    )
                )
        self._add_buffers()
        opset = next((o.version for o in self._model.opset_import if o.domain in ("", "ai.onnx")), None)
        producer = {"name": self._model.producer_name, "version": self._model.producer_version}
        return WeightGraph(self._directory, opset, producer, tuple(layers), self._tensors)

    def _add_buffers(self) -> None:
        """Float parameters no layer consumes (normalisation constants, running statistics used by
        plain arithmetic): tensors without a layer, so stats and diffs still cover them."""
        quant_params = {
            p.name
            for t in self._tensors.values()
            if t.quantization is not None
            for p in (t.quantization.scale, t.quantization.zero_point)
            if p is not None
        }
        claimed = {t.name for t in self._tensors.values()} | quant_params
        for name, (proto, source) in self._params.items():
            if name in claimed or proto.data_type not in FLOAT_TYPES or not len(proto.dims):
                continue
            tensor = ParamTensor(
                id=opaque_id("T", name),
                name=name,
                proto=proto,
                source=source,
                role="buffer",
                out_axis=None,
                transposed=False,
                chain=(),
                quantization=None,
                overridable=name in self._graph_inputs,
            )
            self._tensors[tensor.id] = tensor

    def _layer_members(self, node: NodeProto, slots: dict[int, str], layer_id: str) -> list[LayerTensor]:
        members: list[LayerTensor] = []
        for slot, role in slots.items():
            if slot >= len(node.input) or not node.input[slot]:
                continue
            if node.op_type == "MatMul" and members:
                break  # a MatMul has one constant operand at most worth calling a weight
            resolved = self._resolve(node.input[slot])
            if resolved is None:
                continue
            proto = self._params[resolved.name][0]
            quant = resolved.quantization or self._own_quantization(node, slot)
            if proto.data_type not in FLOAT_TYPES and not (quant and proto.data_type in QUANT_TYPES):
                continue
            tensor = self._tensors.get(opaque_id("T", resolved.name))
            if tensor is None:
                tensor = self._new_tensor(node, slot, role, resolved, quant)
            tensor.consumers.append(layer_id)
            members.append(LayerTensor(tensor.id, role))
        return members

    def _new_tensor(
        self, node: NodeProto, slot: int, role: str, resolved: _Resolved, quant: Quantization | None
    ) -> ParamTensor:
        proto, source = self._params[resolved.name]
        ndim = len(proto.dims)
        out_axis, in_out_layout = _consumer_out_axis(node, slot, ndim)
        if resolved.reshaped:
            out_axis = None
        elif resolved.perm is not None and out_axis is not None:
            out_axis = resolved.perm[out_axis]
        odd_transposes = resolved.chain.count("Transpose") % 2 == 1
        tensor = ParamTensor(
            id=opaque_id("T", resolved.name),
            name=resolved.name,
            proto=proto,
            source=source,
            role=role,
            out_axis=out_axis if ndim > 1 else None,
            transposed=ndim == 2 and (in_out_layout != odd_transposes),
            chain=resolved.chain,
            quantization=quant,
            overridable=resolved.name in self._graph_inputs,
            folded=_fold_evidence(node) if node.op_type in _CONV_OPS else None,
        )
        self._tensors[tensor.id] = tensor
        return tensor

    def _own_quantization(self, node: NodeProto, slot: int) -> Quantization | None:
        spec = _OWN_QUANT.get(node.op_type)
        if spec is None or spec[0] != slot:
            return None
        scale = self._param_at(node, spec[1]) if spec[1] >= 0 else None
        zero_point = self._param_at(node, spec[2]) if spec[2] is not None else None
        axis = 0 if scale is not None and len(scale.dims) == 1 and scale.dims[0] > 1 else None
        return Quantization(node.op_type, scale, zero_point, axis)

    def _param_at(self, node: NodeProto, slot: int) -> TensorProto | None:
        if slot >= len(node.input) or node.input[slot] not in self._params:
            return None
        return self._params[node.input[slot]][0]

    def _resolve(self, name: str) -> _Resolved | None:
        chain: list[str] = []
        perm: tuple[int, ...] | None = None
        reshaped = False
        quant: Quantization | None = None
        for _ in range(16):  # chains are short; the bound guards against malformed cycles
            if name in self._params:
                return _Resolved(name, tuple(reversed(chain)), perm, reshaped, quant)
            node = self._producers.get(name)
            if node is None or node.op_type not in _PASS_THROUGH or not node.input:
                return None
            chain.append(node.op_type)
            if node.op_type == "Transpose":
                p = _transpose_perm(node)
                perm = p if perm is None or p is None else tuple(p[i] for i in perm)
            elif node.op_type == "Reshape":
                reshaped = True
            elif node.op_type == "DequantizeLinear":
                quant = self._dequantize_linear(node)
            name = node.input[0]
        return None

    def _dequantize_linear(self, node: NodeProto) -> Quantization:
        scale = self._param_at(node, 1)
        zero_point = self._param_at(node, 2)
        axis_attr = next((a.i for a in node.attribute if a.name == "axis"), 1)
        per_channel = scale is not None and len(scale.dims) == 1 and int(scale.dims[0]) > 1
        return Quantization("DequantizeLinear", scale, zero_point, int(axis_attr) if per_channel else None)


def _consumer_out_axis(node: NodeProto, slot: int, ndim: int) -> tuple[int | None, bool]:
    """Output-channel axis in the layout the consumer sees, and whether that layout is [in, out]."""
    op = node.op_type
    if op in ("Conv", "QLinearConv") and slot in (1, 3):
        return 0, False
    if op == "ConvTranspose" and slot == 1:
        return 1, False
    if op in ("Gemm", "QGemm") and slot in (1, 3):
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return (0, False) if trans_b else (1, True)
    if op in ("MatMul", "QLinearMatMul", "MatMulInteger"):
        if slot == 0:
            return max(ndim - 2, 0), False
        return ndim - 1, True
    if op == "Gather":
        return 0, False
    return None, False


def _transpose_perm(node: NodeProto) -> tuple[int, ...] | None:
    for attr in node.attribute:
        if attr.name == "perm":
            return tuple(int(i) for i in attr.ints)
    return None


def _constant_value(node: NodeProto) -> TensorProto | None:
    for attr in node.attribute:
        if attr.name == "value" and attr.type == AttributeProto.TENSOR:
            copy = TensorProto()
            copy.CopyFrom(attr.t)
            return copy
        if attr.name == "value_float":
            return helper.make_tensor("", TensorProto.FLOAT, [], [attr.f])
        if attr.name == "value_floats":
            return helper.make_tensor("", TensorProto.FLOAT, [len(attr.floats)], list(attr.floats))
    return None


def _metadata(node: NodeProto) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def _module_path(node: NodeProto) -> str:
    scopes = _metadata(node).get("pkg.torch.onnx.name_scopes")
    if scopes:
        try:
            parsed = ast.literal_eval(scopes)
        except (ValueError, SyntaxError):
            parsed = None
        if isinstance(parsed, list) and len(parsed) >= 2:
            return str(parsed[-2])
    if node.name.startswith("/"):
        return ".".join(part for part in node.name.split("/")[1:-1] if part)
    return ""


def _fold_evidence(node: NodeProto) -> dict[str, Any] | None:
    rule = _metadata(node).get("pkg.onnxscript.rewriter.rule_name", "")
    if "BatchNorm" in rule:
        return {"from": ["BatchNormalization"], "evidence": rule}
    return None


def _attribute_value(attr: AttributeProto) -> Any:
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, Iterable) and not isinstance(value, str):
        items = list(value)
        if all(isinstance(v, int | float | bytes | str) for v in items):
            return [v.decode(errors="replace") if isinstance(v, bytes) else v for v in items]
        return f"<{len(items)} items>"
    if isinstance(value, int | float | str):
        return value
    return f"<{type(value).__name__}>"
