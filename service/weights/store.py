"""The app-owned weight store: every figure computed once per machine, kept on disk and in memory.

Statistics and spectral metrics are keyed by the tensor's content hash (sha256 of its stored bytes)
and whatever else changes them (shape, channel axis, storage type, dequantization, convolution
slicing), so the same weights in another version, another worker process or after a restart are
never computed again. The content hash itself is remembered per file state (device, inode, size,
times) and place in the file, so nobody hashes the same bytes twice either. Statistics are computed
in the request, in the store's one worker thread; spectral metrics of anything but tiny matrices by
the background analysis (``analysis.py``).
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import anyio
import anyio.to_thread
import numpy as np

from service.model_files import external_data
from service.settings import WeightSettings
from service.weights.analysis import Analyzer
from service.weights.analysis_task import AnalysisTask
from service.weights.disk_cache import DiskCache, Entry, cache_key
from service.weights.graph import ParamTensor
from service.weights.spectral import WW_COMPAT, base_document, matrix_shape, skip_reason
from service.weights.tensor_stats import HistogramSpec, histogram_counts, tensor_stats
from service.weights.trained import TrainedTensor
from service.weights.values import TensorValues
from service.weights.version import VersionWeights, open_version

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")

Tensor = ParamTensor | TrainedTensor
STATS_FORMAT = "stats-1"
SPECTRAL_FORMAT = "spectral-1"


class LruCache(Generic[K, V]):
    """A bounded, thread-safe least-recently-used map."""

    def __init__(self, capacity: int) -> None:
        self._capacity = max(capacity, 1)
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_compute(self, key: K, compute: Callable[[], V]) -> V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = compute()
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


def _file_key(path: Path | None) -> tuple[str, int, int] | None:
    if path is None:
        return None
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def _file_identity(path: Path) -> list[Any]:
    """What changes whenever a file's bytes may have: another file, or the same one written to."""
    stat = path.stat()
    return [str(path.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


Plan = AnalysisTask | dict[str, Any] | None
"""What a tensor's spectrum needs: an analysis, a finished document (skipped), or nothing."""


@dataclass(frozen=True, slots=True)
class _VersionPlan:
    """A version's matrices by cache key: the job's id, what the background does, what is skipped."""

    job_id: str
    by_tensor: dict[str, Plan]
    members: dict[str, list[Tensor]]
    tasks: dict[str, AnalysisTask]
    skipped: dict[str, dict[str, Any]]


class WeightStore:
    """Caches keyed by content hash; blocking methods here, ``call`` runs them off the event loop."""

    def __init__(self, options: WeightSettings | None = None, measure: bool = False) -> None:
        self.options = options or WeightSettings()
        self.disk = DiskCache(self.options.cache_dir, self.options.cache_max_bytes)
        self.analyzer = Analyzer(self.disk, self.options, measure)
        # The analysis threads hold the analyzer, never the store: a store nobody uses any more
        # stops them.
        weakref.finalize(self, self.analyzer.close)
        size = self.options.cache_entries
        self._versions: LruCache[Hashable, VersionWeights] = LruCache(self.options.cached_versions)
        self._hashes: LruCache[Hashable, str] = LruCache(size)
        self._stats: LruCache[Hashable, dict[str, Any]] = LruCache(size)
        self._histograms: LruCache[Hashable, dict[str, Any]] = LruCache(size)
        self._plans: LruCache[Hashable, _VersionPlan] = LruCache(self.options.cached_versions)
        self._limiter: anyio.CapacityLimiter | None = None

    def close(self) -> None:
        """Stop the background analysis of this process (what it finished stays on disk)."""
        self.analyzer.close()

    async def call(self, func: Callable[..., T], *args: Any) -> T:
        """Run blocking weight work in the store's single worker thread."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)

    def cache_sizes(self) -> dict[str, int]:
        """Entries held in this process's memory per cache (each bounded by the options)."""
        return {
            "versions": len(self._versions),
            "hashes": len(self._hashes),
            "stats": len(self._stats),
            "histograms": len(self._histograms),
        }

    def cache_report(self) -> dict[str, Any]:
        """This process's cache events (hits, misses, computed, corrupt, ...) and the folder's size."""
        return {"process": os.getpid(), "events": self.disk.counters.snapshot(), "folder": self.disk.usage()}

    def open(
        self,
        label: str,
        model_path: Path,
        weights_path: Path | None = None,
        manifest: dict[str, Any] | None = None,
        content_digest: str | None = None,
    ) -> VersionWeights:
        key = (_file_key(model_path), _file_key(weights_path), label, content_digest)
        return self._versions.get_or_compute(
            key, lambda: open_version(label, model_path, weights_path, manifest, content_digest)
        )

    # ------------------------------------------------------------------ content

    def _locator(self, version: VersionWeights, tensor: Tensor) -> list[Any]:
        """Where a tensor's bytes are: a file (its identity, or its name within a snapshot whose digest
        names the bytes) and the place in it."""

        def file(path: Path) -> list[Any]:
            if version.content_digest is not None:
                return ["snapshot", version.content_digest, path.relative_to(version.model_path.parent).as_posix()]
            return _file_identity(path)

        if isinstance(tensor, TrainedTensor):
            assert version.weights_path is not None
            return [*file(version.weights_path), tensor.offset, tensor.length]
        protos = [tensor.sparse.values, tensor.sparse.indices] if tensor.sparse is not None else [tensor.proto]
        located: list[Any] = []
        for proto in protos:
            data = external_data(proto, version.graph.directory)
            if data is None:
                located += [*file(version.model_path), tensor.name, proto.name]
            else:
                located += [*file(data.path), data.offset, data.length]
        return located

    def content_hash(self, version: VersionWeights, tensor: Tensor) -> str:
        """sha256 of the stored bytes, hashed once per machine and file state."""
        source = version.weights_path if isinstance(tensor, TrainedTensor) else version.model_path
        memory_key = (_file_key(source), tensor.id)

        def from_disk() -> str:
            key = cache_key("sha256", self._locator(version, tensor))
            entry = self.disk.get_or_compute("hashes", key, lambda: Entry(version.values(tensor).sha256()))
            return str(entry.doc)

        return self._hashes.get_or_compute(memory_key, from_disk)

    def _content_parts(self, version: VersionWeights, tensor: Tensor, values: TensorValues) -> list[Any]:
        """Same bytes, shape, axis and dequantization: same figures."""
        quant = ""
        if values.quantized:
            digest = hashlib.sha256()
            for part in (values.scale, values.zero_point):
                if part is not None:
                    digest.update(np.ascontiguousarray(part).tobytes())
            quant = f"{digest.hexdigest()}:{values.quant_axis}"
        return [self.content_hash(version, tensor), list(values.shape), str(values.stored.dtype), values.out_axis,
                quant]

    def stats(self, version: VersionWeights, tensor: Tensor) -> dict[str, Any]:
        values = version.values(tensor)
        parts = self._content_parts(version, tensor, values)
        key = cache_key(STATS_FORMAT, parts)

        def from_disk() -> dict[str, Any]:
            doc = self.disk.get_or_compute("stats", key, lambda: Entry(tensor_stats(values))).doc
            return doc if isinstance(doc, dict) else {}

        return self._stats.get_or_compute(key, from_disk) | {"sha256": parts[0]}

    def histogram(self, version: VersionWeights, tensor: Tensor, spec: HistogramSpec) -> dict[str, Any]:
        values = version.values(tensor)
        key = (tuple(map(str, self._content_parts(version, tensor, values))), spec)
        return self._histograms.get_or_compute(key, lambda: histogram_counts(values, spec))

    # ------------------------------------------------------------------ spectra

    def _plan(self, version: VersionWeights) -> _VersionPlan:
        key = (_file_key(version.model_path), _file_key(version.weights_path), version.label)
        return self._plans.get_or_compute(key, lambda: self._make_plan(version))

    def _make_plan(self, version: VersionWeights) -> _VersionPlan:
        by_tensor: dict[str, Plan] = {}
        members: dict[str, list[Tensor]] = {}
        tasks: dict[str, AnalysisTask] = {}
        skipped: dict[str, dict[str, Any]] = {}
        tensors: list[Tensor] = [*version.graph.tensors.values(), *version.trained.values()]
        for tensor in tensors:
            plan = by_tensor[tensor.id] = self._spectral_task(version, tensor)
            if plan is None:
                continue
            key = plan.key if isinstance(plan, AnalysisTask) else f"skipped:{tensor.id}"
            members.setdefault(key, []).append(tensor)
            if isinstance(plan, dict):
                skipped[key] = plan
            else:
                tasks.setdefault(key, plan)
        job_id = cache_key("job", sorted(members))[:16]
        return _VersionPlan(job_id, by_tensor, members, tasks, skipped)

    def spectral_task(self, version: VersionWeights, tensor: Tensor) -> Plan:
        """The analysis a tensor needs; a finished document when it is skipped without any (too
        small, too large); None when it has no spectrum at all."""
        return self._plan(version).by_tensor.get(tensor.id)

    def _spectral_task(self, version: VersionWeights, tensor: Tensor) -> Plan:
        if not _has_spectrum(tensor):
            return None
        conv = _is_conv(tensor)
        shape = matrix_shape(tuple(tensor.shape), conv)
        if shape is None:
            return {"status": "skipped", "skipped_reason": "not a 2-D or convolution weight"}
        reason = skip_reason(shape, self.analyzer.limits)
        if reason is not None:
            return base_document(shape) | {"status": "skipped", "skipped_reason": reason}
        values = version.values(tensor)
        key = cache_key(SPECTRAL_FORMAT, WW_COMPAT, conv, self._content_parts(version, tensor, values))
        return AnalysisTask(key, tensor, version.graph.directory, version.weights_path, conv, shape)

    def spectral(self, version: VersionWeights, tensor: Tensor) -> dict[str, Any] | None:
        """Spectral metrics when done (``analysis: done``), else what is known and the state of its
        analysis (``queued``, ``running``, ``failed``). Tiny matrices are analysed right here."""
        plan = self.spectral_task(version, tensor)
        if plan is None:
            return None
        label = {"layer_type": _layer_type(tensor)}
        if isinstance(plan, dict):
            return plan | (label if "layer_type" in plan else {}) | {"analysis": "done"}
        entry = self.analyzer.entry(plan.key)
        if entry is None and plan.work <= self.options.analysis_inline_work:
            entry = self.analyzer.compute_now(plan)
        if entry is not None:
            return dict(entry.doc) | label | {"analysis": "done"}
        state, info = self.analyzer.state(plan.key)
        doc = base_document(plan.shape) | label | {"status": state, "analysis": state}
        if state == "failed" and info is not None:
            doc["skipped_reason"] = info.get("reason")
        return doc

    def eigenvalues(self, version: VersionWeights, tensor: Tensor) -> np.ndarray | None:
        """The eigenvalues behind a finished analysis, or None."""
        plan = self.spectral_task(version, tensor)
        if not isinstance(plan, AnalysisTask):
            return None
        return self.analyzer.eigenvalues(plan.key)

    def analysis(self, version: VersionWeights, start: bool = True) -> dict[str, Any]:
        """Start (or join) the background analysis of a version's matrices; where it stands."""
        plan = self._plan(version)
        done: set[str] = set(plan.skipped)
        background: list[AnalysisTask] = []
        for key, task in plan.tasks.items():
            if task.work > self.options.analysis_inline_work:
                background.append(task)
                continue
            if self.analyzer.entry(key) is None:
                self.analyzer.compute_now(task)
            done.add(key)
        waiting = [t for t in background if self.analyzer.entry(t.key) is None and not self.analyzer.failed(t.key)]
        if start and waiting:
            self.analyzer.submit(plan.job_id, version.label, background)
        status = self.analyzer.job_status(plan.job_id, background, done)
        states: dict[str, str] = status.pop("states")
        layers = []
        for key, group in plan.members.items():
            matrix = plan.tasks.get(key)
            timing = self.analyzer.timing(key) if matrix is not None else None
            state = states.get(key, "done")
            entry = self.analyzer.entry(key) if state == "done" and key not in plan.skipped else None
            layers.append({
                "tensors": [{"id": t.id, "name": _name(t)} for t in group],
                "layers": sorted({c for t in group if isinstance(t, ParamTensor) for c in t.consumers}),
                "state": state,
                "work": matrix.work if matrix is not None else 0.0,
                "seconds": timing["seconds"] if timing else None,
                "computed_here": timing is not None,
                # the metrics of a finished matrix, so a watcher can fill it in without another call
                "spectral": plan.skipped.get(key) or (dict(entry.doc) if entry is not None else None),
            })
        return status | {"matrices": layers}


def _name(tensor: Tensor) -> str:
    return tensor.key if isinstance(tensor, TrainedTensor) else tensor.name


def _is_conv(tensor: Tensor) -> bool:
    if isinstance(tensor, TrainedTensor):
        return len(tensor.shape) >= 3
    return tensor.is_conv_weight


def _layer_type(tensor: Tensor) -> str:
    """How weightwatcher types the layer: Embedding tables are analysed like dense matrices."""
    if _is_conv(tensor):
        return "conv2d"
    if isinstance(tensor, ParamTensor) and tensor.role == "embedding":
        return "embedding"
    return "dense"


def _has_spectrum(tensor: Tensor) -> bool:
    """2-D weights and convolution weights; biases, norms and scalars have no spectrum."""
    if isinstance(tensor, TrainedTensor):
        return len(tensor.shape) >= 2 and tensor.key.endswith("weight")
    return tensor.role in ("weight", "embedding") and (len(tensor.shape) == 2 or tensor.is_conv_weight)

