"""What this process serves now: loaded versions, readiness, and its copy of the repository index.

This process never decides what to serve. The coordinator (``serving.coordinator``) decides, for the
whole server, and every worker process applies its decisions in two steps: ``prepare`` loads and
warms up new versions beside the serving ones, ``commit`` swaps to the decided set at once and
releases what left it. A model's versions live in one dict that is replaced whole, so a reader sees
either the old set or the new set, never a mix; a version swapped out keeps serving the requests
that already hold it, and is released when they are done.

``load_model``, ``unload_model`` and ``poll`` hand the request to the coordinator through
``control``: in this process with one worker, over the supervisor's channel with several.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import anyio.to_thread

from service.errors import ModelLoadError, ModelNotFound, ModelNotReady, ServiceError
from service.ops.logs import note_model
from service.ops.prometheus import ServiceMetrics
from service.serving.admission import AdmissionGate
from service.serving.batching import BatchPolicy, DynamicBatcher
from service.serving.loaded_version import LoadedVersion
from service.serving.model_config import ModelConfig
from service.serving.plan import (
    TRANSIENT,
    Index,
    IndexEntry,
    PrepareReport,
    Served,
    State,
    VersionPlan,
    plan_key,
)
from service.serving.runtime import OnnxModel, SessionOptions
from service.serving.triton_stats import InferenceStats, StatsBook
from service.serving.warmup import WarmupOutcome, rows_are_independent, warm_up
from service.settings import Settings

__all__ = ["IndexEntry", "ModelRegistry", "RepositoryControl", "State"]

log = logging.getLogger(__name__)


class RepositoryControl(Protocol):
    """Where this process sends repository changes: the one place that decides them."""

    async def load(self, name: str) -> None: ...

    async def unload(self, name: str) -> None: ...

    async def poll(self) -> None: ...


class ModelRegistry:
    """Owns every version this process has loaded; created and closed by the app's lifespan."""

    def __init__(
        self,
        settings: Settings,
        stats: StatsBook,
        on_change: Callable[[], None] | None = None,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._stats = stats
        self._models: dict[str, dict[int, LoadedVersion]] = {}
        self._index: Index = {}
        self._pending: dict[tuple[str, int], LoadedVersion] = {}
        self._stopping = False
        self._draining = False
        self._started = False
        self._on_change = on_change
        self._metrics = metrics
        self.control: RepositoryControl | None = None
        """Set by the app: where load, unload and poll go."""

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
            if any(key[0] == name and entry.state in TRANSIENT for key, entry in self._index.items()):
                raise ModelNotReady(f"model '{name}' has no ready version yet")
            raise ModelNotFound(name)  # never loaded, unloaded, or every version refused (see the index)
        if version is None:
            return versions[max(versions)]
        found = versions.get(version)
        if found is None:
            entry = self._index.get((name, version))
            if entry is not None and entry.state in TRANSIENT:
                raise ModelNotReady(f"model '{name}' version {version} is not ready yet")
            raise ModelNotFound(name, version)
        return found

    def lease(self, name: str, version: int | None = None) -> Lease:
        """Hold a version for one request (``async with``), so an unload or swap waits for it to finish."""
        return Lease(self, name, version)

    def hold(self, name: str, version: int | None = None) -> LoadedVersion:
        """What `lease` does on entering, for the inference path, which releases the version itself
        (``LoadedVersion.release``, in a ``finally``) and so makes no `Lease` per request."""
        if self._draining:
            raise ModelNotReady("server is shutting down")
        loaded = self.get(name, version)
        note_model(loaded.name, loaded.version_text)
        loaded.hold()
        return loaded

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        entries = sorted(self._index.values(), key=lambda e: (e.name, e.version or 0))
        return [e for e in entries if e.state is State.READY] if ready_only else entries

    def statistics(self, loaded: LoadedVersion) -> dict[str, Any]:
        """Triton's statistics of a served version, summed over every worker process."""
        return self._stats.as_json(loaded.name, loaded.version)

    def in_flight(self) -> int:
        return sum(lv._in_flight for lv in self.loaded())

    # ---------------------------------------------------------------- repository changes (decided elsewhere)

    async def load_model(self, name: str) -> None:
        """Load or reload every selected version of one model, in every worker process."""
        await self._control().load(name)

    async def unload_model(self, name: str) -> None:
        await self._control().unload(name)

    async def poll(self) -> None:
        """Bring the server in line with the repository folder."""
        await self._control().poll()

    def _control(self) -> RepositoryControl:
        if self.control is None:
            raise ModelNotReady("the server is still starting")
        return self.control

    # ---------------------------------------------------------------- applying decisions

    def set_index(self, index: Index) -> None:
        self._index = dict(index)

    async def prepare(self, plans: list[VersionPlan]) -> PrepareReport:
        """Load and warm up versions beside the serving ones; why each that failed did, and the
        warnings of those that loaded (by plan key)."""
        report = PrepareReport()
        for plan in plans:
            name, version = plan.key
            if self._holds(plan):
                held = self._pending.get(plan.key) or self._models[name][version]
                if held.warning:
                    report.warnings[plan_key(name, version)] = held.warning
                continue
            stats = self._stats.for_version(name, version)
            try:
                loaded = await anyio.to_thread.run_sync(self._build, plan, stats)
            except ServiceError as exc:
                log.error("cannot load: %s", exc.message)
                report.failures[plan_key(name, version)] = exc.message
                continue
            except Exception as exc:  # never let one bad version take the worker down
                log.exception("unexpected failure loading %s version %d", name, version)
                report.failures[plan_key(name, version)] = f"cannot load: {exc!r}"
                continue
            if loaded.warning:
                report.warnings[plan_key(name, version)] = loaded.warning
            previous = self._pending.pop(plan.key, None)
            if previous is not None:
                await previous.retire(0)
            self._pending[plan.key] = loaded
            log.info("%s version %d is loaded and warmed up", name, version)
        return report

    async def commit(self, served: Served, index: Index, load_failures: list[str] | None = None) -> None:
        """Serve exactly ``served`` (prepared or already loaded), then release what left it."""
        models: dict[str, dict[int, LoadedVersion]] = {}
        started: list[LoadedVersion] = []
        for name, versions in served.items():
            current = self._models.get(name, {})
            chosen: dict[int, LoadedVersion] = {}
            for version, plan in sorted(versions.items()):
                pending = self._pending.get(plan.key)
                if pending is not None and pending.identity == plan.identity:
                    chosen[version] = self._pending.pop(plan.key)
                    started.append(chosen[version])
                elif version in current and current[version].identity == plan.identity:
                    chosen[version] = current[version]
                else:
                    raise ModelLoadError(f"{name} version {version} was never prepared in this process")
            if chosen:
                models[name] = chosen
        unused = list(self._pending.values())
        self._pending.clear()
        kept = {id(lv) for versions in models.values() for lv in versions.values()}
        leaving = [lv for lv in self.loaded() if id(lv) not in kept]
        for loaded in started:
            if loaded.runner is not None:
                loaded.runner.start()
        during = dict(index)
        for loaded in leaving:
            if loaded.version not in models.get(loaded.name, {}):
                during[(loaded.name, loaded.version)] = IndexEntry(loaded.name, loaded.version, State.UNLOADING)
        self._models = models
        self._index = during
        self._changed()
        if self._metrics is not None:
            for name in load_failures or []:
                self._metrics.load_failures.labels(name).inc()
        for loaded in unused:
            await loaded.retire(0)
        await asyncio.gather(*(loaded.retire(self._settings.drain_timeout_s) for loaded in leaving))
        self._index = dict(index)
        self._started = True

    # ---------------------------------------------------------------- lifecycle

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
        leaving = [*self.loaded(), *self._pending.values()]
        self._models = {}
        self._pending.clear()
        for loaded in leaving:
            self._index[(loaded.name, loaded.version)] = IndexEntry(
                loaded.name, loaded.version, State.UNAVAILABLE, "server stopped"
            )
        self._changed()
        for loaded in leaving:
            await loaded.retire(self._settings.drain_timeout_s)

    # ---------------------------------------------------------------- internals

    def _holds(self, plan: VersionPlan) -> bool:
        """Already serving or prepared with the same bytes and config."""
        pending = self._pending.get(plan.key)
        if pending is not None and pending.identity == plan.identity:
            return True
        current = self._models.get(plan.spec.name, {}).get(plan.spec.version)
        return current is not None and current.identity == plan.identity

    def _build(self, plan: VersionPlan, stats: InferenceStats) -> LoadedVersion:
        settings = self._settings
        spec, config = plan.spec, plan.config
        label = f"{spec.name} version {spec.version}"
        options = SessionOptions(
            providers=config.providers or settings.providers,
            strict_providers=settings.strict_providers if config.strict_providers is None else config.strict_providers,
            intra_op_threads=settings.intra_op_threads if config.intra_op_threads is None else config.intra_op_threads,
            inter_op_threads=settings.inter_op_threads if config.inter_op_threads is None else config.inter_op_threads,
            graph_optimization=config.graph_optimization or settings.graph_optimization,
        )
        model = OnnxModel.load(spec.model_path, options, label)
        warmed = warm_up(model, config.warmup) if settings.warmup else None
        fingerprint = (plan.size, int(plan.digest[:15], 16))
        loaded = LoadedVersion(
            spec, model, config, stats, None, fingerprint, metrics=self._metrics, digest=plan.digest
        )
        loaded.warning = warmed.warning if warmed is not None else None
        loaded.runner = self._runner(model, config, loaded, label, warmed)
        if loaded.runner is None:
            loaded.gate = AdmissionGate(
                label,
                settings.max_concurrent_runs,
                config.batching.max_queue_size or settings.max_queue_size,
                settings.request_timeout_s,
            )
        return loaded

    def _runner(
        self, model: OnnxModel, config: ModelConfig, loaded: LoadedVersion, label: str, warmed: WarmupOutcome | None
    ) -> DynamicBatcher | None:
        batching = config.batching
        max_batch = batching.max_batch_size or self._settings.max_batch_size
        batchable = all(spec.batched for spec in (*model.inputs, *model.outputs))
        if not batching.enabled or max_batch <= 1 or not batchable:
            return None
        if warmed is not None:
            # The signature allows stacking along axis 0; the model itself must agree (see warmup).
            why = "no warm-up input ran" if warmed.feeds is None else rows_are_independent(model, warmed.feeds)
            if why is not None:
                loaded.batching_off = why
                log.info("%s: requests run one by one, not batched: %s", label, why)
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
            model.run_sync, policy, label, loaded.observe_execution, loaded.observe_batch_failure, loaded.observe_queue
        )

    def _changed(self) -> None:
        if self._metrics is not None:
            self._metrics.models_loaded.set(sum(len(versions) for versions in self._models.values()))
        if self._on_change is not None:
            self._on_change()


class Lease:
    """``async with registry.lease(name, version) as loaded`` (or ``with``: entering needs no await): the
    version is held from entering to leaving. A class rather than an ``asynccontextmanager``: entering
    and leaving an async generator costs about a microsecond more. The inference path holds versions
    with `ModelRegistry.hold` instead, without a lease object."""

    __slots__ = ("_loaded", "_name", "_registry", "_version")

    def __init__(self, registry: ModelRegistry, name: str, version: int | None) -> None:
        self._registry = registry
        self._name = name
        self._version = version
        self._loaded: LoadedVersion | None = None

    def __enter__(self) -> LoadedVersion:
        loaded = self._loaded = self._registry.hold(self._name, self._version)
        return loaded

    def __exit__(self, *exc_info: object) -> None:
        loaded, self._loaded = self._loaded, None
        if loaded is not None:
            loaded.release()

    async def __aenter__(self) -> LoadedVersion:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__()
