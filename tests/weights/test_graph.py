from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from service.errors import ModelLoadError
from service.weights.graph import ParamTensor, WeightGraph, load_graph
from service.weights.tensor_stats import tensor_stats
from service.weights.values import tensor_values
from tests.weights.conftest import BASE, classifier_graph, init, save_model
from tests.weights.reference import assert_stats_match

RNG = np.random.default_rng(5)
EMB = RNG.normal(size=(10, 4)).astype(np.float32)
FC_Q = RNG.integers(-128, 128, size=(3, 4), dtype=np.int8)
FC_SCALE = np.array([0.01, 0.02, 0.03], dtype=np.float32)
FC_ZP = np.array([0, 2, -1], dtype=np.int8)
CONST_W = RNG.normal(size=(3, 4)).astype(np.float32)
HALF_W = RNG.normal(size=(4, 4)).astype(np.float16)


def zoo_graph() -> onnx.GraphProto:
    """Embedding tied to the output projection, LayerNorm, a QDQ Gemm, a Constant-node weight, an
    fp16 weight behind a Cast, and an overridable initializer."""
    inits = [
        init("emb.weight", EMB),
        init("ln.scale", np.ones(4, np.float32) * 1.5),
        init("ln.bias", np.full(4, 0.1, np.float32)),
        init("fc.weight_quantized", FC_Q),
        init("fc.weight_scale", FC_SCALE),
        init("fc.weight_zero_point", FC_ZP),
        init("fc.bias", np.array([0.1, -0.2, 0.3], np.float32)),
        init("half.w", HALF_W),
        init("shape", np.array([-1, 4], np.int64)),
    ]
    const = helper.make_tensor("c", TensorProto.FLOAT, CONST_W.shape, CONST_W.reshape(-1).tolist())
    nodes = [
        helper.make_node("Gather", ["emb.weight", "ids"], ["e"], name="/emb/Gather"),
        helper.make_node("Reshape", ["x", "shape"], ["xr"], name="/Reshape"),
        helper.make_node("Add", ["e", "xr"], ["s"], name="/Add"),
        helper.make_node("LayerNormalization", ["s", "ln.scale", "ln.bias"], ["n"], axis=-1, name="/ln/LN"),
        helper.make_node(
            "DequantizeLinear", ["fc.weight_quantized", "fc.weight_scale", "fc.weight_zero_point"], ["fcw"], axis=0
        ),
        helper.make_node("Gemm", ["n", "fcw", "fc.bias"], ["g"], transB=1, name="/fc/Gemm"),
        helper.make_node("Constant", [], ["cw"], value=const),
        helper.make_node("MatMul", ["g", "cw"], ["m"], name="/mix/MatMul"),
        helper.make_node("Cast", ["half.w"], ["hw"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["m", "hw"], ["m2"], name="/half/MatMul"),
        helper.make_node("Transpose", ["emb.weight"], ["embT"], perm=[1, 0]),
        helper.make_node("MatMul", ["m2", "embT"], ["logits"], name="/out/MatMul"),
    ]
    return helper.make_graph(
        nodes,
        "zoo",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("ln.bias", TensorProto.FLOAT, [4]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )


@pytest.fixture
def zoo(tmp_path: Path) -> WeightGraph:
    path = save_model(zoo_graph(), tmp_path / "zoo" / "model.onnx")
    # The zoo is a real, runnable model.
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"ids": np.array([1, 2]), "x": np.zeros((2, 4), np.float32)})
    assert out[0].shape == (2, 10)
    return load_graph(path)


def _by_name(graph: WeightGraph, name: str) -> ParamTensor:
    found = graph.tensor_by_name(name)
    assert found is not None, name
    return found


def test_classifier_layers_roles_and_axes(tmp_path: Path) -> None:
    graph = load_graph(save_model(classifier_graph(BASE), tmp_path / "m" / "model.onnx"))
    assert [(la.id, la.op_type, la.module_path) for la in graph.layers] == [
        ("L0000", "Conv", "conv"),
        ("L0001", "BatchNormalization", "bn"),
        ("L0002", "Gemm", "head"),
        ("L0003", "MatMul", "proj"),
    ]
    roles = {t.name: (t.role, t.out_axis, t.transposed) for t in graph.tensors.values()}
    assert roles == {
        "conv.weight": ("weight", 0, False),
        "conv.bias": ("bias", None, False),
        "bn.weight": ("bn_scale", None, False),
        "bn.bias": ("bn_bias", None, False),
        "bn.running_mean": ("bn_mean", None, False),
        "bn.running_var": ("bn_var", None, False),
        "head.weight": ("weight", 0, False),
        "head.bias": ("bias", None, False),
        "onnx::MatMul_9": ("weight", 1, True),
    }
    ids = [t.id for t in graph.tensors.values()]
    assert len(set(ids)) == len(ids)
    assert all(i.isalnum() for i in ids)


def test_ids_are_stable_across_versions(tmp_path: Path) -> None:
    a = load_graph(save_model(classifier_graph(BASE), tmp_path / "a" / "model.onnx"))
    b = load_graph(save_model(classifier_graph(BASE), tmp_path / "b" / "model.onnx"))
    assert sorted(a.tensors) == sorted(b.tensors)


def test_zoo_parameter_tensors(zoo: WeightGraph) -> None:
    ops = [layer.op_type for layer in zoo.layers]
    assert ops == ["Gather", "LayerNormalization", "Gemm", "MatMul", "MatMul", "MatMul"]
    assert {t.name for t in zoo.tensors.values()} == {
        "emb.weight", "ln.scale", "ln.bias", "fc.weight_quantized", "fc.bias", "cw", "half.w"
    }
    emb = _by_name(zoo, "emb.weight")
    assert (emb.role, emb.out_axis) == ("embedding", 0)
    assert emb.consumers == ["L0000", "L0005"]  # tied: one tensor, two layers
    assert _by_name(zoo, "ln.bias").overridable
    assert not _by_name(zoo, "ln.scale").overridable
    const = _by_name(zoo, "cw")
    assert (const.source, const.out_axis, const.transposed) == ("constant", 1, True)
    half = _by_name(zoo, "half.w")
    assert (half.chain, half.storage_dtype) == (("Cast",), "FLOAT16")


def test_quantized_weight_is_dequantized(zoo: WeightGraph) -> None:
    fc = _by_name(zoo, "fc.weight_quantized")
    assert fc.quantization is not None
    assert (fc.quantization.op, fc.quantization.axis, fc.out_axis) == ("DequantizeLinear", 0, 0)
    values = tensor_values(fc, zoo.directory)
    expected = (FC_Q.astype(np.float64) - FC_ZP[:, None]) * FC_SCALE.astype(np.float64)[:, None]
    np.testing.assert_array_equal(values.to_float64(), expected)
    assert_stats_match(tensor_stats(values), expected, 0, "QDQ weight")


def test_constant_and_fp16_values(zoo: WeightGraph) -> None:
    np.testing.assert_array_equal(tensor_values(_by_name(zoo, "cw"), zoo.directory).to_float64(), CONST_W)
    half = tensor_values(_by_name(zoo, "half.w"), zoo.directory)
    assert half.stored.dtype == np.float16
    assert_stats_match(tensor_stats(half), HALF_W.astype(np.float64), 1, "fp16")


def test_dynamo_metadata_gives_module_path_and_fold_evidence(tmp_path: Path) -> None:
    graph = classifier_graph(BASE)
    conv = graph.node[0]
    for key, value in {
        "pkg.torch.onnx.name_scopes": "['', 'features', 'features.1', '_native_batch_norm_legit_no_training']",
        "pkg.onnxscript.rewriter.rule_name": "FuseBatchNormIntoConv",
    }.items():
        entry = conv.metadata_props.add()
        entry.key, entry.value = key, value
    parsed = load_graph(save_model(graph, tmp_path / "d" / "model.onnx"))
    assert parsed.layers[0].module_path == "features.1"
    folded = _by_name(parsed, "conv.weight").folded
    assert folded == {"from": ["BatchNormalization"], "evidence": "FuseBatchNormIntoConv"}


def test_external_data_is_read_one_tensor_at_a_time(tmp_path: Path) -> None:
    path = save_model(classifier_graph(BASE), tmp_path / "ext" / "model.onnx", external=True)
    assert (tmp_path / "ext" / "model.onnx.data").is_file()
    graph = load_graph(path)
    for name, array in BASE.arrays.items():
        stored_name = "onnx::MatMul_9" if name == "proj.weight" else name
        values = tensor_values(_by_name(graph, stored_name), graph.directory)
        assert isinstance(values.stored, np.memmap)
        expected = array.T if name == "proj.weight" else array
        np.testing.assert_array_equal(values.stored, expected)


def _tamper(path: Path, **entries: str) -> None:
    model = onnx.load(str(path), load_external_data=False)
    tensor = next(t for t in model.graph.initializer if t.name == "head.weight")
    for entry in tensor.external_data:
        if entry.key in entries:
            entry.value = entries[entry.key]
    path.write_bytes(model.SerializeToString())


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"location": "../outside.bin"}, "relative path inside the version folder"),
        ({"location": "/etc/hostname"}, "relative path inside the version folder"),
        ({"location": "missing.bin"}, "missing"),
        ({"offset": "999999999"}, "runs past the end"),
        ({"length": "3"}, "does not fit"),
    ],
)
def test_external_locations_are_checked(tmp_path: Path, entries: dict[str, str], message: str) -> None:
    path = save_model(classifier_graph(BASE), tmp_path / "ext" / "model.onnx", external=True)
    (tmp_path / "outside.bin").write_bytes(b"\0" * 4096)
    _tamper(path, **entries)
    graph = load_graph(path)
    with pytest.raises(ModelLoadError, match=message):
        tensor_values(_by_name(graph, "head.weight"), graph.directory)


def test_symlinked_external_data_is_refused(tmp_path: Path) -> None:
    path = save_model(classifier_graph(BASE), tmp_path / "ext" / "model.onnx", external=True)
    (tmp_path / "outside.bin").write_bytes((tmp_path / "ext" / "model.onnx.data").read_bytes())
    (tmp_path / "ext" / "link.bin").symlink_to(tmp_path / "outside.bin")
    _tamper(path, location="link.bin")
    graph = load_graph(path)
    with pytest.raises(ModelLoadError, match="symbolic link"):
        tensor_values(_by_name(graph, "head.weight"), graph.directory)


def test_unparseable_model_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelLoadError):
        load_graph(path)


def test_qoperator_weights_are_dequantized_with_their_own_scales(tmp_path: Path) -> None:
    w = RNG.integers(-100, 100, size=(4, 1, 3, 3), dtype=np.int8)
    w_scale = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    w_zp = np.zeros(4, np.int8)
    b = RNG.integers(-50, 50, size=4, dtype=np.int32)
    inits = [
        init("x_scale", np.array(0.05, np.float32)), init("x_zp", np.array(0, np.uint8)),
        init("w_q", w), init("w_scale", w_scale), init("w_zp", w_zp),
        init("y_scale", np.array(0.1, np.float32)), init("y_zp", np.array(0, np.uint8)),
        init("b_q", b),
    ]
    node = helper.make_node(
        "QLinearConv",
        ["x", "x_scale", "x_zp", "w_q", "w_scale", "w_zp", "y_scale", "y_zp", "b_q"],
        ["y"],
        name="/conv/QLinearConv",
    )
    graph = helper.make_graph(
        [node],
        "qconv",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, ["N", 4, 6, 6])],
        inits,
    )
    parsed = load_graph(save_model(graph, tmp_path / "q" / "model.onnx"))
    assert [(la.op_type, [t.role for t in la.tensors]) for la in parsed.layers] == [("QLinearConv", ["weight", "bias"])]
    weight = _by_name(parsed, "w_q")
    assert weight.quantization is not None
    assert (weight.quantization.op, weight.quantization.axis, weight.out_axis) == ("QLinearConv", 0, 0)
    values = tensor_values(weight, parsed.directory)
    np.testing.assert_array_equal(values.to_float64(), w * w_scale.astype(np.float64)[:, None, None, None])
    # the int32 bias is in units of input scale x weight scale, per output channel
    bias = _by_name(parsed, "b_q")
    assert bias.quantization is not None
    assert (bias.role, bias.quantization.axis, len(bias.quantization.scales)) == ("bias", 0, 2)
    expected = b * (np.float64(np.float32(0.05)) * w_scale.astype(np.float64))
    np.testing.assert_array_equal(tensor_values(bias, parsed.directory).to_float64(), expected)
    assert_stats_match(tensor_stats(tensor_values(bias, parsed.directory)), expected, None, "int32 bias")
    # scales and zero points are not weights of their own
    assert {t.name for t in parsed.tensors.values()} == {"w_q", "b_q"}
