"""Layers and parameter tensors of an ONNX graph, control-flow bodies and model-local functions included.

A layer is a compute node that consumes a parameter tensor in a weight slot. A parameter tensor is
an initializer (dense or sparse) or a Constant node's value, found by following Transpose, Cast,
Identity, Reshape and DequantizeLinear back from the slot. Names are never trusted as module names:
roles come from the consuming op and its input slot.

Subgraphs (``If`` branches, ``Loop`` / ``Scan`` bodies, nested) see the names of the graphs around
them, so a weight is looked up from the inside out; a subgraph's own inputs hide outer names. A
tensor that lives inside a subgraph is named by its place, e.g. ``If_0/then_branch/w`` (the node's
name, or its op type and ordinal when it has none, then the attribute holding the body). A
model-local function's constants are one tensor each (``functions/<domain>.<name>/...``) however
often it is called; each call is its own set of layers, its formal inputs bound to the call's
arguments.
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
from onnx import AttributeProto, FunctionProto, GraphProto, NodeProto, SparseTensorProto, TensorProto, helper

from service.errors import ModelLoadError
from service.model_files import subgraphs
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
_OP_DOMAINS = frozenset({"", "ai.onnx", "com.microsoft"})
# op -> slot -> (slots whose product is the scale, zero-point slot) for ops that dequantize their own
# integers. An int32 bias is stored in units of input scale x weight scale, with no zero point.
_OWN_QUANT: dict[str, dict[int, tuple[tuple[int, ...], int | None]]] = {
    "QLinearConv": {3: ((4,), 5), 8: ((1, 4), None)},
    "QLinearMatMul": {3: ((4,), 5)},
    "QGemm": {3: ((4,), 5), 6: ((1, 4), None)},
    "MatMulInteger": {1: ((), 3)},
}
_PASS_THROUGH = frozenset({"Transpose", "Cast", "Identity", "Reshape", "DequantizeLinear"})
_CONV_OPS = frozenset({"Conv", "ConvTranspose", "QLinearConv"})
_MAX_CHAIN = 16
_GRAPH_ATTRIBUTES = frozenset({AttributeProto.GRAPH, AttributeProto.GRAPHS})
_MAX_CALL_DEPTH = 8


def opaque_id(prefix: str, name: str) -> str:
    """A URL-safe id that depends on the name only, so it is stable across versions."""
    return prefix + hashlib.blake2b(name.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class Quantization:
    """How stored integers become weights: (q - zero_point) * scale, broadcast along ``axis``; the
    scale is the product of ``scales`` (one for a weight, input x weight scale for an int32 bias)."""

    op: str
    scales: tuple[TensorProto, ...]
    zero_point: TensorProto | None
    axis: int | None


@dataclass(slots=True)
class ParamTensor:
    """One parameter tensor as stored, with what its consumers say about it. ``name`` is unique in the
    model: the stored name, prefixed by its place when it lives in a subgraph or a function."""

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
    place: str = ""
    sparse: SparseTensorProto | None = None

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
    place: str = ""


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
class _Param:
    """A stored tensor where it is defined; ``proto`` holds the dims and type (a sparse tensor's
    values live in ``sparse``)."""

    proto: TensorProto
    source: str
    qualified: str
    place: str
    sparse: SparseTensorProto | None = None


@dataclass(frozen=True, slots=True)
class _Resolved:
    param: _Param
    chain: tuple[str, ...]
    perm: tuple[int, ...] | None
    reshaped: bool
    quantization: Quantization | None


@dataclass(eq=False)
class _Scope:
    """The names one graph (or one function call) defines, and where to look when it does not."""

    place: str
    parent: _Scope | None = None
    params: dict[str, _Param] = field(default_factory=dict)
    producers: dict[str, NodeProto] = field(default_factory=dict)
    hidden: frozenset[str] = frozenset()
    aliases: dict[str, tuple[_Scope, str]] = field(default_factory=dict)

    def find(self, name: str) -> tuple[_Scope, _Param | NodeProto] | None:
        scope: _Scope | None = self
        for _ in range(64):  # aliases and parents are few; the bound guards against malformed models
            if scope is None:
                return None
            if name in scope.params:
                return scope, scope.params[name]
            if name in scope.producers:
                return scope, scope.producers[name]
            if name in scope.aliases:
                scope, name = scope.aliases[name]
                continue
            if name in scope.hidden:
                return None
            scope = scope.parent
        return None

    def qualify(self, name: str) -> str:
        return f"{self.place}/{name}" if self.place else name


def load_graph(model_path: Path) -> WeightGraph:
    """Parse ``model_path`` without reading external data and index its layers."""
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except (OSError, ValueError, DecodeError) as exc:
        raise ModelLoadError(f"cannot parse {model_path.name}: {exc}") from exc
    return build_graph(model, model_path.parent)


def build_graph(model: onnx.ModelProto, directory: Path) -> WeightGraph:
    return _GraphIndexer(model, directory).index()


def _node_labels(nodes: Iterable[NodeProto]) -> list[str]:
    """Each node's name, or its op type and ordinal among that op's unnamed nodes."""
    counts: dict[str, int] = {}
    labels = []
    for node in nodes:
        if node.name:
            labels.append(node.name)
            continue
        index = counts.get(node.op_type, 0)
        counts[node.op_type] = index + 1
        labels.append(f"{node.op_type}_{index}")
    return labels


def _function_place(function: FunctionProto) -> str:
    return f"functions/{function.domain}.{function.name}" if function.domain else f"functions/{function.name}"


class _GraphIndexer:
    def __init__(self, model: onnx.ModelProto, directory: Path) -> None:
        self._model = model
        self._directory = directory
        self._functions = {(f.domain, f.name): f for f in model.functions}
        self._function_scopes: dict[tuple[str, str], _Scope] = {}
        self._called: set[tuple[str, str]] = set()
        self._calling: list[tuple[str, str]] = []
        self._graph_inputs = {i.name for i in model.graph.input}
        self._params: list[_Param] = []
        self._quant_params: set[str] = set()
        self._tensors: dict[str, ParamTensor] = {}
        self._layers: list[Layer] = []

    def index(self) -> WeightGraph:
        main = _Scope("")
        self._visit_graph(self._model.graph, main)
        for key, function in self._functions.items():
            if key not in self._called:  # still list its constants and the layers that use them
                self._visit_function(function, _function_place(function), {})
        self._add_buffers()
        opset = next((o.version for o in self._model.opset_import if o.domain in ("", "ai.onnx")), None)
        producer = {"name": self._model.producer_name, "version": self._model.producer_version}
        return WeightGraph(self._directory, opset, producer, tuple(self._layers), self._tensors)

    # ------------------------------------------------------------------ walking the graphs

    def _define(self, scope: _Scope, nodes: Iterable[NodeProto]) -> None:
        """Register a body's Constant values and node outputs."""
        for node in nodes:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                param = _constant_param(node, scope)
                if param is not None:
                    scope.params[node.output[0]] = param
                    self._params.append(param)
            for out in node.output:
                if out:
                    scope.producers[out] = node

    def _visit_graph(self, graph: GraphProto, scope: _Scope) -> None:
        for tensor in graph.initializer:
            param = _Param(tensor, "initializer", scope.qualify(tensor.name), scope.place)
            scope.params[tensor.name] = param
            self._params.append(param)
        for sparse in graph.sparse_initializer:
            param = _sparse_param(sparse, "sparse_initializer", scope)
            scope.params[sparse.values.name] = param
            self._params.append(param)
        self._define(scope, graph.node)
        self._visit_nodes(graph.node, scope)

    def _visit_nodes(self, nodes: Iterable[NodeProto], scope: _Scope) -> None:
        node_list = list(nodes)
        for node, label in zip(node_list, _node_labels(node_list), strict=True):
            slots = WEIGHT_SLOTS.get(node.op_type) if node.domain in _OP_DOMAINS else None
            if slots is not None:
                self._add_layer(node, label, slots, scope)
            for attribute, body in subgraphs(node):
                inner = _Scope(
                    f"{scope.qualify(label)}/{attribute}",
                    parent=scope,
                    hidden=frozenset(i.name for i in body.input),
                )
                self._visit_graph(body, inner)
            function = self._functions.get((node.domain, node.op_type))
            if function is not None and len(self._calling) < _MAX_CALL_DEPTH:
                key = (function.domain, function.name)
                if key in self._calling:
                    continue  # a malformed, recursive function
                self._called.add(key)
                actual = {formal: (scope, arg) for formal, arg in zip(function.input, node.input, strict=False) if arg}
                self._calling.append(key)
                self._visit_function(function, scope.qualify(label), actual)
                self._calling.pop()

    def _visit_function(self, function: FunctionProto, place: str, actual: dict[str, tuple[_Scope, str]]) -> None:
        key = (function.domain, function.name)
        own = self._function_scopes.get(key)
        if own is None:  # constants are defined once per function, whatever the number of calls
            own = _Scope(_function_place(function))
            self._define(own, function.node)
            self._function_scopes[key] = own
        call = _Scope(
            place,
            params=own.params,
            producers=own.producers,
            hidden=frozenset(function.input),
            aliases=actual,
        )
        self._visit_nodes(function.node, call)

    # ------------------------------------------------------------------ layers and tensors

    def _add_layer(self, node: NodeProto, label: str, slots: dict[int, str], scope: _Scope) -> None:
        layer_id = f"L{len(self._layers):04d}"
        members = self._layer_members(node, slots, layer_id, scope)
        if not members:
            return
        self._layers.append(
            Layer(
                id=layer_id,
                op_type=node.op_type,
                node=scope.qualify(label) if scope.place else node.name,
                module_path=_module_path(node),
                attributes={a.name: _attribute_value(a) for a in node.attribute if a.type not in _GRAPH_ATTRIBUTES},
                tensors=tuple(members),
                place=scope.place,
            )
        )

    def _add_buffers(self) -> None:
        """Float parameters no layer consumes (normalisation constants, running statistics used by
        plain arithmetic): tensors without a layer, so stats and diffs still cover them."""
        claimed = {t.name for t in self._tensors.values()} | self._quant_params
        for param in self._params:
            proto = param.proto
            if param.qualified in claimed or proto.data_type not in FLOAT_TYPES or not len(proto.dims):
                continue
            claimed.add(param.qualified)
            tensor = ParamTensor(
                id=opaque_id("T", param.qualified),
                name=param.qualified,
                proto=proto,
                source=param.source,
                role="buffer",
                out_axis=None,
                transposed=False,
                chain=(),
                quantization=None,
                overridable=self._overridable(param),
                place=param.place,
                sparse=param.sparse,
            )
            self._tensors[tensor.id] = tensor

    def _overridable(self, param: _Param) -> bool:
        """A main-graph initializer also listed as a graph input can be replaced at run time."""
        return param.place == "" and param.source == "initializer" and param.qualified in self._graph_inputs

    def _layer_members(self, node: NodeProto, slots: dict[int, str], layer_id: str, scope: _Scope) -> list[LayerTensor]:
        members: list[LayerTensor] = []
        for slot, role in slots.items():
            if slot >= len(node.input) or not node.input[slot]:
                continue
            if node.op_type == "MatMul" and members:
                break  # a MatMul has one constant operand at most worth calling a weight
            resolved = self._resolve(node.input[slot], scope)
            if resolved is None:
                continue
            proto = resolved.param.proto
            quant = resolved.quantization or self._own_quantization(node, slot, scope, len(proto.dims))
            if proto.data_type not in FLOAT_TYPES and not (quant and proto.data_type in QUANT_TYPES):
                continue
            tensor = self._tensors.get(opaque_id("T", resolved.param.qualified))
            if tensor is None:
                tensor = self._new_tensor(node, slot, role, resolved, quant)
            tensor.consumers.append(layer_id)
            members.append(LayerTensor(tensor.id, role))
        return members

    def _new_tensor(
        self, node: NodeProto, slot: int, role: str, resolved: _Resolved, quant: Quantization | None
    ) -> ParamTensor:
        param = resolved.param
        ndim = len(param.proto.dims)
        out_axis, in_out_layout = _consumer_out_axis(node, slot, ndim)
        if resolved.reshaped:
            out_axis = None
        elif resolved.perm is not None and out_axis is not None:
            out_axis = resolved.perm[out_axis]
        odd_transposes = resolved.chain.count("Transpose") % 2 == 1
        tensor = ParamTensor(
            id=opaque_id("T", param.qualified),
            name=param.qualified,
            proto=param.proto,
            source=param.source,
            role=role,
            out_axis=out_axis if ndim > 1 else None,
            transposed=ndim == 2 and (in_out_layout != odd_transposes),
            chain=resolved.chain,
            quantization=quant,
            overridable=self._overridable(param),
            folded=_fold_evidence(node) if node.op_type in _CONV_OPS else None,
            place=param.place,
            sparse=param.sparse,
        )
        self._tensors[tensor.id] = tensor
        return tensor

    def _own_quantization(self, node: NodeProto, slot: int, scope: _Scope, ndim: int) -> Quantization | None:
        spec = _OWN_QUANT.get(node.op_type, {}).get(slot)
        if spec is None:
            return None
        scale_slots, zero_slot = spec
        scales = [self._param_at(node, s, scope) for s in scale_slots]
        if any(s is None for s in scales):
            return None  # a scale computed at run time: the integers cannot be turned into weights here
        zero_point = self._param_at(node, zero_slot, scope) if zero_slot is not None else None
        protos = tuple(s.proto for s in scales if s is not None)
        self._quant_params.update(s.qualified for s in scales if s is not None)
        if zero_point is not None:
            self._quant_params.add(zero_point.qualified)
        per_channel = any(_numel(p) > 1 for p in protos) or (zero_point is not None and _numel(zero_point.proto) > 1)
        axis = _own_quant_axis(node, slot, ndim) if per_channel else None
        return Quantization(node.op_type, protos, zero_point.proto if zero_point is not None else None, axis)

    def _param_at(self, node: NodeProto, slot: int, scope: _Scope) -> _Param | None:
        if slot >= len(node.input) or not node.input[slot]:
            return None
        found = scope.find(node.input[slot])
        return found[1] if found is not None and isinstance(found[1], _Param) else None

    def _resolve(self, name: str, scope: _Scope) -> _Resolved | None:
        chain: list[str] = []
        perm: tuple[int, ...] | None = None
        reshaped = False
        quant: Quantization | None = None
        for _ in range(_MAX_CHAIN):  # chains are short; the bound guards against malformed cycles
            found = scope.find(name)
            if found is None:
                return None
            where, item = found
            if isinstance(item, _Param):
                return _Resolved(item, tuple(reversed(chain)), perm, reshaped, quant)
            node = item
            if node.op_type not in _PASS_THROUGH or not node.input:
                return None
            chain.append(node.op_type)
            if node.op_type == "Transpose":
                p = _transpose_perm(node)
                perm = p if perm is None or p is None else tuple(p[i] for i in perm)
            elif node.op_type == "Reshape":
                reshaped = True
            elif node.op_type == "DequantizeLinear":
                quant = self._dequantize_linear(node, where)
            name, scope = node.input[0], where
        return None

    def _dequantize_linear(self, node: NodeProto, scope: _Scope) -> Quantization:
        scale = self._param_at(node, 1, scope)
        zero_point = self._param_at(node, 2, scope)
        for param in (scale, zero_point):
            if param is not None:
                self._quant_params.add(param.qualified)
        axis_attr = next((a.i for a in node.attribute if a.name == "axis"), 1)
        per_channel = scale is not None and _numel(scale.proto) > 1
        return Quantization(
            "DequantizeLinear",
            (scale.proto,) if scale is not None else (),
            zero_point.proto if zero_point is not None else None,
            int(axis_attr) if per_channel else None,
        )


def _numel(proto: TensorProto) -> int:
    count = 1
    for dim in proto.dims:
        count *= int(dim)
    return count


def _own_quant_axis(node: NodeProto, slot: int, ndim: int) -> int:
    """The axis a per-channel scale runs along: output channels of a conv weight, output columns of
    a MatMul weight [K, N], Gemm's B by ``transB``; a bias is one value per output channel."""
    if ndim <= 1:
        return 0
    if node.op_type == "QLinearConv":
        return 0
    if node.op_type == "QGemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return ndim - 1


def _sparse_param(sparse: SparseTensorProto, source: str, scope: _Scope) -> _Param:
    header = TensorProto(name=sparse.values.name, data_type=sparse.values.data_type, dims=list(sparse.dims))
    return _Param(header, source, scope.qualify(sparse.values.name), scope.place, sparse)


def _constant_param(node: NodeProto, scope: _Scope) -> _Param | None:
    name = node.output[0] if node.output else ""
    if not name:
        return None
    for attr in node.attribute:
        if attr.name == "value" and attr.type == AttributeProto.TENSOR:
            copy = TensorProto()
            copy.CopyFrom(attr.t)
            copy.name = name
            return _Param(copy, "constant", scope.qualify(name), scope.place)
        if attr.name == "sparse_value" and attr.type == AttributeProto.SPARSE_TENSOR:
            sparse = SparseTensorProto()
            sparse.CopyFrom(attr.sparse_tensor)
            sparse.values.name = name
            return _sparse_param(sparse, "constant", scope)
        if attr.name == "value_float":
            return _Param(helper.make_tensor(name, TensorProto.FLOAT, [], [attr.f]), "constant", scope.qualify(name),
                          scope.place)
        if attr.name == "value_floats":
            tensor = helper.make_tensor(name, TensorProto.FLOAT, [len(attr.floats)], list(attr.floats))
            return _Param(tensor, "constant", scope.qualify(name), scope.place)
    return None


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
