"""What changed between two versions' weights, tensor by tensor, layer by layer, and overall.

Tensors are matched by name, then, for exporter-generated names that are not stable
(``onnx::Conv_26``, ``val_0``), by (consuming op, role, position among layers of that op, shape).
Identical tensors are recognised by sha256 without reading their values twice. A different
architecture is reported (what is only in one version, what changed shape), never an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.weights.graph import ParamTensor, WeightGraph
from service.weights.report import analysis_summary, layer_module
from service.weights.store import Tensor, WeightStore
from service.weights.tensor_stats import DEFAULT_BINS, bin_counts, histogram_spec
from service.weights.trained import TrainedTensor
from service.weights.version import VersionWeights

CHANGED_RTOL = 1e-5
CHANGED_ATOL = 1e-8
"""An entry counts as changed when ``not isclose(target, base, rtol, atol)`` (numpy's rule)."""
FINE_TUNE_REL_L2 = 0.25
"""Overall relative L2 change up to which a retraining still reads as a small fine-tune."""
FINE_TUNE_MIN_COSINE = 0.9
"""...provided no weight tensor turned further than this cosine similarity."""


@dataclass(frozen=True, slots=True)
class _Pair:
    base: Tensor
    target: Tensor
    matched_by: str


def _position_keys(graph: WeightGraph) -> dict[str, tuple[Any, ...]]:
    """A name-free key per tensor: consumer op, role, ordinal among that op's layers, shape."""
    keys: dict[str, tuple[Any, ...]] = {}
    ordinal: dict[str, int] = {}
    for layer in graph.layers:
        index = ordinal.get(layer.op_type, 0)
        ordinal[layer.op_type] = index + 1
        for member in layer.tensors:
            tensor = graph.tensors[member.tensor_id]
            keys.setdefault(tensor.id, (layer.op_type, member.role, index, tensor.shape))
    return keys


def match_effective(base: WeightGraph, target: WeightGraph) -> tuple[list[_Pair], list[Tensor], list[Tensor]]:
    pairs: list[_Pair] = []
    target_by_name = {t.name: t for t in target.tensors.values()}
    left: list[ParamTensor] = []
    for tensor in base.tensors.values():
        other = target_by_name.pop(tensor.name, None)
        if other is not None:
            pairs.append(_Pair(tensor, other, "name"))
        else:
            left.append(tensor)
    base_keys, target_keys = _position_keys(base), _position_keys(target)
    by_position = {target_keys[t.id]: t for t in target_by_name.values() if t.id in target_keys}
    only_base: list[Tensor] = []
    for tensor in left:
        other = by_position.pop(base_keys.get(tensor.id, ()), None)
        if other is not None:
            pairs.append(_Pair(tensor, other, "position"))
            target_by_name.pop(other.name, None)
        else:
            only_base.append(tensor)
    return pairs, only_base, list(target_by_name.values())


def match_trained(base: VersionWeights, target: VersionWeights) -> tuple[list[_Pair], list[Tensor], list[Tensor]]:
    target_by_key = {t.key: t for t in target.trained.values()}
    pairs: list[_Pair] = []
    only_base: list[Tensor] = []
    for tensor in base.trained.values():
        other = target_by_key.pop(tensor.key, None)
        if other is None:
            only_base.append(tensor)
        else:
            pairs.append(_Pair(tensor, other, "state_dict_key"))
    return pairs, only_base, list(target_by_key.values())


def _name(tensor: Tensor) -> str:
    return tensor.key if isinstance(tensor, TrainedTensor) else tensor.name


_BOOKKEEPING = frozenset({"N", "M", "rf", "Q", "num_evals", "numel", "finite_count", "std_ddof"})


def _delta(base: dict[str, Any] | None, target: dict[str, Any] | None) -> dict[str, float | None]:
    """target - base for every numeric metric both sides have."""
    if not base or not target:
        return {}
    out: dict[str, float | None] = {}
    for key, value in base.items():
        if key in _BOOKKEEPING:
            continue
        other = target.get(key)
        if isinstance(value, bool) or isinstance(other, bool):
            continue
        if isinstance(value, int | float) and isinstance(other, int | float):
            diff = float(other) - float(value)
            out[key] = diff if np.isfinite(diff) else None
    return out


def _js_distance(p: np.ndarray, q: np.ndarray) -> float | None:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two histograms on the same bins."""
    if p.sum() == 0 or q.sum() == 0:
        return None
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return float(np.sqrt(max((kl(p) + kl(q)) / 2, 0.0)))


def _wasserstein(p: np.ndarray, q: np.ndarray, width: float) -> float | None:
    """Earth mover's distance between two histograms on the same equal-width bins (value units)."""
    if p.sum() == 0 or q.sum() == 0:
        return None
    return float(np.sum(np.abs(np.cumsum(p / p.sum()) - np.cumsum(q / q.sum()))) * width)


def _value_change(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.all():
        a, b = a[ok], b[ok]
    d = b - a
    norm_a, norm_b, norm_d = (float(np.linalg.norm(v.reshape(-1))) for v in (a, b, d))
    n = max(a.size, 1)
    return {
        "rel_l2": norm_d / norm_a if norm_a > 0 else None,
        "l2_diff": norm_d,
        "cosine": float(np.vdot(a.reshape(-1), b.reshape(-1)) / (norm_a * norm_b)) if norm_a and norm_b else None,
        "max_abs_diff": float(np.max(np.abs(d))) if d.size else 0.0,
        "changed_fraction": float(np.count_nonzero(~np.isclose(b, a, CHANGED_RTOL, CHANGED_ATOL)) / n),
        "sign_flip_fraction": float(np.count_nonzero(a * b < 0) / n),
        "base_l2": norm_a,
    }


def _shared_histograms(a: np.ndarray, b: np.ndarray, sa: dict[str, Any], sb: dict[str, Any]) -> dict[str, Any]:
    lows = [v for v in (sa["min"], sb["min"]) if v is not None]
    highs = [v for v in (sa["max"], sb["max"]) if v is not None]
    if not lows or not highs:
        return {"edges": [], "base": [], "target": [], "js_distance": None, "wasserstein": None}
    spec = histogram_spec(DEFAULT_BINS, "minmax", min(lows), max(highs), 0.0)
    hp = bin_counts(a[np.isfinite(a)], spec)
    hq = bin_counts(b[np.isfinite(b)], spec)
    width = (spec.high - spec.low) / spec.bins
    return {
        "edges": spec.edges().tolist(),
        "base": hp.tolist(),
        "target": hq.tolist(),
        "js_distance": _js_distance(hp.astype(float), hq.astype(float)),
        "wasserstein": _wasserstein(hp.astype(float), hq.astype(float), width),
    }


def diff_pair(store: WeightStore, base: VersionWeights, target: VersionWeights, pair: _Pair) -> dict[str, Any]:
    stats_a = store.stats(base, pair.base)
    stats_b = store.stats(target, pair.target)
    entry: dict[str, Any] = {
        "name": _name(pair.target),
        "base_name": _name(pair.base),
        "base_id": pair.base.id,
        "target_id": pair.target.id,
        "matched_by": pair.matched_by,
        "shape": list(pair.target.shape),
        "identical": stats_a["sha256"] == stats_b["sha256"],
    }
    if tuple(pair.base.shape) != tuple(pair.target.shape):
        return entry | {"shape_mismatch": {"base": list(pair.base.shape), "target": list(pair.target.shape)}}
    if entry["identical"]:
        change: dict[str, Any] = {
            "rel_l2": 0.0, "l2_diff": 0.0, "cosine": 1.0, "max_abs_diff": 0.0,
            "changed_fraction": 0.0, "sign_flip_fraction": 0.0, "base_l2": stats_a["l2"],
        }
        return entry | change | {"stats_delta": {}, "spectral_delta": {}, "histograms": None}
    a = base.values(pair.base).to_float64()
    b = target.values(pair.target).to_float64()
    with np.errstate(all="ignore"):
        change = _value_change(a, b)
        histograms = _shared_histograms(a, b, stats_a, stats_b)
    return entry | change | {
        "stats_delta": _delta(_scalars(stats_a), _scalars(stats_b)),
        "spectral_delta": _spectral_delta(store.spectral(base, pair.base), store.spectral(target, pair.target)),
        "histograms": histograms,
    }


def _spectral_delta(base: dict[str, Any] | None, target: dict[str, Any] | None) -> dict[str, float | None]:
    """Deltas of finished analyses only (the diff starts the unfinished ones; ask again later)."""
    if not base or not target or base.get("analysis") != "done" or target.get("analysis") != "done":
        return {}
    return _delta(base, target)


def _scalars(stats: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in stats.items() if not isinstance(v, dict | list)}
    flat.update({f"quantile_{k}": v for k, v in stats["quantiles"].items()})
    return flat


def _architecture(base: WeightGraph, target: WeightGraph) -> dict[str, Any]:
    ops_a = [layer.op_type for layer in base.layers]
    ops_b = [layer.op_type for layer in target.layers]
    return {"same_layers": ops_a == ops_b, "base_layers": ops_a, "target_layers": ops_b}


def _layer_rollup(target: VersionWeights, tensors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_id = {t["target_id"]: t for t in tensors}
    rollup = []
    for layer in target.graph.layers:
        members = [by_id[m.tensor_id] for m in layer.tensors if m.tensor_id in by_id]
        comparable = [m for m in members if "rel_l2" in m]
        base_sq = sum(m["base_l2"] ** 2 for m in comparable)
        diff_sq = sum(m["l2_diff"] ** 2 for m in comparable)
        weight = next((m for m in members if m["name"] == _weight_name(target, layer.tensors)), None)
        rollup.append({
            "layer": layer.id,
            "op_type": layer.op_type,
            "module_path": layer_module(target, layer),
            "tensors": len(layer.tensors),
            "matched": len(members),
            "identical": bool(members) and all(m["identical"] for m in members) and len(members) == len(layer.tensors),
            "rel_l2": float(np.sqrt(diff_sq / base_sq)) if base_sq > 0 else None,
            "max_abs_diff": max((m["max_abs_diff"] for m in comparable), default=None),
            "delta_alpha": (weight or {}).get("spectral_delta", {}).get("alpha"),
        })
    return rollup


def _weight_name(version: VersionWeights, members: Any) -> str | None:
    for member in members:
        if member.role in ("weight", "embedding"):
            return version.graph.tensors[member.tensor_id].name
    return None


def _verdict(tensors: list[dict[str, Any]], only_base: int, only_target: int, same_layers: bool) -> dict[str, Any]:
    comparable = [t for t in tensors if "rel_l2" in t]
    mismatched = sum(1 for t in tensors if "shape_mismatch" in t)
    base_sq = sum(t["base_l2"] ** 2 for t in comparable)
    diff_sq = sum(t["l2_diff"] ** 2 for t in comparable)
    overall = float(np.sqrt(diff_sq / base_sq)) if base_sq > 0 else (0.0 if diff_sq == 0 else None)
    cosines = [t["cosine"] for t in comparable if t["cosine"] is not None]
    changed = [t for t in comparable if not t["identical"]]
    evidence = {
        "overall_rel_l2": overall,
        "min_cosine": min(cosines) if cosines else None,
        "median_rel_l2": float(np.median([t["rel_l2"] for t in changed if t["rel_l2"] is not None]))
        if changed
        else 0.0,
        "tensors_compared": len(tensors),
        "tensors_identical": sum(1 for t in tensors if t["identical"]),
        "tensors_changed": len(changed),
        "shape_mismatches": mismatched,
        "only_in_base": only_base,
        "only_in_target": only_target,
        "thresholds": {"fine_tune_rel_l2": FINE_TUNE_REL_L2, "fine_tune_min_cosine": FINE_TUNE_MIN_COSINE},
    }
    if only_base or only_target or mismatched or not same_layers:
        kind = "architecture change"
    elif not changed:
        kind = "identical"
    elif (overall or 0.0) <= FINE_TUNE_REL_L2 and min(cosines, default=1.0) >= FINE_TUNE_MIN_COSINE:
        kind = "small fine-tune"
    else:
        kind = "broad retrain"
    return {"verdict": kind, "evidence": evidence}


def _summary_of(tensor: Tensor) -> dict[str, Any]:
    return {"id": tensor.id, "name": _name(tensor), "shape": list(tensor.shape)}


def diff_versions(
    store: WeightStore, base: VersionWeights, target: VersionWeights, model: str, versions: tuple[int, int]
) -> dict[str, Any]:
    """The whole diff body: per tensor, per layer, the trained sidecars when both have one, a verdict."""
    pairs, only_base, only_target = match_effective(base.graph, target.graph)
    tensors = [diff_pair(store, base, target, pair) for pair in pairs]
    architecture = _architecture(base.graph, target.graph)
    body: dict[str, Any] = {
        "model": model,
        "base": str(versions[0]),
        "target": str(versions[1]),
        **_verdict(tensors, len(only_base), len(only_target), architecture["same_layers"]),
        "architecture": architecture,
        "only_in_base": [_summary_of(t) for t in only_base],
        "only_in_target": [_summary_of(t) for t in only_target],
        "layers": _layer_rollup(target, tensors),
        "tensors": tensors,
        "trained": None,
        "analysis": {
            "base": analysis_summary(store.analysis(base, start=True)),
            "target": analysis_summary(store.analysis(target, start=True)),
        },
    }
    if base.trained and target.trained:
        t_pairs, t_base, t_target = match_trained(base, target)
        t_tensors = [diff_pair(store, base, target, pair) for pair in t_pairs]
        body["trained"] = {
            **_verdict(t_tensors, len(t_base), len(t_target), True),
            "only_in_base": [_summary_of(t) for t in t_base],
            "only_in_target": [_summary_of(t) for t in t_target],
            "tensors": t_tensors,
        }
    return body
