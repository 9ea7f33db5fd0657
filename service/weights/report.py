"""JSON bodies of the weights extension, built from a store (blocking; the routes run them in its thread)."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import quote

import numpy as np

from service.errors import PayloadTooLarge
from service.weights.graph import Layer, ParamTensor
from service.weights.spectral import WW_COMPAT, eigenvalue_listing
from service.weights.store import Tensor, WeightStore
from service.weights.tensor_stats import DEFAULT_BINS, histogram_spec
from service.weights.trained import TrainedTensor
from service.weights.version import VersionWeights

SUMMARY_SPECTRAL = ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm", "stable_rank")
_DETAIL_ONLY = ("quantiles", "histogram", "log_abs_histogram", "per_channel")


def tensor_meta(version: VersionWeights, tensor: Tensor) -> dict[str, Any]:
    """What the graph (or the sidecar) says about a tensor, without computing anything."""
    if isinstance(tensor, TrainedTensor):
        return {"kind": "trained", **tensor.as_json()}
    trained = version.trained_by_effective.get(tensor.id)
    module = trained.key.rpartition(".")[0] if trained is not None else _module_of(version, tensor)
    quant = tensor.quantization
    return {
        "kind": "effective",
        "id": tensor.id,
        "name": tensor.name,
        "place": tensor.place,
        "role": tensor.role,
        "module_path": module,
        "layers": list(tensor.consumers),
        "shape": list(tensor.shape),
        "storage_dtype": tensor.storage_dtype,
        "bytes": tensor.nbytes,
        "source": tensor.source,
        "out_axis": tensor.out_axis,
        "transposed": tensor.transposed,
        "folded": tensor.folded,
        "shared": len(tensor.consumers) > 1,
        "overridable": tensor.overridable,
        "chain": list(tensor.chain),
        "quantization": None
        if quant is None
        else {"op": quant.op, "axis": quant.axis, "per_channel": quant.axis is not None, "scales": len(quant.scales)},
        "state_dict_key": trained.key if trained is not None else None,
        "trained_id": trained.id if trained is not None else None,
        "relation": trained.relation if trained is not None else None,
    }


def _module_of(version: VersionWeights, tensor: ParamTensor) -> str:
    layer = next((la for la in version.graph.layers if la.id in tensor.consumers[:1]), None)
    return layer.module_path if layer is not None else ""


def _summary_stats(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if k not in _DETAIL_ONLY}


def tensor_entry(store: WeightStore, version: VersionWeights, tensor: Tensor) -> dict[str, Any]:
    meta = tensor_meta(version, tensor)
    stats = store.stats(version, tensor)
    meta["sha256"] = stats["sha256"]
    meta["stats"] = _summary_stats(stats)
    meta["spectral"] = store.spectral(version, tensor)
    return meta


def _layer_entry(version: VersionWeights, layer: Layer, tensors: dict[str, dict[str, Any]]) -> dict[str, Any]:
    weight = next((tensors[t.tensor_id] for t in layer.tensors if t.role in ("weight", "embedding")), None)
    spectral = weight["spectral"] if weight is not None else None
    return {
        "id": layer.id,
        "op_type": layer.op_type,
        "node": layer.node,
        "place": layer.place,
        "module_path": layer_module(version, layer),
        "attributes": layer.attributes,
        "num_params": sum(int(np.prod(tensors[t.tensor_id]["shape"])) for t in layer.tensors),
        "tensors": [{"id": t.tensor_id, "role": t.role, "name": tensors[t.tensor_id]["name"]} for t in layer.tensors],
        "spectral": spectral,
        "analysis": spectral["analysis"] if spectral is not None else None,
    }


def layer_module(version: VersionWeights, layer: Layer) -> str:
    """The module a layer belongs to: from the trained sidecar's state_dict key when there is one
    (an exporter's fused node may carry the scope of the BatchNorm it swallowed), else the graph's."""
    for member in layer.tensors:
        trained = version.trained_by_effective.get(member.tensor_id)
        if trained is not None:
            return trained.key.rpartition(".")[0]
    return layer.module_path


def model_report(store: WeightStore, version: VersionWeights, model: str, number: int | None) -> dict[str, Any]:
    """Layers, tensors with their summary statistics and spectral metrics, a model summary, and the
    state of the version's spectral analysis (started here when it has not finished)."""
    graph = version.graph
    tensors = {tid: tensor_entry(store, version, t) for tid, t in graph.tensors.items()}
    _mark_same_content(list(tensors.values()))
    trained = [tensor_entry(store, version, t) for t in version.trained.values()]
    return {
        "model": model,
        "version": str(number) if number is not None else None,
        "opset": graph.opset,
        "producer": graph.producer,
        "ww_compat": WW_COMPAT,
        "summary": _model_summary(graph.layers, list(tensors.values())),
        "analysis": analysis_summary(store.analysis(version, start=True)) | {"url": analysis_url(model, number)},
        "layers": [_layer_entry(version, layer, tensors) for layer in graph.layers],
        "tensors": list(tensors.values()),
        "trained": trained if version.weights_path is not None else None,
    }


def analysis_url(model: str, number: int | None) -> str:
    base = f"/v2/models/{quote(model, safe='')}"
    return f"{base}/versions/{number}/weights/analysis" if number is not None else f"{base}/weights/analysis"


def analysis_report(store: WeightStore, version: VersionWeights, model: str, number: int | None) -> dict[str, Any]:
    """The job resource: the version's analysis (started or joined), matrix by matrix, and this
    process's cache events (what it computed, what it found computed)."""
    status = store.analysis(version, start=True)
    return {"model": model, "version": str(number) if number is not None else None} | status | {
        "cache": store.cache_report()
    }


def analysis_summary(status: dict[str, Any]) -> dict[str, Any]:
    """The job's state without its per-matrix list (that is the job resource's)."""
    return {k: v for k, v in status.items() if k != "matrices"}


def _constant_fill(entry: dict[str, Any]) -> bool:
    """All values equal (zeros, ones): equal contents are then expected, not a copy."""
    stats = entry["stats"]
    return stats["min"] is not None and stats["min"] == stats["max"]


def _mark_same_content(tensors: list[dict[str, Any]]) -> None:
    """Tensors stored twice (the same weights in both branches of an If, in two functions...) are
    one parameter: each copy lists the others, and counts as shared."""
    by_hash: dict[str, list[dict[str, Any]]] = {}
    for entry in tensors:
        if not _constant_fill(entry):
            by_hash.setdefault(entry["sha256"], []).append(entry)
    for entry in tensors:
        copies = [other["id"] for other in by_hash.get(entry["sha256"], []) if other is not entry]
        entry["same_content_as"] = copies
        entry["shared"] = entry["shared"] or bool(copies)


def _model_summary(layers: tuple[Layer, ...], tensors: list[dict[str, Any]]) -> dict[str, Any]:
    spectra = [t["spectral"] for t in tensors if t["spectral"] and t["spectral"].get("status") == "success"]
    means = {
        f"mean_{key}": float(np.mean([s[key] for s in spectra])) if spectra else None for key in SUMMARY_SPECTRAL
    }
    seen: set[str] = set()
    unique: list[dict[str, Any]] = []
    for entry in tensors:  # parameters stored twice count once
        if _constant_fill(entry) or entry["sha256"] not in seen:
            unique.append(entry)
            seen.add(entry["sha256"])
    pending = [t for t in tensors if t["spectral"] and t["spectral"].get("analysis") in ("queued", "running")]
    return {
        "layers": len(layers),
        "tensors": len(tensors),
        "unique_tensors": len(unique),
        "buffers": sum(1 for t in tensors if t["role"] == "buffer"),
        "parameters": sum(t["stats"]["numel"] for t in unique),
        "bytes": sum(t["bytes"] for t in unique),
        "nan_count": sum(t["stats"]["nan_count"] for t in tensors),
        "inf_count": sum(t["stats"]["inf_count"] for t in tensors),
        "folded": sum(1 for t in tensors if t["folded"]),
        "transposed": sum(1 for t in tensors if t["transposed"]),
        "shared": sum(1 for t in tensors if t["shared"]),
        "quantized": sum(1 for t in tensors if t["quantization"]),
        "spectral_analyzed": len(spectra),
        "spectral_pending": len(pending),
        "spectral_warnings": {
            w: sum(1 for s in spectra if s.get("warning") == w) for w in ("over-trained", "under-trained")
        },
        **means,
    }


def tensor_report(
    store: WeightStore,
    version: VersionWeights,
    tensor_id: str,
    bins: int,
    range_name: str,
    edges_from: VersionWeights | None = None,
) -> dict[str, Any]:
    """Everything about one tensor; the histogram on the requested bins (or on edges shared with
    the same tensor in another version)."""
    tensor = version.tensor(tensor_id)
    stats = store.stats(version, tensor)
    low, high, abs_max = stats["min"], stats["max"], stats["abs_max"]
    shared_with = None
    if edges_from is not None:
        other_stats = store.stats(edges_from, edges_from.tensor(tensor_id))
        low, high, abs_max = _union(low, high, abs_max, other_stats)
        shared_with = edges_from.label
    custom = (bins, range_name) != (DEFAULT_BINS, "minmax") or edges_from is not None
    spec = histogram_spec(bins, range_name, _num(low), _num(high), _num(abs_max))
    histogram = store.histogram(version, tensor, spec) if custom else stats["histogram"]
    meta = tensor_meta(version, tensor)
    histogram = histogram | {"range": range_name, "edges_shared_with": shared_with}
    body = meta | {"sha256": stats["sha256"], "stats": stats | {"histogram": histogram}}
    body["spectral"] = _spectral_with_eigenvalues(store, version, tensor)
    body["counterpart"] = _counterpart(store, version, tensor)
    return body


def _spectral_with_eigenvalues(store: WeightStore, version: VersionWeights, tensor: Tensor) -> dict[str, Any] | None:
    """The spectral document with its eigenvalues (bounded, see `eigenvalue_listing`), so a chart of
    the spectrum never needs the raw weight. An unfinished analysis is started (or joined)."""
    spectral: dict[str, Any] = {}
    for _ in range(2):  # a second look when the entry went away meanwhile (it is analysed again)
        found = store.spectral(version, tensor)
        if found is None:
            return None
        spectral = found
        if spectral.get("status") != "success":
            break
        evals = store.eigenvalues(version, tensor)
        if evals is not None:
            return spectral | {"eigenvalues": eigenvalue_listing(evals, store.options.spectral_listed_eigenvalues)}
    if spectral.get("analysis") != "done":
        store.analysis(version, start=True)
    return spectral | {"eigenvalues": None}


def _num(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _union(low: Any, high: Any, abs_max: Any, other: dict[str, Any]) -> tuple[float, float, float]:
    lows = [v for v in (low, other["min"]) if v is not None]
    highs = [v for v in (high, other["max"]) if v is not None]
    maxes = [v for v in (abs_max, other["abs_max"]) if v is not None]
    nan = float("nan")
    return (min(lows) if lows else nan, max(highs) if highs else nan, max(maxes) if maxes else nan)


def _counterpart(store: WeightStore, version: VersionWeights, tensor: Tensor) -> dict[str, Any] | None:
    """The trained tensor beside an effective one, or the effective one beside a trained one."""
    if isinstance(tensor, TrainedTensor):
        other: Tensor | None = version.graph.tensors.get(tensor.effective_id or "")
    else:
        other = version.trained_by_effective.get(tensor.id)
    if other is None:
        return None
    entry = tensor_entry(store, version, other)
    entry["same_values"] = entry["sha256"] == store.content_hash(version, tensor)
    return entry


def values_npy(store: WeightStore, version: VersionWeights, tensor_id: str) -> bytes:
    """The stored values as an .npy file (bfloat16 and float8 widened to float32 so numpy reads them)."""
    tensor = version.tensor(tensor_id)
    values = version.values(tensor).stored
    cap = store.options.values_max_bytes
    if values.nbytes > cap:
        raise PayloadTooLarge(
            f"tensor {tensor_id} holds {values.nbytes} bytes, over the {cap}-byte cap of the values endpoint"
        )
    if values.dtype.kind not in "fiub":
        values = values.astype(np.float32)
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(values), allow_pickle=False)
    return buffer.getvalue()
