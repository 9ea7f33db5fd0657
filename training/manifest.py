"""manifest.json: provenance of one version folder, and how its state_dict maps onto the ONNX graph.

`tensors` is found by comparing values, not names: for each state_dict tensor, an ONNX initializer
holding the same values is "identical", its transpose "transposed", the tensor with a following
BatchNorm folded in "folded" (BN keys in `folded_from`); otherwise "absent".
"""

from __future__ import annotations

import hashlib
import itertools
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


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_entry(directory: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    return {n: {"sha256": sha256_of(directory / n), "bytes": (directory / n).stat().st_size} for n in names}


def _conv_bn_pairs(module: nn.Module) -> Iterator[tuple[str, nn.Conv2d, str, nn.BatchNorm2d]]:
    """(conv prefix, conv, bn prefix, bn) for each Conv2d directly followed by a BatchNorm2d."""
    for prefix, parent in module.named_modules():
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in itertools.pairwise(children):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                base = f"{prefix}." if prefix else ""
                yield f"{base}{conv_name}", conv, f"{base}{bn_name}", bn


def _folded_candidates(module: nn.Module) -> dict[str, tuple[NDArray[np.float64], list[str]]]:
    """state_dict key -> (its values with the next BatchNorm folded in, the BN keys folded)."""
    out: dict[str, tuple[NDArray[np.float64], list[str]]] = {}
    for conv_key, conv, bn_key, bn in _conv_bn_pairs(module):
        assert bn.running_var is not None
        assert bn.running_mean is not None
        scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double()
        bn_keys = [f"{bn_key}.{p}" for p in ("weight", "bias", "running_mean", "running_var")]
        weight = conv.weight.detach().double() * scale[:, None, None, None]
        out[f"{conv_key}.weight"] = (weight.numpy(), bn_keys)
        if conv.bias is not None:
            bias = (conv.bias.detach().double() - bn.running_mean.double()) * scale + bn.bias.detach().double()
            out[f"{conv_key}.bias"] = (bias.numpy(), bn_keys)
    return out


def _relation(
    key: str,
    value: NDArray[Any],
    initializers: Mapping[str, NDArray[Any]],
    folded: Mapping[str, tuple[NDArray[np.float64], list[str]]],
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
    if key in folded:
        expected, bn_keys = folded[key]
        for name, init in ordered:
            if init.shape == expected.shape and np.allclose(init, expected, rtol=FOLD_RTOL, atol=FOLD_ATOL):
                return entry | {"onnx_initializer": name, "relation": "folded", "folded_from": bn_keys}
    return entry


def tensor_relations(module: nn.Module, model_path: Path) -> list[dict[str, Any]]:
    """One entry per state_dict key, in state_dict order."""
    graph = onnx.load(str(model_path)).graph
    initializers = {
        init.name: numpy_helper.to_array(init)
        for init in graph.initializer
        if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)
    }
    folded = _folded_candidates(module)
    return [
        _relation(key, tensor.detach().numpy(), initializers, folded) for key, tensor in module.state_dict().items()
    ]


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
