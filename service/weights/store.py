"""The app-owned weight store: every figure computed once per tensor content, bounded caches,
all work in one worker thread at a time so weight inspection never takes the cores predictions need.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, Generic, TypeVar

import anyio
import anyio.to_thread
import numpy as np

from service.settings import WeightSettings
from service.weights.graph import ParamTensor
from service.weights.spectral import spectral_metrics
from service.weights.tensor_stats import HistogramSpec, histogram_counts, tensor_stats
from service.weights.trained import TrainedTensor
from service.weights.values import TensorValues
from service.weights.version import VersionWeights, open_version

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")

Tensor = ParamTensor | TrainedTensor


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


class WeightStore:
    """Caches keyed by content hash; blocking methods here, ``call`` runs them off the event loop."""

    def __init__(self, options: WeightSettings | None = None) -> None:
        self.options = options or WeightSettings()
        size = self.options.cache_entries
        self._versions: LruCache[Hashable, VersionWeights] = LruCache(self.options.cached_versions)
        self._hashes: LruCache[Hashable, str] = LruCache(size)
        self._stats: LruCache[Hashable, dict[str, Any]] = LruCache(size)
        self._spectral: LruCache[Hashable, dict[str, Any]] = LruCache(size)
        self._histograms: LruCache[Hashable, dict[str, Any]] = LruCache(size)
        self._limiter: anyio.CapacityLimiter | None = None

    async def call(self, func: Callable[..., T], *args: Any) -> T:
        """Run blocking weight work in the store's single worker thread."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)

    def cache_sizes(self) -> dict[str, int]:
        """Entries held per cache (each bounded by the options)."""
        return {
            "versions": len(self._versions),
            "hashes": len(self._hashes),
            "stats": len(self._stats),
            "spectral": len(self._spectral),
            "histograms": len(self._histograms),
        }

    def open(
        self, label: str, model_path: Path, weights_path: Path | None = None, manifest: dict[str, Any] | None = None
    ) -> VersionWeights:
        key = (_file_key(model_path), _file_key(weights_path), label)
        return self._versions.get_or_compute(key, lambda: open_version(label, model_path, weights_path, manifest))

    def content_hash(self, version: VersionWeights, tensor: Tensor) -> str:
        """sha256 of the stored bytes (memoised per file state and tensor)."""
        source = version.weights_path if isinstance(tensor, TrainedTensor) else version.model_path
        key = (_file_key(source), tensor.id)
        return self._hashes.get_or_compute(key, lambda: version.values(tensor).sha256())

    def _content_key(
        self, version: VersionWeights, tensor: Tensor, values: TensorValues
    ) -> tuple[str, int | None, str, str]:
        """Same bytes, same axis, same dequantization: same figures."""
        quant = ""
        if values.quantized:
            digest = hashlib.sha256()
            for part in (values.scale, values.zero_point):
                if part is not None:
                    digest.update(np.ascontiguousarray(part).tobytes())
            quant = f"{digest.hexdigest()}:{values.quant_axis}"
        return (self.content_hash(version, tensor), values.out_axis, str(values.stored.dtype), quant)

    def stats(self, version: VersionWeights, tensor: Tensor) -> dict[str, Any]:
        values = version.values(tensor)
        key = self._content_key(version, tensor, values)
        stats = self._stats.get_or_compute(key, lambda: tensor_stats(values))
        return stats | {"sha256": key[0]}

    def spectral(self, version: VersionWeights, tensor: Tensor) -> dict[str, Any] | None:
        conv = _is_conv(tensor)
        if not _has_spectrum(tensor):
            return None
        values = version.values(tensor)
        budget = self.options.spectral_budget
        key = (self._content_key(version, tensor, values), conv, budget)
        # Stored values go in as they are: slices are widened to float64 one at a time, and a
        # weight over the budget is skipped before any of it is read.
        weight = values.to_float64() if values.quantized else values.stored
        return self._spectral.get_or_compute(key, lambda: spectral_metrics(weight, conv, budget))

    def histogram(self, version: VersionWeights, tensor: Tensor, spec: HistogramSpec) -> dict[str, Any]:
        values = version.values(tensor)
        key = (self._content_key(version, tensor, values), spec)
        return self._histograms.get_or_compute(key, lambda: histogram_counts(values, spec))


def _is_conv(tensor: Tensor) -> bool:
    if isinstance(tensor, TrainedTensor):
        return len(tensor.shape) >= 3
    return tensor.is_conv_weight


def _has_spectrum(tensor: Tensor) -> bool:
    """2-D weights and convolution weights; biases, norms and scalars have no spectrum."""
    if isinstance(tensor, TrainedTensor):
        return len(tensor.shape) >= 2 and tensor.key.endswith("weight")
    return tensor.role in ("weight", "embedding") and (len(tensor.shape) == 2 or tensor.is_conv_weight)
