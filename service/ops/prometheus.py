"""Prometheus metrics, in a registry each app owns (never prometheus-client's global one).

With several worker processes (``--workers N``) each process counts on its own, so one scrape sees
one worker. Set ``PROMETHEUS_MULTIPROC_DIR`` to an empty, writable folder before starting the
server and prometheus-client keeps the numbers in files there; ``GET /metrics`` then sums every
worker's files, whichever worker answers.

``weightserve serve --workers N`` (N > 1) does that by itself when the variable is unset, with a
private folder it removes at exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from itertools import repeat
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MEDIA_TYPE = "text/plain; version=0.0.4"
"""The text exposition format, as a response's media type: the HTTP layer adds the charset itself."""
CONTENT_TYPE = f"{MEDIA_TYPE}; charset=utf-8"
"""The ``Content-Type`` a scrape gets (one charset: Go's media type parser, Prometheus's, refuses two)."""

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def _multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


@contextlib.contextmanager
def shared_across_workers(workers: int) -> Iterator[None]:
    """Around starting N worker processes: give them one metrics folder (set before they import)."""
    if workers <= 1 or _multiprocess_dir() is not None:
        yield
        return
    directory = tempfile.mkdtemp(prefix="weightserve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    try:
        yield
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(directory, ignore_errors=True)


APPLY_AFTER_S = 0.005
"""How long hot-path metric updates may wait to be applied together."""


class _Pending(threading.local):
    """One thread's updates not yet applied, and the loop whose pass will apply them."""

    def __init__(self) -> None:
        self.amounts: dict[Any, float] = {}
        self.observed: dict[Any, list[float]] = {}
        self.counted: dict[tuple[Any, ...], list[float]] = {}
        """Values of `Deferred.count`, by its ``children`` tuple: one list append per event."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.scheduled = False


class Deferred:
    """Hot-path updates of prometheus-client metrics, added up and applied once per event-loop pass.

    Every update of a prometheus-client value takes a lock, and with several workers also a getpid()
    system call and a write into the process's mmap'd file; a small inference request made a dozen of
    them, a tenth of its CPU. Updates made on an event loop are summed here per labelled child and
    applied together by one timer callback ``APPLY_AFTER_S`` after the first of them, so one
    application serves every request of that span. A level such as the requests in flight is not
    counted up and down at all: it is read from where its owner keeps it when updates apply
    (`sample`). A scrape applies what is pending first, so this process's ``/metrics`` is always
    exact; another worker's figures lag by at most ``APPLY_AFTER_S``, far below any scrape interval.
    Each thread keeps its own pending updates, applied on its own thread; off an event loop they apply
    at once.
    """

    def __init__(self) -> None:
        self._local = _Pending()
        self._sampled: list[tuple[Any, Callable[[], float]]] = []

    def sample(self, child: Any, read: Callable[[], float]) -> None:
        """Set ``child`` (a gauge's) to ``read()`` whenever updates apply: a level the caller keeps in a
        plain attribute (requests in flight) costs the hot path nothing beyond `touch`."""
        self._sampled.append((child, read))

    def touch(self) -> None:
        """Make sure updates apply within ``APPLY_AFTER_S``, so a sampled level is seen to change."""
        self._pending()

    def inc(self, child: Any, amount: float = 1.0) -> None:
        """``child.inc(amount)`` (a counter's or gauge's labelled child; a gauge may go down)."""
        pending = self._pending()
        if pending is None:
            child.inc(amount)
        else:
            pending.amounts[child] = pending.amounts.get(child, 0.0) + amount

    def observe(self, child: Any, value: float) -> None:
        """``child.observe(value)`` (a histogram's labelled child)."""
        pending = self._pending()
        if pending is None:
            child.observe(value)
        else:
            pending.observed.setdefault(child, []).append(value)

    def observe_many(self, child: Any, values: list[float]) -> None:
        """``child.observe(value)`` for each of ``values`` (a histogram's labelled child)."""
        pending = self._pending()
        if pending is None:
            observe_all(child, values)
        else:
            pending.observed.setdefault(child, []).extend(values)

    def count(self, children: tuple[Any, ...], value: float) -> None:
        """One event counted and measured in each (counter, histogram) pair of ``children``, given flat
        (counter, histogram, counter, histogram, ...): ``counter.inc()`` and ``histogram.observe(value)``.
        Pending, the event is one value appended to its ``children``'s list (every request makes one)."""
        pending = self._pending()
        if pending is None:
            _count_all(children, [value])
        else:
            pending.counted.setdefault(children, []).append(value)

    def flush(self) -> None:
        """Apply this thread's pending updates now (a scrape, shutdown)."""
        _apply(self._local, self._sampled)

    def _pending(self) -> _Pending | None:
        pending = self._local
        if pending.scheduled and pending.loop is not None and pending.loop.is_running():
            # A loop runs on one thread only: this thread's loop is running, so this call is on it.
            return pending
        try:
            loop = asyncio.get_running_loop()  # a system call in Python 3.11 (it checks the pid)
        except RuntimeError:
            return None  # no loop would ever apply them
        if pending.loop is not loop or not pending.scheduled:
            if pending.loop is not loop:
                # What an earlier loop of this thread left (a test's, a restarted app's).
                _apply(pending, self._sampled)
                pending.loop = loop
            pending.scheduled = True
            loop.call_later(APPLY_AFTER_S, _apply, pending, self._sampled)
        return pending


def _apply(pending: _Pending, sampled: list[tuple[Any, Callable[[], float]]]) -> None:
    pending.scheduled = False
    for gauge, read in sampled:
        gauge.set(read())
    amounts, pending.amounts = pending.amounts, {}
    observed, pending.observed = pending.observed, {}
    counted, pending.counted = pending.counted, {}
    for child, amount in amounts.items():
        if amount:
            child.inc(amount)
    for child, values in observed.items():
        observe_all(child, values)
    for children, values in counted.items():
        _count_all(children, values)


def _count_all(children: tuple[Any, ...], values: list[float]) -> None:
    """`Deferred.count` for each of ``values``: every counter of ``children`` goes up by their number,
    and every histogram observes them all."""
    for index in range(0, len(children), 2):
        children[index].inc(len(values))
        observe_all(children[index + 1], values)


def observe_all(histogram: Any, values: list[float]) -> None:
    """What ``observe(v)`` for each value does, with one update of the sum and one of each bucket hit:
    a value counts in the first bucket whose upper bound is at least the value."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(values) == 1:
        for value in values:  # the public way, should prometheus-client's layout ever change
            histogram.observe(value)
        return
    total.inc(sum(values))
    # map over C functions, not a generator expression: no Python frame per value.
    for index, count in Tally(map(bisect_left, repeat(bounds, len(values)), values)).items():
        if index < len(buckets):
            buckets[index].inc(count)


class ServiceMetrics:
    """Every metric the service exports; created once per app. Hot-path updates go through ``deferred``."""

    def __init__(self) -> None:
        self.deferred = Deferred()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "weightserve_http_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "weightserve_http_request_duration_seconds",
            "Time from request start to the end of the response, by method and route template.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_requests = Counter(
            "weightserve_inference_requests",
            "Requests that reached a model version, by model, version and status code.",
            ["model", "version", "status"],
            registry=r,
        )
        self.inference_latency = Histogram(
            "weightserve_inference_request_duration_seconds",
            "End-to-end latency of requests served by a model version.",
            ["model", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "weightserve_queue_duration_seconds",
            "Time a request waited before its (batched) run started.",
            ["model", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "weightserve_batch_size",
            "Rows per model execution.",
            ["model", "version"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.batch_failures = Counter(
            "weightserve_batch_failures",
            "Shared batches that failed, so each of their requests ran again on its own.",
            ["model", "version"],
            registry=r,
        )
        self.models_loaded = Gauge(
            "weightserve_models_loaded",
            "Model versions loaded and serving.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.load_failures = Counter(
            "weightserve_model_load_failures",
            "Model versions that failed to load (rejected file, checker, runtime, warm-up).",
            ["model"],
            registry=r,
        )
        self.rejected = Counter(
            "weightserve_requests_rejected",
            "Requests turned away without running: in_flight_limit, queue_full, or timeout (waited too long).",
            ["reason"],
            registry=r,
        )
        self.access = Counter(
            "weightserve_access",
            "Access decisions by scope and outcome (granted, unauthorized, forbidden): every export and admin "
            "call, and every call of a scope that needs a token. Open infer and inspect calls are not checked.",
            ["scope", "outcome"],
            registry=r,
        )
        self.in_flight = Gauge(
            "weightserve_http_requests_in_flight",
            "HTTP requests being handled now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        # The worker pool, as the supervisor reports it to every worker (most recent report wins).
        self.workers = Gauge(
            "weightserve_workers",
            "Worker processes the server runs (--workers).",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.workers_ready = Gauge(
            "weightserve_workers_ready",
            "Worker processes serving now.",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.worker_restarts = Gauge(
            "weightserve_worker_restarts",
            "Worker processes replaced since the server started (each one had died).",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.workers_crash_looping = Gauge(
            "weightserve_workers_crash_looping",
            "Worker slots whose process keeps dying soon after it starts (restarted with a growing delay).",
            registry=r,
            multiprocess_mode="livemostrecent",
        )

    def exposition(self) -> bytes:
        """The text format for a scrape: this app's registry, or every worker's in multiprocess mode."""
        self.deferred.flush()
        directory = _multiprocess_dir()
        if directory is None:
            return bytes(generate_latest(self.registry))
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
        return bytes(generate_latest(merged))
