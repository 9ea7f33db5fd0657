"""One loaded model version: its session, its runner (batcher or admission gate), its statistics, and
the count of requests holding it, so a swap or unload can wait for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import numpy as np

from service.errors import Overloaded, RequestTimeout
from service.ops.prometheus import ServiceMetrics
from service.protocol.encode import ResponseEncoder
from service.protocol.request_plan import RequestPlan
from service.serving import batching
from service.serving.admission import AdmissionGate
from service.serving.batching import DynamicBatcher, Outcome, RunCost, elements, timed_call
from service.serving.model_config import ModelConfig
from service.serving.repository import VersionSpec
from service.serving.runtime import OnnxModel
from service.serving.triton_stats import InferenceStats


@dataclass(eq=False)
class LoadedVersion:
    spec: VersionSpec
    model: OnnxModel
    config: ModelConfig
    stats: InferenceStats
    runner: DynamicBatcher | None
    """None when the model runs each request on its own (batching off or no dynamic batch axis)."""
    fingerprint: tuple[int, int]
    """Identifies the loaded bytes: (size, leading bits of the snapshot's content digest)."""
    gate: AdmissionGate | None = None
    """Bounds runs and waiting requests when there is no runner (whose queue is bounded itself)."""
    metrics: ServiceMetrics | None = None
    digest: str = ""
    """Content digest of the snapshot this version was loaded from (see ``serving.snapshots``)."""
    warning: str | None = None
    """Why the version serves with a caveat (its warm-up could not run), for the index and metadata."""
    batching_off: str | None = None
    """Why requests run one by one although the signature would allow batching, for the config."""
    _in_flight: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _cost: RunCost = field(default_factory=RunCost, init=False, repr=False)
    """How long this version's runs take (see `_run_alone`)."""
    _queue_time: Any = field(default=None, init=False, repr=False)
    _batch_size: Any = field(default=None, init=False, repr=False)
    request_plan: RequestPlan = field(init=False, repr=False)
    """Reads this signature's common requests in one pass (see ``protocol.request_plan``)."""
    response_encoder: ResponseEncoder = field(init=False, repr=False)
    """Writes this version's responses (see ``protocol.encode``)."""
    name: str = field(init=False)
    version: int = field(init=False)
    version_text: str = field(init=False, repr=False)
    """The version as responses, metrics and logs write it: made once, not on every request."""

    def __post_init__(self) -> None:
        # Plain attributes, not properties over ``spec``: every request reads them.
        self.name = self.spec.name
        self.version = self.spec.version
        self.version_text = str(self.spec.version)
        self.request_plan = RequestPlan(self.model.inputs, self.model.output_names)
        self.response_encoder = ResponseEncoder(self.name, self.version_text)
        # Labelled children resolved once: labels() locks and builds a key on every call.
        if self.metrics is not None:
            labels = (self.spec.name, str(self.spec.version))
            self._queue_time = self.metrics.queue_time.labels(*labels)
            self._batch_size = self.metrics.batch_size.labels(*labels)

    @property
    def identity(self) -> tuple[str, ModelConfig]:
        """What was loaded: the same bytes and config need no new session (see ``VersionPlan.identity``)."""
        return (self.digest, self.config)

    async def infer(self, feeds: dict[str, np.ndarray], rows: int) -> Outcome:
        try:
            if self.runner is not None:
                return await self.runner.submit(feeds, rows)  # its queue time: see `observe_queue`
            outcome = await self._run_alone(feeds, rows)
        except (Overloaded, RequestTimeout) as exc:
            if self.metrics is not None:
                reason = "queue_full" if isinstance(exc, Overloaded) else "timeout"
                self.metrics.rejected.labels(reason).inc()
            raise
        self.observe_queue([outcome.queue_ns])
        return outcome

    def observe_queue(self, queue_ns: list[int]) -> None:
        """Queue times of requests an execution answered (the runner reports each batch's at once)."""
        if self._queue_time is not None and self.metrics is not None:
            self.metrics.deferred.observe_many(self._queue_time, [value / 1e9 for value in queue_ns])

    async def _run_alone(self, feeds: dict[str, np.ndarray], rows: int) -> Outcome:
        enqueued = time.perf_counter_ns()
        gate = self.gate or AdmissionGate(self.model.label, 1, 0, 1.0)
        async with gate.slot():
            began = time.perf_counter_ns()
            size = elements(feeds)
            expected = self._cost.estimate_ns(size)
            if expected is not None and expected <= batching.INLINE_RUN_MAX_S * 1e9:
                # Measured to be short: on the event loop, as the batcher does (see service.serving.batching).
                outputs, run_ns = timed_call(self.model.run_sync, feeds)
            else:
                outputs, run_ns = await anyio.to_thread.run_sync(timed_call, self.model.run_sync, feeds)
            elapsed = time.perf_counter_ns() - began
            self._cost.observe(size, run_ns)
        self.observe_execution(rows, elapsed)
        return Outcome(outputs, began - enqueued, elapsed)

    def observe_execution(self, rows: int, compute_ns: int) -> None:
        """One model execution (a batch or a single request): statistics and the batch-size histogram."""
        self.stats.record_execution(rows, compute_ns)
        if self._batch_size is not None and self.metrics is not None:
            self.metrics.deferred.observe(self._batch_size, rows)

    def observe_batch_failure(self, requests: int, error: Exception) -> None:
        """A shared batch failed and its requests rerun one by one (see the batcher's warning)."""
        if self.metrics is not None:
            self.metrics.batch_failures.labels(self.spec.name, str(self.spec.version)).inc()

    def hold(self) -> None:
        """One more request holds this version (`ModelRegistry.hold`); `release` when it is done."""
        self._in_flight += 1
        if self._in_flight == 1:
            self._idle.clear()

    def release(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def retire(self, timeout_s: float) -> None:
        """Wait for the requests holding this version, then release its runner."""
        if self._in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout_s)
        if self.runner is not None:
            await self.runner.aclose()
