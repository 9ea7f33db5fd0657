"""What is loaded now: load, swap, unload, readiness, and the index of every version's state.

A model's versions live in one dict that is replaced whole, so a reader sees either the old set or
the new set, never a mix. A new version is loaded and warmed up before it is swapped in; a version
swapped out keeps serving the requests that already hold it, and is released when they are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import anyio.to_thread

from service.errors import (
    InvalidRequest,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    ServiceError,
)
from service.ops.logs import note_model
from service.ops.prometheus import ServiceMetrics
from service.serving.admission import AdmissionGate
from service.serving.batching import BatchPolicy, DynamicBatcher
from service.serving.loaded_version import LoadedVersion
from service.serving.model_checks import check_version
from service.serving.model_config import ModelConfig
from service.serving.repository import MODEL_FILE, ModelSpec, VersionSpec, scan, scan_model, validate_model_name
from service.serving.runtime import OnnxModel, SessionOptions
from service.serving.triton_stats import InferenceStats
from service.settings import Settings

log = logging.getLogger(__name__)


class State(StrEnum):
    READY = "READY"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


_TRANSIENT = frozenset({State.LOADING, State.UNLOADING})
"""States a client should retry through (503); the others are final until the repository changes (404)."""


@dataclass(slots=True)
class IndexEntry:
    name: str
    version: int | None
    state: State
    reason: str = ""

    def as_json(self) -> dict[str, str]:
        out = {"name": self.name, "state": self.state.value, "reason": self.reason}
        if self.version is not None:
            out["version"] = str(self.version)
        return out


class ModelRegistry:
    """Owns every loaded version; created and closed by the app's lifespan."""

    def __init__(
        self,
        settings: Settings,
        on_change: Callable[[], None] | None = None,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._root = Path(settings.repository)
        self._models: dict[str, dict[int, LoadedVersion]] = {}
        self._index: dict[tuple[str, int | None], IndexEntry] = {}
        # Files that failed to load, by fingerprint: polling retries them only once they change.
        self._rejected: dict[tuple[str, int], tuple[int, int]] = {}
        self._lock = asyncio.Lock()
        self._stopping = False
        self._draining = False
        self._started = False
        self._on_change = on_change
        self._metrics = metrics

    # ---------------------------------------------------------------- queries (hot path: no awaits)

    @property
    def ready(self) -> bool:
        return self._started and not self._stopping and not self._draining

    def names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, name: str) -> list[int]:
        return sorted(self._models.get(name, {}))

    def loaded(self) -> list[LoadedVersion]:
        return [lv for name in self.names() for lv in self._models[name].values()]

    def get(self, name: str, version: int | None = None) -> LoadedVersion:
        versions = self._models.get(name)
        if not versions:
            if any(key[0] == name and entry.state in _TRANSIENT for key, entry in self._index.items()):
                raise ModelNotReady(f"model '{name}' has no ready version yet")
            raise ModelNotFound(name)  # never loaded, unloaded, or every version refused (see the index)
        if version is None:
            return versions[max(versions)]
        found = versions.get(version)
        if found is None:
            entry = self._index.get((name, version))
            if entry is not None and entry.state in _TRANSIENT:
                raise ModelNotReady(f"model '{name}' version {version} is not ready yet")
            raise ModelNotFound(name, version)
        return found

    @contextlib.asynccontextmanager
    async def lease(self, name: str, version: int | None = None) -> AsyncIterator[LoadedVersion]:
        """Hold a version for one request, so an unload or swap waits for it to finish."""
        if self._draining:
            raise ModelNotReady("server is shutting down")
        loaded = self.get(name, version)
        note_model(loaded.name, loaded.version)
        loaded._enter()
        try:
            yield loaded
        finally:
            loaded._leave()

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        entries = sorted(self._index.values(), key=lambda e: (e.name, e.version or 0))
        return [e for e in entries if e.state is State.READY] if ready_only else entries

    def in_flight(self) -> int:
        return sum(lv._in_flight for lv in self.loaded())

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        for spec in scan(self._root):
            await self._apply(spec, force=False)
        self._started = True

    async def load_model(self, name: str) -> None:
        """Load or reload every selected version of one model from the repository folder."""
        validate_model_name(name)
        directory = self._root / name
        if directory.is_symlink() or not directory.is_dir():
            raise ModelNotFound(name)
        spec = await anyio.to_thread.run_sync(scan_model, directory)
        failures = await self._apply(spec, force=True)
        if failures:
            # Triton answers a failed load with 400 and the reason; what was serving stays in place.
            raise InvalidRequest(f"failed to load '{name}': {'; '.join(failures)}")
        if not self._models.get(name):
            raise InvalidRequest(f"failed to load '{name}': no version folder holds a {MODEL_FILE}")

    async def unload_model(self, name: str) -> None:
        validate_model_name(name)
        async with self._lock:
            current = self._models.pop(name, None)
            if current is None and not any(key[0] == name for key in self._index):
                raise ModelNotFound(name)
            await self._retire(name, list((current or {}).values()), "unloaded")
            self._changed()

    async def poll(self) -> None:
        """Bring the loaded set in line with the folder: new and changed versions in, removed ones out."""
        if not await anyio.to_thread.run_sync(self._root.is_dir):
            # A repository that vanished (unmounted volume, a rename in progress) is not an order to
            # unload everything: keep serving and look again next time.
            log.warning("model repository %s is missing; keeping the loaded models", self._root)
            return
        specs = await anyio.to_thread.run_sync(scan, self._root)
        seen = {spec.name for spec in specs}
        for spec in specs:
            await self._apply(spec, force=False)
        for name in [name for name in self._models if name not in seen]:
            async with self._lock:
                await self._retire(name, list(self._models.pop(name).values()), "removed from the repository")
                self._changed()

    def begin_shutdown(self) -> None:
        """Turn readiness false while requests already accepted keep being served (safe in a signal handler)."""
        self._stopping = True

    async def drain(self, timeout_s: float) -> None:
        """Stop taking requests (readiness turns false) and wait for those in flight."""
        self._stopping = True
        self._draining = True
        deadline = time.monotonic() + timeout_s
        while self.in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def aclose(self) -> None:
        self._draining = True
        async with self._lock:
            for name in list(self._models):
                await self._retire(name, list(self._models.pop(name).values()), "server stopped")
            self._changed()

    # ---------------------------------------------------------------- internals

    async def _apply(self, spec: ModelSpec, *, force: bool) -> list[str]:
        """Bring one model in line with its folder; returns why versions tried this time failed."""
        async with self._lock:
            current = dict(self._models.get(spec.name, {}))
            if spec.config_error is not None:
                self._index[(spec.name, None)] = IndexEntry(spec.name, None, State.UNAVAILABLE, spec.config_error)
                return [spec.config_error]
            self._index.pop((spec.name, None), None)
            wanted = {v.version: v for v in spec.versions}
            selected = spec.config.version_policy.select(list(wanted))
            if not wanted:
                self._index[(spec.name, None)] = IndexEntry(spec.name, None, State.UNAVAILABLE, "no version folders")
            fresh: dict[int, LoadedVersion] = {}
            failures: list[str] = []
            for version in selected:
                existing = current.get(version)
                fingerprint = _fingerprint(wanted[version])
                if existing is not None and existing.fingerprint == fingerprint and existing.config == spec.config:
                    continue  # unchanged files and config: keep serving what is loaded
                if not force and self._rejected.get((spec.name, version)) == fingerprint:
                    continue  # same bad files as last time: the index already says why
                loaded = await self._load_version(wanted[version], spec.config)
                if loaded is not None:
                    fresh[version] = loaded
                else:
                    failures.append(self._index[(spec.name, version)].reason)
            replaced = {v: lv for v, lv in current.items() if v in fresh or v not in selected}
            updated = {v: lv for v, lv in current.items() if v not in replaced} | fresh
            if updated:
                self._models[spec.name] = dict(sorted(updated.items()))
            else:
                self._models.pop(spec.name, None)
            for loaded in fresh.values():
                self._index[(spec.name, loaded.version)] = IndexEntry(spec.name, loaded.version, State.READY)
            gone = [lv for v, lv in replaced.items() if v not in fresh]
            swapped = [lv for v, lv in replaced.items() if v in fresh]
            self._changed()
            await self._retire(spec.name, gone, "not selected by the version policy or removed")
            for old in swapped:
                await old.retire(self._settings.drain_timeout_s)
            for version in [v for (n, v) in list(self._index) if n == spec.name and v is not None]:
                if version not in wanted and version not in updated:
                    self._index.pop((spec.name, version), None)
                    self._rejected.pop((spec.name, version), None)
            return failures

    async def _load_version(self, spec: VersionSpec, config: ModelConfig) -> LoadedVersion | None:
        key = (spec.name, spec.version)
        previous = self._index.get(key)
        self._index[key] = IndexEntry(spec.name, spec.version, State.LOADING)
        try:
            loaded = await anyio.to_thread.run_sync(self._build, spec, config)
        except ServiceError as exc:
            log.error("cannot load: %s", exc.message)
            self._rejected[key] = _fingerprint(spec)
            if self._metrics is not None:
                self._metrics.load_failures.labels(spec.name).inc()
            serving = previous is not None and previous.state is State.READY
            state = State.READY if serving else State.UNAVAILABLE
            reason = f"new files rejected, still serving the previous load: {exc.message}" if serving else exc.message
            self._index[key] = IndexEntry(spec.name, spec.version, state, reason)
            return None
        except Exception as exc:  # never let one bad version take the server (or the poller) down
            log.exception("unexpected failure loading %s version %d", spec.name, spec.version)
            self._rejected[key] = _fingerprint(spec)
            if self._metrics is not None:
                self._metrics.load_failures.labels(spec.name).inc()
            self._index[key] = IndexEntry(spec.name, spec.version, State.UNAVAILABLE, f"cannot load: {exc!r}")
            return None
        self._rejected.pop(key, None)
        if loaded.runner is not None:
            loaded.runner.start()
        log.info("%s version %d is loaded and warmed up", spec.name, spec.version)
        return loaded

    def _build(self, spec: VersionSpec, config: ModelConfig) -> LoadedVersion:
        settings = self._settings
        label = f"{spec.name} version {spec.version}"
        fingerprint = _fingerprint(spec)
        check_version(spec, settings.max_model_bytes, settings.verify_manifest)
        options = SessionOptions(
            providers=config.providers or settings.providers,
            strict_providers=settings.strict_providers if config.strict_providers is None else config.strict_providers,
            intra_op_threads=settings.intra_op_threads if config.intra_op_threads is None else config.intra_op_threads,
            inter_op_threads=settings.inter_op_threads if config.inter_op_threads is None else config.inter_op_threads,
            graph_optimization=config.graph_optimization or settings.graph_optimization,
        )
        model = OnnxModel.load(spec.model_path, options, label)
        if settings.warmup:
            try:
                model.warm_up()
            except ServiceError as exc:
                raise ModelLoadError(f"{label}: warm-up run failed: {exc.message}") from exc
        loaded = LoadedVersion(spec, model, config, InferenceStats(), None, fingerprint, metrics=self._metrics)
        loaded.runner = self._runner(model, config, loaded, label)
        if loaded.runner is None:
            loaded.gate = AdmissionGate(
                label,
                settings.max_concurrent_runs,
                config.batching.max_queue_size or settings.max_queue_size,
                settings.request_timeout_s,
            )
        return loaded

    def _runner(
        self, model: OnnxModel, config: ModelConfig, loaded: LoadedVersion, label: str
    ) -> DynamicBatcher | None:
        batching = config.batching
        max_batch = batching.max_batch_size or self._settings.max_batch_size
        batchable = all(spec.batched for spec in (*model.inputs, *model.outputs))
        if not batching.enabled or max_batch <= 1 or not batchable:
            return None
        policy = BatchPolicy(
            max_batch_size=max_batch,
            max_queue_delay_s=(
                batching.max_queue_delay_ms
                if batching.max_queue_delay_ms is not None
                else self._settings.max_queue_delay_ms
            )
            / 1000.0,
            preferred_batch_sizes=batching.preferred_batch_sizes,
            max_queue_size=batching.max_queue_size or self._settings.max_queue_size,
            timeout_s=self._settings.request_timeout_s,
        )
        return DynamicBatcher.blocking(
            model.run_sync, policy, label, loaded.observe_execution, loaded.observe_batch_failure
        )

    async def _retire(self, name: str, versions: list[LoadedVersion], reason: str) -> None:
        for loaded in versions:
            self._index[(name, loaded.version)] = IndexEntry(name, loaded.version, State.UNLOADING)
        for loaded in versions:
            await loaded.retire(self._settings.drain_timeout_s)
            self._index[(name, loaded.version)] = IndexEntry(name, loaded.version, State.UNAVAILABLE, reason)

    def _changed(self) -> None:
        if self._metrics is not None:
            self._metrics.models_loaded.set(sum(len(versions) for versions in self._models.values()))
        if self._on_change is not None:
            self._on_change()


def _fingerprint(spec: VersionSpec) -> tuple[int, int]:
    """Cheap change detection for polling: the model file's size and modification time."""
    try:
        stat = spec.model_path.stat()
    except OSError:
        return (-1, -1)
    return (stat.st_size, stat.st_mtime_ns)
