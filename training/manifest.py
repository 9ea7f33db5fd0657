"""manifest.json: provenance of one version folder, and how its state_dict maps onto the ONNX graph.

`tensors` is found by comparing values, not names: for each state_dict tensor, an ONNX initializer
holding the same values is "identical", its transpose "transposed", the tensor with a BatchNorm
folded in "folded" (BN keys in `folded_from`), a recurrent layer's tensor repacked into ONNX's
LSTM / GRU / RNN layout (gates reordered, directions stacked, both biases in one) "packed";
otherwise "absent". `shared_with` lists the other keys of the same storage (tied weights, such as
a language model's output layer that is its embedding matrix).
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
from numpy.typing import NDArray
from onnx import numpy_helper
from torch import nn

from training.export import EXPORTER

FORMAT = 1
FOLD_RTOL = 1e-5
FOLD_ATOL = 1e-6
RELATIONS = ("identical", "transposed", "folded", "packed", "absent")

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_GATE_ORDER: dict[type[nn.Module], tuple[int, ...]] = {
    nn.LSTM: (0, 3, 1, 2),  # torch i, f, g, o -> ONNX i, o, f, c
    nn.GRU: (1, 0, 2),  # torch r, z, n -> ONNX z, r, h
    nn.RNN: (0,),
}

Initializers = Mapping[str, NDArray[Any]]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_entry(directory: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    return {n: {"sha256": sha256_of(directory / n), "bytes": (directory / n).stat().st_size} for n in names}


def shared_keys(module: nn.Module) -> dict[str, list[str]]:
    """state_dict key -> the other keys whose tensor is the same storage (tied weights)."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for key, tensor in module.state_dict().items():
        if tensor.numel() == 0:
            continue
        identity = (
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tuple(tensor.stride()),
            tensor.dtype,
        )
        groups.setdefault(identity, []).append(key)
    return {key: [o for o in group if o != key] for group in groups.values() if len(group) > 1 for key in group}


def _conv_norm_pairs(module: nn.Module) -> dict[str, tuple[nn.Module, list[tuple[str, nn.Module]]]]:
    """conv prefix -> (conv, [(norm prefix, norm)]) for every BatchNorm with as many features as the
    conv has output channels, the one registered next after the conv first (Sequential blocks,
    ResNet's conv1 / bn1, ...): which one the exporter folded in, if any, the values decide."""
    modules = list(module.named_modules())
    norms = [
        (i, name, m)
        for i, (name, m) in enumerate(modules)
        if isinstance(m, _NORMS) and m.running_mean is not None and m.running_var is not None
    ]
    pairs: dict[str, tuple[nn.Module, list[tuple[str, nn.Module]]]] = {}
    for i, (name, conv) in enumerate(modules):
        if isinstance(conv, _CONVS):
            fitting = [(j, n, m) for j, n, m in norms if m.num_features == conv.out_channels]
            fitting.sort(key=lambda item: (item[0] < i, abs(item[0] - i)))
            if fitting:
                pairs[name] = (conv, [(n, m) for _, n, m in fitting])
    return pairs


def _folded(conv: nn.Module, norm: nn.Module, part: str) -> NDArray[np.float64]:
    """The conv's weight or bias with the norm folded in, as the exporter computes it."""
    assert isinstance(conv, _CONVS)
    assert isinstance(norm, _NORMS)
    assert norm.running_var is not None
    assert norm.running_mean is not None
    weight = norm.weight.detach().double() if norm.weight is not None else torch.ones(norm.num_features).double()
    beta = norm.bias.detach().double() if norm.bias is not None else torch.zeros(norm.num_features).double()
    scale = weight / torch.sqrt(norm.running_var.double() + norm.eps)
    if part == "weight":
        w = conv.weight.detach().double()
        return (w * scale.reshape(-1, *([1] * (w.ndim - 1)))).numpy()
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(scale)
    return ((bias - norm.running_mean.double()) * scale + beta).numpy()


def _fold_candidates(module: nn.Module) -> dict[str, Iterator[tuple[NDArray[np.float64], list[str]]]]:
    """state_dict key of a conv weight or bias -> lazily, its values with each candidate norm folded in."""

    def candidates(
        conv: nn.Module, part: str, norms: list[tuple[str, nn.Module]]
    ) -> Iterator[tuple[NDArray[np.float64], list[str]]]:
        for norm_name, norm in norms:
            base = f"{norm_name}." if norm_name else ""
            yield _folded(conv, norm, part), [f"{base}{p}" for p in ("weight", "bias", "running_mean", "running_var")]

    out: dict[str, Iterator[tuple[NDArray[np.float64], list[str]]]] = {}
    for name, (conv, norms) in _conv_norm_pairs(module).items():
        base = f"{name}." if name else ""
        out[f"{base}weight"] = candidates(conv, "weight", norms)
        if getattr(conv, "bias", None) is not None:
            out[f"{base}bias"] = candidates(conv, "bias", norms)
    return out


def _packed_candidates(module: nn.Module) -> dict[str, list[NDArray[Any]]]:
    """state_dict key of a recurrent layer's tensor -> the ONNX W, R or B tensors that hold it
    (all directions stacked, and each direction alone, in case the exporter splits them)."""
    out: dict[str, list[NDArray[Any]]] = {}
    for prefix, rnn in module.named_modules():
        order = _GATE_ORDER.get(type(rnn))
        if order is None or not isinstance(rnn, nn.RNNBase) or (isinstance(rnn, nn.LSTM) and rnn.proj_size > 0):
            continue
        base = f"{prefix}." if prefix else ""
        directions = ["", "_reverse"] if rnn.bidirectional else [""]

        def gates(tensor: torch.Tensor, order: tuple[int, ...] = order) -> NDArray[Any]:
            blocks = tensor.detach().chunk(len(order), dim=0)
            return torch.cat([blocks[g] for g in order]).numpy()

        for layer in range(rnn.num_layers):
            names = {part: [f"{part}_l{layer}{d}" for d in directions] for part in ("weight_ih", "weight_hh")}
            if rnn.bias:
                names |= {part: [f"{part}_l{layer}{d}" for d in directions] for part in ("bias_ih", "bias_hh")}
            per_direction: dict[str, list[NDArray[Any]]] = {}
            for part in ("weight_ih", "weight_hh"):
                per_direction[part] = [gates(getattr(rnn, n)) for n in names[part]]
            if rnn.bias:
                per_direction["bias"] = [
                    np.concatenate([gates(getattr(rnn, i)), gates(getattr(rnn, h))])
                    for i, h in zip(names["bias_ih"], names["bias_hh"], strict=True)
                ]
            for part, keys in names.items():
                packed = per_direction["bias" if part.startswith("bias") else part]
                for d, key in enumerate(keys):
                    out[f"{base}{key}"] = [np.stack(packed), packed[d][None]]
    return out


def _relation(
    key: str,
    value: NDArray[Any],
    initializers: Initializers,
    folded: Mapping[str, Iterator[tuple[NDArray[np.float64], list[str]]]],
    packed: Mapping[str, list[NDArray[Any]]],
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "state_dict_key": key,
        "onnx_initializer": None,
        "relation": "absent",
        "folded_from": None,
    }
    if not np.issubdtype(value.dtype, np.floating):
        return entry  # counters such as num_batches_tracked never reach the graph
    # Prefer the initializer of the same name, then any other with equal contents.
    ordered = sorted(initializers.items(), key=lambda item: item[0] != key)
    for name, init in ordered:
        if init.shape == value.shape and np.array_equal(init, value):
            return entry | {"onnx_initializer": name, "relation": "identical"}
    if value.ndim == 2:
        for name, init in ordered:
            if init.shape == value.T.shape and np.array_equal(init, value.T):
                return entry | {"onnx_initializer": name, "relation": "transposed"}
    for expected, bn_keys in folded.get(key, iter(())):
        for name, init in ordered:
            if init.shape == expected.shape and np.allclose(init, expected, rtol=FOLD_RTOL, atol=FOLD_ATOL):
                return entry | {"onnx_initializer": name, "relation": "folded", "folded_from": bn_keys}
    for expected in packed.get(key, []):
        for name, init in ordered:
            if init.shape == expected.shape and np.array_equal(init, expected):
                return entry | {"onnx_initializer": name, "relation": "packed"}
    return entry


def tensor_relations(module: nn.Module, model_path: Path) -> list[dict[str, Any]]:
    """One entry per state_dict key, in state_dict order.

    Keys of one storage (tied weights) each look for an initializer the others have not taken
    first, so a tied embedding and output layer map to the lookup table and to the output layer's
    (often transposed) copy the exporter made, and only share one when there is no other."""
    graph = onnx.load(str(model_path)).graph
    initializers = {
        init.name: numpy_helper.to_array(init)
        for init in graph.initializer
        if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)
    }
    folded = _fold_candidates(module)
    packed = _packed_candidates(module)
    shared = shared_keys(module)
    taken: dict[str, str] = {}
    entries = []
    for key, tensor in module.state_dict().items():
        value = tensor.detach().cpu().numpy()
        others = shared.get(key) or []
        claimed = {name for name, owner in taken.items() if owner in others}
        free = {name: init for name, init in initializers.items() if name not in claimed}
        entry = _relation(key, value, free, folded, packed)
        if entry["relation"] == "absent" and claimed:
            entry = _relation(key, value, initializers, folded, packed)
        if entry["onnx_initializer"] is not None:
            taken.setdefault(entry["onnx_initializer"], key)
        entries.append(entry | {"shared_with": others or None})
    return entries


def versions_entry(opset: int) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "exporter": EXPORTER,
        "opset": opset,
    }


def model_opset(model_path: Path) -> int:
    model = onnx.load(str(model_path), load_external_data=False)
    return int(next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
