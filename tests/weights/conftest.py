"""Tiny real ONNX models and model repositories for the weights tests, built with onnx.helper."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

OPSET = 18


def save_model(graph: onnx.GraphProto, path: Path, external: bool = False, check: bool = True) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    if check:
        onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:
        onnx.save(model, str(path), save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


def init(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


@dataclass(frozen=True)
class ClassifierWeights:
    """Trained (state_dict-like) tensors of the test classifier."""

    arrays: dict[str, np.ndarray]

    @classmethod
    def random(cls, seed: int, channels: int = 8) -> ClassifierWeights:
        rng = np.random.default_rng(seed)
        f32 = np.float32
        return cls({
            "conv.weight": rng.normal(0, 0.3, (channels, 1, 3, 3)).astype(f32),
            "conv.bias": rng.normal(0, 0.1, channels).astype(f32),
            "bn.weight": rng.uniform(0.5, 1.5, channels).astype(f32),
            "bn.bias": rng.normal(0, 0.1, channels).astype(f32),
            "bn.running_mean": rng.normal(0, 0.1, channels).astype(f32),
            "bn.running_var": rng.uniform(0.5, 1.5, channels).astype(f32),
            "head.weight": rng.normal(0, 0.5, (16, channels)).astype(f32),
            "head.bias": rng.normal(0, 0.1, 16).astype(f32),
            "proj.weight": rng.normal(0, 0.5, (5, 16)).astype(f32),
        })

    def perturbed(self, seed: int, scale: float, keys: tuple[str, ...]) -> ClassifierWeights:
        rng = np.random.default_rng(seed)
        arrays = dict(self.arrays)
        for key in keys:
            arrays[key] = (arrays[key] + rng.normal(0, scale, arrays[key].shape)).astype(np.float32)
        return ClassifierWeights(arrays)


def classifier_graph(w: ClassifierWeights) -> onnx.GraphProto:
    """image [N,1,8,8] -> Conv -> BatchNorm -> Relu -> GAP -> Flatten -> Gemm(transB) -> MatMul -> [N,5].

    The MatMul weight is stored [in, out] under an exporter-style name, as TorchScript does for a
    bias-free Linear.
    """
    a = w.arrays
    inits = [
        init("conv.weight", a["conv.weight"]),
        init("conv.bias", a["conv.bias"]),
        init("bn.weight", a["bn.weight"]),
        init("bn.bias", a["bn.bias"]),
        init("bn.running_mean", a["bn.running_mean"]),
        init("bn.running_var", a["bn.running_var"]),
        init("head.weight", a["head.weight"]),
        init("head.bias", a["head.bias"]),
        init("onnx::MatMul_9", a["proj.weight"].T.copy()),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1], name="/conv/Conv"),
        helper.make_node(
            "BatchNormalization",
            ["c", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"],
            ["b"],
            name="/bn/BatchNormalization",
        ),
        helper.make_node("Relu", ["b"], ["r"], name="/relu/Relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="/pool/GlobalAveragePool"),
        helper.make_node("Flatten", ["p"], ["f"], name="/Flatten"),
        helper.make_node("Gemm", ["f", "head.weight", "head.bias"], ["h"], transB=1, name="/head/Gemm"),
        helper.make_node("MatMul", ["h", "onnx::MatMul_9"], ["logits"], name="/proj/MatMul"),
    ]
    return helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        inits,
    )


def write_safetensors(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """The safetensors layout written by hand: u64 header length, JSON header, raw little-endian data."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    blobs = []
    for key, array in arrays.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[key] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))


def manifest_for(name: str, version: int) -> dict[str, object]:
    bn = ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"]
    return {
        "format": 1,
        "model": name,
        "version": version,
        "tensors": [
            {"state_dict_key": "conv.weight", "onnx_initializer": "conv.weight", "relation": "identical",
             "folded_from": None},
            {"state_dict_key": "conv.bias", "onnx_initializer": "conv.bias", "relation": "identical",
             "folded_from": None},
            *[{"state_dict_key": k, "onnx_initializer": k, "relation": "identical", "folded_from": None} for k in bn],
            {"state_dict_key": "head.weight", "onnx_initializer": "head.weight", "relation": "identical",
             "folded_from": None},
            {"state_dict_key": "head.bias", "onnx_initializer": "head.bias", "relation": "identical",
             "folded_from": None},
            {"state_dict_key": "proj.weight", "onnx_initializer": "onnx::MatMul_9", "relation": "transposed",
             "folded_from": None},
        ],
    }


def write_version(root: Path, name: str, version: int, weights: ClassifierWeights, sidecar: bool = True) -> Path:
    folder = root / name / str(version)
    save_model(classifier_graph(weights), folder / "model.onnx")
    if sidecar:
        write_safetensors(folder / "weights.safetensors", weights.arrays)
        (folder / "manifest.json").write_text(json.dumps(manifest_for(name, version)))
    return folder


BASE = ClassifierWeights.random(0)
FINE_TUNED = BASE.perturbed(1, 0.01, ("head.weight", "head.bias", "proj.weight"))
RETRAINED = ClassifierWeights.random(7)
WIDER = ClassifierWeights.random(3, channels=16)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """clf: 1 base, 2 fine-tuned head, 3 retrained from another seed, 4 = 1 again, 5 has 16 channels;
    broken/1 has NaN and Inf in its head weight."""
    root = tmp_path / "models"
    write_version(root, "clf", 1, BASE)
    write_version(root, "clf", 2, FINE_TUNED)
    write_version(root, "clf", 3, RETRAINED)
    write_version(root, "clf", 4, BASE, sidecar=False)
    write_version(root, "clf", 5, WIDER, sidecar=False)
    broken = dict(BASE.arrays)
    head = broken["head.weight"].copy()
    head[0, 0], head[1, 1], head[2, 2] = np.nan, np.inf, -np.inf
    broken["head.weight"] = head
    write_version(root, "broken", 1, ClassifierWeights(broken))
    return root


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own weights cache folder (servers it starts inherit the variable)."""
    folder = tmp_path / "weights-cache"
    monkeypatch.setenv("WEIGHTSERVE_WEIGHTS_CACHE_DIR", str(folder))
    return folder
