"""A GPT-2-small-shaped ONNX model for the weights benchmark (random weights, external data).

Shapes and wiring of GPT-2 small (124M parameters): a 50257 x 768 token embedding tied to the output
projection (the same initializer is read by ``Gather`` and, transposed, by the final ``MatMul``), a
1024 x 768 position embedding, and 12 blocks of LayerNorm, attention (c_attn 768 -> 2304 split into
q, k, v; single-head scaled dot product; c_proj 768 -> 768) and an MLP (c_fc 768 -> 3072, Gelu,
c_proj 3072 -> 768) with residual connections, then a final LayerNorm. Weights are stored [in, out]
as GPT-2's Conv1D keeps them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bench.onnx_writer import ExternalWriter

VOCAB, CONTEXT, WIDTH, LAYERS = 50257, 1024, 768, 12
OPSET = 20


def build_gpt2(folder: Path, seed: int = 0, layers: int = LAYERS) -> tuple[Path, int, int]:
    """Write model.onnx + model.onnx.data; returns the path, the parameter count, the largest tensor's bytes."""
    data = ExternalWriter(folder, seed)
    nodes: list[onnx.NodeProto] = []

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=f"/{output}/{op}", **attrs))
        return output

    def layer_norm(x: str, prefix: str) -> str:
        scale = data.add(f"{prefix}.weight", (WIDTH,), fill=1.0)
        bias = data.add(f"{prefix}.bias", (WIDTH,), fill=0.0)
        return node("LayerNormalization", [x, scale, bias], f"{prefix}.out", axis=-1, epsilon=1e-5)

    def linear(x: str, prefix: str, fan_in: int, fan_out: int) -> str:
        weight = data.add(f"{prefix}.weight", (fan_in, fan_out))
        bias = data.add(f"{prefix}.bias", (fan_out,), fill=0.0)
        return node("Add", [node("MatMul", [x, weight], f"{prefix}.mm"), bias], f"{prefix}.out")

    wte = data.add("wte.weight", (VOCAB, WIDTH))
    wpe = data.add("wpe.weight", (CONTEXT, WIDTH))
    x = node("Add", [node("Gather", [wte, "input_ids"], "tok"), node("Gather", [wpe, "position_ids"], "pos")], "h0")
    constants = [
        numpy_helper.from_array(np.array([WIDTH, WIDTH, WIDTH], np.int64), "qkv_split"),
        numpy_helper.from_array(np.array(1 / np.sqrt(WIDTH), np.float32), "attn_scale"),
    ]
    for i in range(layers):
        p = f"h.{i}"
        qkv = linear(layer_norm(x, f"{p}.ln_1"), f"{p}.attn.c_attn", WIDTH, 3 * WIDTH)
        nodes.append(helper.make_node("Split", [qkv, "qkv_split"], [f"{p}.q", f"{p}.k", f"{p}.v"], axis=-1))
        k_t = node("Transpose", [f"{p}.k"], f"{p}.kT", perm=[0, 2, 1])
        scores = node("Mul", [node("MatMul", [f"{p}.q", k_t], f"{p}.qk"), "attn_scale"], f"{p}.scores")
        attended = node("MatMul", [node("Softmax", [scores], f"{p}.probs", axis=-1), f"{p}.v"], f"{p}.att")
        x = node("Add", [x, linear(attended, f"{p}.attn.c_proj", WIDTH, WIDTH)], f"{p}.res1")
        hidden = node("Gelu", [linear(layer_norm(x, f"{p}.ln_2"), f"{p}.mlp.c_fc", WIDTH, 4 * WIDTH)], f"{p}.gelu")
        x = node("Add", [x, linear(hidden, f"{p}.mlp.c_proj", 4 * WIDTH, WIDTH)], f"{p}.res2")
    x = layer_norm(x, "ln_f")
    # the output projection is the token embedding, transposed: tied weights, stored once
    logits = node("MatMul", [x, node("Transpose", [wte], "wte.T", perm=[1, 0])], "logits")
    data.close()
    graph = helper.make_graph(
        nodes,
        "gpt2_small",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["B", "T"]),
         helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["B", "T"])],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["B", "T", VOCAB])],
        [*data.initializers, *constants],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 10
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    onnx.checker.check_model(str(path), full_check=True)
    return path, data.parameters, data.largest
