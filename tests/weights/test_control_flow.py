"""Every parameter of a graph: Constant nodes, sparse initializers, tensors inside If / Loop / Scan
bodies (nested) and model-local functions, each listed once with its place, numpy-exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.weights.graph import ParamTensor, WeightGraph, load_graph
from service.weights.tensor_stats import tensor_stats
from service.weights.values import tensor_values
from tests.weights.conftest import init
from tests.weights.reference import assert_stats_match

RNG = np.random.default_rng(11)
SHARED_W = RNG.normal(size=(16, 12)).astype(np.float32)
OUTER_B = RNG.normal(size=12).astype(np.float32)
LOOP_W = RNG.normal(size=(3, 3)).astype(np.float32)
NESTED_W = RNG.normal(size=(3, 3)).astype(np.float32)
SCAN_W = RNG.normal(size=(3, 3)).astype(np.float32)
FN_W = RNG.normal(size=(3, 5)).astype(np.float32)
ARG_W = RNG.normal(size=(5, 2)).astype(np.float32)


def _const(output: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [output], value=numpy_helper.from_array(array, output))


def _if_model() -> onnx.ModelProto:
    """y = If(cond): then x·W (+ b from the outer graph), else relu(x·W'), W' = W stored again."""
    then_branch = helper.make_graph(
        [_const("then_w", SHARED_W), helper.make_node("MatMul", ["x", "then_w"], ["t0"]),
         helper.make_node("Add", ["t0", "outer_b"], ["then_y"])],
        "then", [], [helper.make_tensor_value_info("then_y", TensorProto.FLOAT, ["N", 12])],
    )
    else_branch = helper.make_graph(
        [_const("else_w", SHARED_W.copy()), helper.make_node("MatMul", ["x", "else_w"], ["e0"]),
         helper.make_node("Relu", ["e0"], ["else_y"])],
        "else", [], [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, ["N", 12])],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch)],
        "if_model",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 12])],
        [init("outer_b", OUTER_B)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _loop_scan_model() -> onnx.ModelProto:
    """A Loop whose body multiplies by a Constant weight and holds a nested If with another weight,
    then a Scan whose body carries its own initializer."""
    nested_then = helper.make_graph(
        [_const("nested_w", NESTED_W), helper.make_node("MatMul", ["h0", "nested_w"], ["n_y"])],
        "nested_then", [], [helper.make_tensor_value_info("n_y", TensorProto.FLOAT, [1, 3])],
    )
    nested_else = helper.make_graph(
        [helper.make_node("Identity", ["h0"], ["n_e"])],
        "nested_else", [], [helper.make_tensor_value_info("n_e", TensorProto.FLOAT, [1, 3])],
    )
    body = helper.make_graph(
        [
            _const("loop_w", LOOP_W),
            helper.make_node("MatMul", ["h_in", "loop_w"], ["h0"]),
            helper.make_node("If", ["flag"], ["h1"], then_branch=nested_then, else_branch=nested_else),
            helper.make_node("Identity", ["c_in"], ["c_out"]),
        ],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h1", TensorProto.FLOAT, [1, 3])],
    )
    scan_body = helper.make_graph(
        [helper.make_node("MatMul", ["s_in", "scan_w"], ["s_mm"]), helper.make_node("Add", ["s_mm", "row"], ["s_out"]),
         helper.make_node("Identity", ["s_out"], ["s_copy"])],
        "scan_body",
        [helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [1, 3]),
         helper.make_tensor_value_info("row", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [1, 3]),
         helper.make_tensor_value_info("s_copy", TensorProto.FLOAT, [1, 3])],
        [init("scan_w", SCAN_W)],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Loop", ["trip", "", "h"], ["h_final"], body=body),
            helper.make_node("Scan", ["h_final", "rows"], ["s_final", "s_all"], body=scan_body, num_scan_inputs=1),
        ],
        "loop_scan",
        [helper.make_tensor_value_info("trip", TensorProto.INT64, []),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 3]),
         helper.make_tensor_value_info("rows", TensorProto.FLOAT, [2, 1, 3])],
        [helper.make_tensor_value_info("s_final", TensorProto.FLOAT, [1, 3]),
         helper.make_tensor_value_info("s_all", TensorProto.FLOAT, [2, 1, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _function_model() -> onnx.ModelProto:
    """A model-local function with a Constant weight, called twice; its second MatMul takes a weight
    the caller passes in (a main-graph initializer)."""
    function = helper.make_function(
        "local",
        "Block",
        ["inp", "proj"],
        ["out"],
        [_const("fn_w", FN_W), helper.make_node("MatMul", ["inp", "fn_w"], ["mid"]),
         helper.make_node("MatMul", ["mid", "proj"], ["out"])],
        [helper.make_opsetid("", 18)],
    )
    graph = helper.make_graph(
        [helper.make_node("Block", ["x", "arg_w"], ["a"], domain="local", name="first"),
         helper.make_node("MatMul", ["a", "back"], ["a2"]),
         helper.make_node("Block", ["a2", "arg_w"], ["y"], domain="local", name="second")],
        "fn_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [init("arg_w", ARG_W), init("back", RNG.normal(size=(2, 3)).astype(np.float32))],
    )
    return helper.make_model(
        graph, functions=[function],
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)],
    )


def _save(model: onnx.ModelProto, path: Path, full_check: bool = True) -> Path:
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=full_check)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _tensor(graph: WeightGraph, name: str) -> ParamTensor:
    found = graph.tensor_by_name(name)
    assert found is not None, (name, [t.name for t in graph.tensors.values()])
    return found


def _consumer_ops(graph: WeightGraph, tensor: ParamTensor) -> list[str]:
    layers = {layer.id: layer for layer in graph.layers}
    return [layers[c].op_type for c in tensor.consumers]


def test_if_branches_hold_their_weights_with_their_place(tmp_path: Path) -> None:
    path = _save(_if_model(), tmp_path / "if" / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = RNG.normal(size=(2, 16)).astype(np.float32)
    np.testing.assert_allclose(session.run(None, {"cond": np.array(True), "x": x})[0], x @ SHARED_W + OUTER_B,
                               rtol=1e-5)
    graph = load_graph(path)
    then_w = _tensor(graph, "If_0/then_branch/then_w")
    else_w = _tensor(graph, "If_0/else_branch/else_w")
    assert (then_w.place, then_w.source, then_w.role) == ("If_0/then_branch", "constant", "weight")
    assert _consumer_ops(graph, then_w) == _consumer_ops(graph, else_w) == ["MatMul"]
    layers = {layer.node: layer for layer in graph.layers}
    assert set(layers) == {"If_0/then_branch/MatMul_0", "If_0/else_branch/MatMul_0"}
    assert layers["If_0/then_branch/MatMul_0"].place == "If_0/then_branch"
    # the outer bias is used by a plain Add inside the branch: listed once, as a main-graph buffer
    outer = _tensor(graph, "outer_b")
    assert (outer.place, outer.role) == ("", "buffer")
    assert len(graph.tensors) == 3
    for tensor in (then_w, else_w):
        values = tensor_values(tensor, graph.directory)
        np.testing.assert_array_equal(values.to_float64(), SHARED_W)
        assert values.sha256() == tensor_values(then_w, graph.directory).sha256()
        assert_stats_match(tensor_stats(values), SHARED_W, tensor.out_axis, tensor.name)


def test_loop_nested_if_and_scan_bodies(tmp_path: Path) -> None:
    path = _save(_loop_scan_model(), tmp_path / "loop" / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    h = RNG.normal(size=(1, 3)).astype(np.float32)
    rows = RNG.normal(size=(2, 1, 3)).astype(np.float32)
    feeds = {"trip": np.array(2, np.int64), "flag": np.array(True), "h": h, "rows": rows}
    expected = h
    for _ in range(2):
        expected = expected @ LOOP_W @ NESTED_W
    for row in rows:
        expected = expected @ SCAN_W + row
    np.testing.assert_allclose(session.run(None, feeds)[0], expected, rtol=1e-4)
    graph = load_graph(path)
    names = {t.name: t for t in graph.tensors.values()}
    assert set(names) == {"Loop_0/body/loop_w", "Loop_0/body/If_0/then_branch/nested_w", "Scan_0/body/scan_w"}
    assert names["Scan_0/body/scan_w"].source == "initializer"
    assert names["Loop_0/body/If_0/then_branch/nested_w"].place == "Loop_0/body/If_0/then_branch"
    assert [la.op_type for la in graph.layers] == ["MatMul", "MatMul", "MatMul"]
    for tensor, array in [(names["Loop_0/body/loop_w"], LOOP_W), (names["Scan_0/body/scan_w"], SCAN_W),
                          (names["Loop_0/body/If_0/then_branch/nested_w"], NESTED_W)]:
        assert _consumer_ops(graph, tensor) == ["MatMul"]
        assert_stats_match(tensor_stats(tensor_values(tensor, graph.directory)), array, tensor.out_axis, tensor.name)


def test_a_body_input_hides_an_outer_name(tmp_path: Path) -> None:
    """A subgraph input named like an outer initializer is the input, not the weight."""
    body = helper.make_graph(
        [helper.make_node("MatMul", ["h_in", "w"], ["h_out"]), helper.make_node("Identity", ["c"], ["c_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 3])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 3])],
    )
    body.node[0].output[0] = "w_next"
    body.output[1].name = "w_next"
    body.node[0].input[0] = "w"
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trip", "", "w"], ["w_final"], body=body)],
        "shadow",
        [helper.make_tensor_value_info("trip", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("w_final", TensorProto.FLOAT, [3, 3])],
        [init("w", LOOP_W)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    parsed = load_graph(_save(model, tmp_path / "shadow" / "model.onnx"))
    assert parsed.layers == ()
    assert [(t.name, t.role) for t in parsed.tensors.values()] == [("w", "buffer")]


def test_function_constants_are_one_tensor_and_each_call_is_its_own_layers(tmp_path: Path) -> None:
    path = _save(_function_model(), tmp_path / "fn" / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = RNG.normal(size=(2, 3)).astype(np.float32)
    back = numpy_helper.to_array(onnx.load(str(path)).graph.initializer[1])
    expected = ((x @ FN_W @ ARG_W) @ back) @ FN_W @ ARG_W
    np.testing.assert_allclose(session.run(None, {"x": x})[0], expected, rtol=1e-4)
    graph = load_graph(path)
    fn_w = _tensor(graph, "functions/local.Block/fn_w")
    arg_w = _tensor(graph, "arg_w")
    assert (fn_w.place, fn_w.source) == ("functions/local.Block", "constant")
    assert _consumer_ops(graph, fn_w) == ["MatMul", "MatMul"]  # one tensor, a layer per call
    assert _consumer_ops(graph, arg_w) == ["MatMul", "MatMul"]  # the caller's weight, bound to `proj`
    assert [la.node for la in graph.layers] == [
        "first/MatMul_0", "first/MatMul_1", "", "second/MatMul_0", "second/MatMul_1"]
    assert len(graph.tensors) == 3
    assert_stats_match(tensor_stats(tensor_values(fn_w, graph.directory)), FN_W, fn_w.out_axis, "function weight")


def test_an_uncalled_function_still_lists_its_constants(tmp_path: Path) -> None:
    model = _function_model()
    del model.graph.node[:]
    model.graph.node.extend([helper.make_node("MatMul", ["x", "arg_w2"], ["y"])])
    model.graph.initializer.append(init("arg_w2", np.zeros((3, 2), np.float32)))
    graph = load_graph(_save(model, tmp_path / "uncalled" / "model.onnx"))
    fn_w = _tensor(graph, "functions/local.Block/fn_w")
    assert _consumer_ops(graph, fn_w) == ["MatMul"]


def test_sparse_initializer_and_sparse_constant_are_dense_weights(tmp_path: Path) -> None:
    dense = np.zeros((6, 4), np.float32)
    dense[[0, 2, 5], [1, 3, 0]] = [1.5, -2.0, 0.25]
    linear = np.flatnonzero(dense)
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(dense.reshape(-1)[linear], "sp_w"), numpy_helper.from_array(linear.astype(np.int64),
                                                                                            "sp_w_idx"), [6, 4])
    coords = np.argwhere(dense.T != 0).astype(np.int64)
    sparse_const = helper.make_sparse_tensor(
        numpy_helper.from_array(dense.T[dense.T != 0], "spc_values"), numpy_helper.from_array(coords, "spc_idx"),
        [4, 6])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "sp_w"], ["h"]),
         helper.make_node("Constant", [], ["spc"], sparse_value=sparse_const),
         helper.make_node("MatMul", ["h", "spc"], ["y"])],
        "sparse",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])],
        sparse_initializer=[sparse],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    # onnx's shape inference does not type sparse initializers; onnxruntime runs the model
    path = _save(model, tmp_path / "sparse" / "model.onnx", full_check=False)
    x = RNG.normal(size=(2, 6)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x})[0], x @ dense @ dense.T, rtol=1e-5)
    parsed = load_graph(path)
    weight = _tensor(parsed, "sp_w")
    assert (weight.source, weight.shape, weight.role) == ("sparse_initializer", (6, 4), "weight")
    assert_stats_match(tensor_stats(tensor_values(weight, parsed.directory)), dense, weight.out_axis, "sparse")
    const = _tensor(parsed, "spc")
    assert (const.source, const.shape) == ("constant", (4, 6))
    assert_stats_match(tensor_stats(tensor_values(const, parsed.directory)), dense.T, const.out_axis, "sparse const")


def test_a_sparse_index_outside_the_shape_is_a_load_error(tmp_path: Path) -> None:
    from service.errors import ModelLoadError

    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.ones(2, np.float32), "bad"),
        numpy_helper.from_array(np.array([3, 99], np.int64), "bad_idx"), [4, 4])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "bad"], ["y"])], "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        sparse_initializer=[sparse],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path = tmp_path / "bad" / "model.onnx"
    path.parent.mkdir()
    onnx.save(model, str(path))
    parsed = load_graph(path)
    with pytest.raises(ModelLoadError, match="outside"):
        tensor_values(_tensor(parsed, "bad"), parsed.directory)


def test_qlinear_matmul_weight_is_dequantized_per_output_column(tmp_path: Path) -> None:
    b = RNG.integers(-100, 100, size=(4, 3), dtype=np.int8)
    b_scale = np.array([0.1, 0.02, 0.3], np.float32)
    b_zp = np.array([1, -2, 0], np.int8)
    inits = [
        init("a_scale", np.array(0.05, np.float32)), init("a_zp", np.array(0, np.int8)),
        init("b_q", b), init("b_scale", b_scale), init("b_zp", b_zp),
        init("y_scale", np.array(0.1, np.float32)), init("y_zp", np.array(0, np.int8)),
    ]
    node = helper.make_node(
        "QLinearMatMul", ["a", "a_scale", "a_zp", "b_q", "b_scale", "b_zp", "y_scale", "y_zp"], ["y"])
    graph = helper.make_graph(
        [node], "qmm",
        [helper.make_tensor_value_info("a", TensorProto.INT8, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, ["N", 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    parsed = load_graph(_save(model, tmp_path / "qmm" / "model.onnx"))
    weight = _tensor(parsed, "b_q")
    assert weight.quantization is not None
    assert (weight.quantization.axis, weight.out_axis) == (1, 1)
    expected = (b.astype(np.float64) - b_zp) * b_scale.astype(np.float64)
    np.testing.assert_array_equal(tensor_values(weight, parsed.directory).to_float64(), expected)
    assert_stats_match(tensor_stats(tensor_values(weight, parsed.directory)), expected, 1, "QLinearMatMul")
