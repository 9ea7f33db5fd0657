"""A compatibility corpus: generated ONNX models that reproduce what other exporters and frameworks produce.

Each family is one thing our own exports never do: weights in Constant nodes with exporter-named
dynamic dimensions, weights inside If / Loop / Scan bodies (nested once), 0-d scalar inputs and a
recurrent state, a batch axis that is not first, a front end that needs a minimum input length,
fp16 weights and I/O, int8 QDQ and QLinear layers, external data, tied weights, opsets 11 to 21, and
a TF-style NHWC convolution behind Transposes.

Every entry knows how to make valid inputs for any batch size and which tensors are its parameters,
with their values as the model computes with them (dequantized where the model dequantizes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class Entry:
    name: str
    model: onnx.ModelProto
    inputs: Callable[[int, int], Feeds]
    """(batch, seed) -> valid inputs."""
    parameters: dict[str, np.ndarray]
    """Parameter tensor name -> the values the model computes with (float64)."""
    external_data: bool = False
    notes: str = ""
    tags: frozenset[str] = field(default_factory=frozenset)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _w(rng: np.random.Generator, *shape: int, dtype: type = np.float32) -> np.ndarray:
    return (rng.standard_normal(shape) / np.sqrt(shape[-1] if len(shape) > 1 else 1)).astype(dtype)


def _model(graph: onnx.GraphProto, opset: int = 17, ir_version: int | None = None) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="compat-corpus")
    if ir_version is not None:
        model.ir_version = ir_version
    onnx.checker.check_model(model, full_check=True)
    return model


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=f"{name}_node", value=numpy_helper.from_array(value, name))


def _info(name: str, elem: int, shape: list[int | str] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _f64(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: np.asarray(v, dtype=np.float64) for name, v in values.items()}


# --------------------------------------------------------------------------------------------- families


def constant_weights() -> Entry:
    """A Paddle2ONNX-style CNN: every weight a Constant node, dimensions named p2o.DynamicDimension.*."""
    rng = _rng(1)
    params = {"conv_w": _w(rng, 4, 3, 3, 3), "conv_b": _w(rng, 4), "fc_w": _w(rng, 4, 2), "fc_b": _w(rng, 2)}
    dim = "p2o.DynamicDimension.0"
    nodes = [_const(n, v) for n, v in params.items()] + [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "fc_w"], ["m"]),
        helper.make_node("Add", ["m", "fc_b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "constant_weights",
        [_info("x", TensorProto.FLOAT, [dim, 3, "p2o.DynamicDimension.1", "p2o.DynamicDimension.2"])],
        [_info("y", TensorProto.FLOAT, [dim, 2])],
    )

    def inputs(batch: int, seed: int) -> Feeds:
        return {"x": _rng(seed).standard_normal((batch, 3, 8, 8)).astype(np.float32)}

    return Entry("constant_weights", _model(graph), inputs, _f64(params))


def _branch(tag: str, weight: np.ndarray, bias: np.ndarray | None, source: str, out: str) -> onnx.GraphProto:
    nodes = [_const(f"{tag}_w", weight), helper.make_node("MatMul", [source, f"{tag}_w"], [f"{tag}_m"])]
    last = f"{tag}_m"
    if bias is not None:
        nodes += [_const(f"{tag}_b", bias), helper.make_node("Add", [last, f"{tag}_b"], [f"{tag}_a"])]
        last = f"{tag}_a"
    nodes.append(helper.make_node("Identity", [last], [out]))
    return helper.make_graph(nodes, tag, [], [_info(out, TensorProto.FLOAT, None)])


def if_weights() -> Entry:
    """An If whose two branches hold their weights as Constants; the MatMul weights are identical."""
    rng = _rng(2)
    shared = _w(rng, 4, 4)
    else_bias = _w(rng, 4)
    then_branch = _branch("then", shared, None, "x", "then_y")
    else_branch = _branch("else", shared.copy(), else_bias, "x", "else_y")
    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"], then_branch=then_branch, else_branch=else_branch)],
        "if_weights",
        [_info("x", TensorProto.FLOAT, ["batch", 4]), _info("flag", TensorProto.BOOL, [])],
        [_info("y", TensorProto.FLOAT, ["batch", 4])],
    )

    def inputs(batch: int, seed: int) -> Feeds:
        return {"x": _rng(seed).standard_normal((batch, 4)).astype(np.float32), "flag": np.array(seed % 2 == 0)}

    return Entry(
        "if_weights", _model(graph), inputs, _f64({"then_w": shared, "else_w": shared, "else_b": else_bias}),
        tags=frozenset({"subgraph"}),
    )  # fmt: skip


def loop_with_if() -> Entry:
    """A Loop (3 steps) whose body multiplies by a body initializer and holds an If (nested once)."""
    rng = _rng(3)
    step_w = _w(rng, 6, 6)
    even_w, odd_w = _w(rng, 6, 6), _w(rng, 6, 6)
    even = _branch("even", even_w, None, "h_in", "even_y")
    odd = _branch("odd", odd_w, None, "h_in", "odd_y")
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["h_in", "step_w"], ["h_step"]),
            helper.make_node("Tanh", ["h_step"], ["h_act"]),
            helper.make_node("Mod", ["i", "two"], ["parity"]),
            helper.make_node("Equal", ["parity", "zero"], ["is_even"]),
            helper.make_node("If", ["is_even"], ["h_branch"], then_branch=even, else_branch=odd),
            helper.make_node("Add", ["h_act", "h_branch"], ["h_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "loop_body",
        [_info("i", TensorProto.INT64, []), _info("cond_in", TensorProto.BOOL, []), _info("h_in", TensorProto.FLOAT, None)],
        [_info("cond_out", TensorProto.BOOL, []), _info("h_out", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(step_w, "step_w"),
            numpy_helper.from_array(np.array(2, np.int64), "two"),
            numpy_helper.from_array(np.array(0, np.int64), "zero"),
        ],
    )  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "keep_going", "x"], ["y"], body=body)],
        "loop_with_if",
        [_info("x", TensorProto.FLOAT, ["batch", 6])],
        [_info("y", TensorProto.FLOAT, ["batch", 6])],
        [numpy_helper.from_array(np.array(3, np.int64), "trips"), numpy_helper.from_array(np.array(True), "keep_going")],
    )

    def inputs(batch: int, seed: int) -> Feeds:
        return {"x": _rng(seed).standard_normal((batch, 6)).astype(np.float32)}

    params = {"step_w": step_w, "even_w": even_w, "odd_w": odd_w}
    return Entry("loop_with_if", _model(graph), inputs, _f64(params), tags=frozenset({"subgraph"}))


def scan_rnn() -> Entry:
    """An Elman RNN as a Scan over time, weights in the body; sequence-first [T, batch, F], state [batch, H]."""
    rng = _rng(4)
    wx, wh = _w(rng, 5, 7), _w(rng, 7, 7)
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["x_t", "wx"], ["a"]),
            helper.make_node("MatMul", ["h_prev", "wh"], ["b"]),
            helper.make_node("Add", ["a", "b"], ["s"]),
            helper.make_node("Tanh", ["s"], ["h_next"]),
            helper.make_node("Identity", ["h_next"], ["y_t"]),
        ],
        "scan_body",
        [_info("h_prev", TensorProto.FLOAT, ["batch", 7]), _info("x_t", TensorProto.FLOAT, ["batch", 5])],
        [_info("h_next", TensorProto.FLOAT, ["batch", 7]), _info("y_t", TensorProto.FLOAT, ["batch", 7])],
        [numpy_helper.from_array(wx, "wx"), numpy_helper.from_array(wh, "wh")],
    )
    graph = helper.make_graph(
        [helper.make_node("Scan", ["h0", "seq"], ["h_last", "ys"], body=body, num_scan_inputs=1)],
        "scan_rnn",
        [_info("h0", TensorProto.FLOAT, ["batch", 7]), _info("seq", TensorProto.FLOAT, ["time", "batch", 5])],
        [_info("h_last", TensorProto.FLOAT, ["batch", 7]), _info("ys", TensorProto.FLOAT, ["time", "batch", 7])],
    )

    def inputs(batch: int, seed: int) -> Feeds:
        rng = _rng(seed)
        steps = 3 + seed % 3  # requests of different lengths
        return {
            "h0": rng.standard_normal((batch, 7)).astype(np.float32),
            "seq": rng.standard_normal((steps, batch, 5)).astype(np.float32),
        }

    return Entry("scan_rnn", _model(graph), inputs, _f64({"wx": wx, "wh": wh}), tags=frozenset({"subgraph"}))


def scalar_and_state() -> Entry:
    """A streaming voice-activity-style model: audio [batch, 64], state [2, batch, 16], sample rate a 0-d INT64."""
    rng = _rng(5)
    w_in, w_out = _w(rng, 64, 16), _w(rng, 16, 1)
    nodes = [
        helper.make_node("MatMul", ["audio", "w_in"], ["feat"]),
        helper.make_node("Gather", ["state", "layer0"], ["h_prev"], axis=0),
        helper.make_node("Add", ["feat", "h_prev"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["h"]),
        helper.make_node("Cast", ["sr"], ["sr_f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["sr_f", "base_rate"], ["rate"]),
        helper.make_node("MatMul", ["h", "w_out"], ["logit"]),
        helper.make_node("Mul", ["logit", "rate"], ["scaled"]),
        helper.make_node("Sigmoid", ["scaled"], ["prob"]),
        helper.make_node("Unsqueeze", ["h", "axis0"], ["h1"]),
        helper.make_node("Concat", ["h1", "h1"], ["state_out"], axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "scalar_and_state",
        [
            _info("audio", TensorProto.FLOAT, ["batch", 64]),
            _info("state", TensorProto.FLOAT, [2, "batch", 16]),
            _info("sr", TensorProto.INT64, []),
        ],
        [_info("prob", TensorProto.FLOAT, ["batch", 1]), _info("state_out", TensorProto.FLOAT, [2, "batch", 16])],
        [
            numpy_helper.from_array(w_in, "w_in"),
            numpy_helper.from_array(w_out, "w_out"),
            numpy_helper.from_array(np.array(0, np.int64), "layer0"),
            numpy_helper.from_array(np.array(16000.0, np.float32), "base_rate"),
            numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        ],
    )

    def inputs(batch: int, seed: int) -> Feeds:
        rng = _rng(seed)
        return {
            "audio": rng.standard_normal((batch, 64)).astype(np.float32),
            "state": rng.standard_normal((2, batch, 16)).astype(np.float32),
            "sr": np.array(8000 if seed % 2 else 16000, dtype=np.int64),
        }

    return Entry("scalar_and_state", _model(graph), inputs, _f64({"w_in": w_in, "w_out": w_out}))


def reflect_pad() -> Entry:
    """An audio front end: reflect padding of 32 samples, so inputs must be longer than 32 (length 1 fails)."""
    rng = _rng(6)
    conv_w, head_w = _w(rng, 4, 1, 9), _w(rng, 4, 2)
    nodes = [
        helper.make_node("Unsqueeze", ["wave", "axis1"], ["wave3"]),
        helper.make_node("Pad", ["wave3", "pads"], ["padded"], mode="reflect"),
        helper.make_node("Conv", ["padded", "conv_w"], ["c"], strides=[4]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("ReduceMean", ["r", "axis2"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", "head_w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "reflect_pad",
        [_info("wave", TensorProto.FLOAT, ["batch", "samples"])],
        [_info("y", TensorProto.FLOAT, ["batch", 2])],
        [
            numpy_helper.from_array(conv_w, "conv_w"),
            numpy_helper.from_array(head_w, "head_w"),
            numpy_helper.from_array(np.array([1], np.int64), "axis1"),
            numpy_helper.from_array(np.array([2], np.int64), "axis2"),
            numpy_helper.from_array(np.array([0, 0, 32, 0, 0, 32], np.int64), "pads"),
        ],
    )

    def inputs(batch: int, seed: int) -> Feeds:
        return {"wave": _rng(seed).standard_normal((batch, 400)).astype(np.float32)}

    return Entry("reflect_pad", _model(graph, opset=18), inputs, _f64({"conv_w": conv_w, "head_w": head_w}))


def fp16() -> Entry:
    """fp16 weights, fp16 inputs and outputs."""
    rng = _rng(7)
    w, b = _w(rng, 8, 8, dtype=np.float16), _w(rng, 8, dtype=np.float16)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"]),
            helper.make_node("Add", ["m", "b"], ["a"]),
            helper.make_node("Relu", ["a"], ["y"]),
        ],
        "fp16",
        [_info("x", TensorProto.FLOAT16, ["batch", 8])],
        [_info("y", TensorProto.FLOAT16, ["batch", 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )

    def inputs(batch: int, seed: int) -> Feeds:
        return {"x": _rng(seed).standard_normal((batch, 8)).astype(np.float16)}

    return Entry("fp16", _model(graph), inputs, _f64({"w": w, "b": b}))


def qdq_int8() -> Entry:
    """int8 QDQ: a per-channel quantized weight behind DequantizeLinear, activations quantized too."""
    rng = _rng(8)
    real = _w(rng, 8, 4)
    scale = (np.abs(real).max(axis=0) / 127).astype(np.float32)
    q = np.clip(np.round(real / scale), -127, 127).astype(np.int8)
    zero = np.zeros(4, np.int8)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["wd"], axis=1),
        helper.make_node("MatMul", ["xd", "wd"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq_int8",
        [_info("x", TensorProto.FLOAT, ["batch", 8])],
        [_info("y", TensorProto.FLOAT, ["batch", 4])],
        [
            numpy_helper.from_array(q, "w_q"),
            numpy_helper.from_array(scale, "w_scale"),
            numpy_helper.from_array(zero, "w_zero"),
            numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
            numpy_helper.from_array(np.array(0, np.int8), "x_zero"),
        ],
    )

    def inputs(batch: int, seed: int) -> Feeds:
        return {"x": _rng(seed).standard_normal((batch, 8)).astype(np.float32)}

    return Entry("qdq_int8", _model(graph, opset=13), inputs, _f64({"w_q": q.astype(np.float64) * scale}))


def qlinear() -> Entry:
    """QLinearConv (with an int32 bias) then QLinearMatMul, uint8 activations and int8 weights."""
    rng = _rng(9)
    x_scale, x_zero = np.float32(0.02), np.uint8(128)
    conv_real = _w(rng, 2, 1, 3, 3)
    conv_scale = (np.abs(conv_real).reshape(2, -1).max(axis=1) / 127).astype(np.float32)
    conv_q = np.clip(np.round(conv_real / conv_scale[:, None, None, None]), -127, 127).astype(np.int8)
    bias_q = np.round(_w(rng, 2) / (x_scale * conv_scale)).astype(np.int32)
    c_scale, c_zero = np.float32(0.03), np.uint8(128)
    mm_real = _w(rng, 32, 3)
    mm_scale = np.float32(np.abs(mm_real).max() / 127)
    mm_q = np.clip(np.round(mm_real / mm_scale), -127, 127).astype(np.int8)
    y_scale, y_zero = np.float32(0.05), np.uint8(128)
    init = {
        "x_scale": np.array(x_scale), "x_zero": np.array(x_zero),
        "conv_q": conv_q, "conv_scale": conv_scale, "conv_zero": np.zeros(2, np.int8), "conv_bias": bias_q,
        "c_scale": np.array(c_scale), "c_zero": np.array(c_zero),
        "mm_q": mm_q, "mm_scale": np.array(mm_scale), "mm_zero": np.array(0, np.int8),
        "y_scale": np.array(y_scale), "y_zero": np.array(y_zero), "flat_shape": np.array([0, -1], np.int64),
    }  # fmt: skip
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"]),
        helper.make_node(
            "QLinearConv",
            ["xq", "x_scale", "x_zero", "conv_q", "conv_scale", "conv_zero", "c_scale", "c_zero", "conv_bias"],
            ["cq"],
            pads=[1, 1, 1, 1],
        ),
        helper.make_node("Reshape", ["cq", "flat_shape"], ["fq"]),
        helper.make_node(
            "QLinearMatMul", ["fq", "c_scale", "c_zero", "mm_q", "mm_scale", "mm_zero", "y_scale", "y_zero"], ["yq"]
        ),
        helper.make_node("DequantizeLinear", ["yq", "y_scale", "y_zero"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qlinear",
        [_info("x", TensorProto.FLOAT, ["batch", 1, 4, 4])],
        [_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(v, k) for k, v in init.items()],
    )

    def inputs(batch: int, seed: int) -> Feeds:
        return {"x": (_rng(seed).standard_normal((batch, 1, 4, 4)) * 0.5).astype(np.float32)}

    params = {
        "conv_q": conv_q.astype(np.float64) * conv_scale[:, None, None, None],
        "conv_bias": bias_q.astype(np.float64) * (np.float64(x_scale) * conv_scale.astype(np.float64)),
        "mm_q": mm_q.astype(np.float64) * np.float64(mm_scale),
    }
    return Entry("qlinear", _model(graph, opset=13), inputs, params)


def external_data() -> Entry:
    """An MLP whose weights live in an external data file beside the model."""
    rng = _rng(10)
    params = {"ext_w1": _w(rng, 16, 32), "ext_b1": _w(rng, 32), "ext_w2": _w(rng, 32, 4)}
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "ext_w1"], ["h"]),
            helper.make_node("Add", ["h", "ext_b1"], ["hb"]),
            helper.make_node("Relu", ["hb"], ["r"]),
            helper.make_node("MatMul", ["r", "ext_w2"], ["y"]),
        ],
        "external_data",
        [_info("x", TensorProto.FLOAT, ["batch", 16])],
        [_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(v, k) for k, v in params.items()],
    )

    def inputs(batch: int, seed: int) -> Feeds:
        return {"x": _rng(seed).standard_normal((batch, 16)).astype(np.float32)}

    return Entry("external_data", _model(graph), inputs, _f64(params), external_data=True)


def tied_embedding() -> Entry:
    """A language-model head whose output projection is the transposed input embedding (one tensor, two uses)."""
    rng = _rng(11)
    table = _w(rng, 50, 12)
    nodes = [
        helper.make_node("Gather", ["embedding", "ids"], ["e"], axis=0),
        helper.make_node("ReduceMean", ["e", "axis1"], ["h"], keepdims=0),
        helper.make_node("Transpose", ["embedding"], ["unembedding"], perm=[1, 0]),
        helper.make_node("MatMul", ["h", "unembedding"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tied_embedding",
        [_info("ids", TensorProto.INT64, ["batch", "tokens"])],
        [_info("logits", TensorProto.FLOAT, ["batch", 50])],
        [numpy_helper.from_array(table, "embedding"), numpy_helper.from_array(np.array([1], np.int64), "axis1")],
    )

    def inputs(batch: int, seed: int) -> Feeds:
        return {"ids": _rng(seed).integers(0, 50, size=(batch, 6)).astype(np.int64)}

    return Entry("tied_embedding", _model(graph, opset=18), inputs, _f64({"embedding": table}))


def opset_mlp(opset: int) -> Entry:
    """The same two-layer Gemm MLP at one opset (ir_version chosen as that opset's exporters wrote it)."""
    rng = _rng(100 + opset)
    params = {"gemm_w1": _w(rng, 8, 4), "gemm_b1": _w(rng, 8), "gemm_w2": _w(rng, 3, 8), "gemm_b2": _w(rng, 3)}
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "gemm_w1", "gemm_b1"], ["h"], transB=1),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("Gemm", ["r", "gemm_w2", "gemm_b2"], ["y"], transB=1),
        ],
        f"mlp_opset{opset}",
        [_info("x", TensorProto.FLOAT, ["batch", 4])],
        [_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(v, k) for k, v in params.items()],
    )
    ir = {11: 6, 12: 7, 13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10}[opset]

    def inputs(batch: int, seed: int) -> Feeds:
        return {"x": _rng(seed).standard_normal((batch, 4)).astype(np.float32)}

    return Entry(f"mlp_opset{opset}", _model(graph, opset=opset, ir_version=ir), inputs, _f64(params))


def nhwc_conv() -> Entry:
    """A TensorFlow-style convolution: NHWC in and out, Transposes around an NCHW Conv."""
    rng = _rng(12)
    conv_w, conv_b = _w(rng, 4, 3, 3, 3), _w(rng, 4)
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("Conv", ["nchw", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("Transpose", ["r"], ["features"], perm=[0, 2, 3, 1]),
        ],
        "nhwc_conv",
        [_info("image", TensorProto.FLOAT, ["batch", 8, 8, 3])],
        [_info("features", TensorProto.FLOAT, ["batch", 8, 8, 4])],
        [numpy_helper.from_array(conv_w, "conv_w"), numpy_helper.from_array(conv_b, "conv_b")],
    )

    def inputs(batch: int, seed: int) -> Feeds:
        return {"image": _rng(seed).standard_normal((batch, 8, 8, 3)).astype(np.float32)}

    return Entry("nhwc_conv", _model(graph), inputs, _f64({"conv_w": conv_w, "conv_b": conv_b}))


def corpus() -> list[Entry]:
    return [
        constant_weights(),
        if_weights(),
        loop_with_if(),
        scan_rnn(),
        scalar_and_state(),
        reflect_pad(),
        fp16(),
        qdq_int8(),
        qlinear(),
        external_data(),
        tied_embedding(),
        nhwc_conv(),
        *[opset_mlp(opset) for opset in range(11, 22)],
    ]


def write_repository(root: Path, entries: list[Entry]) -> Path:
    """Each entry as ``root/<name>/1/model.onnx`` (external data in ``weights.bin`` beside it)."""
    for entry in entries:
        folder = root / entry.name / "1"
        folder.mkdir(parents=True, exist_ok=True)
        if entry.external_data:
            onnx.save_model(
                entry.model, folder / "model.onnx", save_as_external_data=True, location="weights.bin",
                size_threshold=0, all_tensors_to_one_file=True,
            )  # fmt: skip
        else:
            onnx.save_model(entry.model, folder / "model.onnx")
    return root
