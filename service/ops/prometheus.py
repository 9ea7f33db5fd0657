"""Prometheus metrics, in a registry each app owns (never prometheus-client's global one).

With several worker processes (``--workers N``) each process counts on its own, so one scrape sees
one worker. Set ``PROMETHEUS_MULTIPROC_DIR`` to an empty, writable folder before starting the
server and prometheus-client keeps the numbers in files there; ``GET /metrics`` then sums every
worker's files, whichever worker answers.

``weightserve serve --workers N`` (N > 1) does that by itself when the variable is unset, with a
private folder it removes at exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

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


class ServiceMetrics:
    """Every metric the service exports; created once per app."""

    def __init__(self) -> None:
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
        directory = _multiprocess_dir()
        if directory is None:
            return bytes(generate_latest(self.registry))
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
        return bytes(generate_latest(merged))
