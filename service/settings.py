"""Service settings: one object, read from the environment (prefix ``WEIGHTSERVE_``) or passed to
``create_app(settings)``. The weights and inspection options nest inside it, and keep their
environment names: ``WEIGHTSERVE_WEIGHTS_CACHE_DIR`` sets ``settings.weights.cache_dir``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

GraphOptimization = Literal["disable", "basic", "extended", "all"]


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    return max(1, len(os.sched_getaffinity(0)))


class WeightSettings(BaseModel):
    """Weight inspection (environment prefix ``WEIGHTSERVE_WEIGHTS_``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spectral_max_m: int = Field(default=8192, ge=1)
    """Largest smaller side M of a matrix whose spectrum is analysed (its Gram matrix takes M² x 8
    bytes); larger matrices report ``skipped`` with the reason. weightwatcher's min_evals (8) and
    max_evals (15000 pooled eigenvalues, or this, whichever is larger) apply too."""
    spectral_max_n: int = Field(default=65536, ge=1)
    """Largest larger side N analysed (weightwatcher's own max_N is 50000, one short of a 50257-token
    vocabulary)."""
    spectral_listed_eigenvalues: int = Field(default=4096, ge=0)
    """Eigenvalues a tensor's spectral document lists (the largest ones beyond this; a histogram of
    log10 λ always covers all of them)."""
    analysis_workers: int = Field(default=1, ge=1)
    """Spectral analyses running at once on the machine, whatever the number of server processes."""
    analysis_threads: int = Field(default=0, ge=0)
    """BLAS threads of each analysis process (0: the cores divided by analysis_workers)."""
    analysis_nice: int = Field(default=10, ge=0, le=19)
    """CPU priority (nice) of the analysis processes, so predictions always come first."""
    analysis_inline_work: float = Field(default=2e7, ge=0)
    """Matrices cheaper than this many multiply-adds are analysed within the request (well under a
    millisecond of work); larger ones by the background analysis."""
    cache_dir: Path | None = None
    """Folder of the on-disk weights cache shared by the server processes and kept across restarts
    (default: $XDG_CACHE_HOME/weightserve/weights, ~/.cache/weightserve/weights, or
    <temp dir>/weightserve-<uid>/weights for a user without a writable home)."""
    cache_max_bytes: int = Field(default=1024**3, ge=1024)
    """Size bound of that folder; past it the least recently used entries go."""
    cache_entries: int = Field(default=4096, ge=1)
    """Results per kind kept in each process's memory (statistics, spectral metrics, histograms, hashes)."""
    cached_versions: int = Field(default=16, ge=1)
    """Parsed model graphs kept."""
    values_max_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    """Largest tensor the ``/values`` endpoint returns; larger answers 413."""


class InspectionSettings(BaseModel):
    """Activations, heat maps and evaluation (environment prefix ``WEIGHTSERVE_INSPECTION_``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    """Cap on the promoted intermediate values one request may hold; over it answers 400."""

    sessions: int = Field(default=4, ge=1)
    """Inspection sessions kept at once (least recently used goes first)."""

    threads: int = Field(default=1, ge=0)
    """onnxruntime intra-op threads of an inspection session (0 = onnxruntime's choice); kept low so
    inspection does not starve serving."""

    max_occlusion_windows: int = Field(default=16384, ge=1)
    """Occluded copies one explain request may run (windows per image times images); more answers 400."""

    concurrency: int = Field(default=2, ge=1)
    """Inspection requests computing at once; more wait their turn, so serving keeps its CPUs."""

    png_size: int = Field(default=256, ge=16, le=4096)
    """Approximate side in pixels of each heat map tile in PNG answers."""


class Settings(BaseSettings):
    # "_" splits once, so WEIGHTSERVE_WEIGHTS_CACHE_ENTRIES reaches weights.cache_entries while
    # WEIGHTSERVE_MAX_BATCH_SIZE stays the top-level max_batch_size.
    model_config = SettingsConfigDict(
        env_prefix="WEIGHTSERVE_", env_nested_delimiter="_", env_nested_max_split=1, frozen=True, extra="ignore"
    )

    repository: Path = Path("models")
    """Root of the model repository: ``<name>/<int version>/model.onnx``."""

    host: str = "127.0.0.1"
    """Address ``weightserve serve`` binds to."""

    port: int = Field(default=8000, ge=0, le=65535)
    """Port ``weightserve serve`` binds to."""

    workers: int = Field(default_factory=available_cores, ge=1)
    """Server processes (default: one per core); each has its own sessions and batchers."""

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    """Default ordered onnxruntime execution providers; a model's config.json may override them."""

    strict_providers: bool = False
    """Refuse to load a model when a requested provider is unavailable, instead of falling back."""

    intra_op_threads: int = Field(default=0, ge=0)
    """onnxruntime intra-op threads per session (0 = onnxruntime's choice; ``weightserve serve``
    makes it cores // workers, so worker processes do not fight over the cores)."""

    inter_op_threads: int = Field(default=0, ge=0)
    """onnxruntime inter-op threads per session (0 = onnxruntime's choice)."""

    graph_optimization: GraphOptimization = "all"
    """onnxruntime graph optimisation level."""

    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Largest request body accepted (after decompression too); larger answers 413."""

    max_batch_size: int = Field(default=64, ge=1)
    """Default dynamic-batching limit in rows for models with a dynamic batch axis (1 disables)."""

    max_queue_delay_ms: float = Field(default=0.0, ge=0.0)
    """How long a batch may wait for more requests once the runner is idle (0: never wait)."""

    max_queue_size: int = Field(default=256, ge=1)
    """Requests that may wait per model version; more answer 503 with Retry-After."""

    request_timeout_s: float = Field(default=30.0, gt=0.0)
    """A request still queued after this long fails with 504 instead of running."""

    max_in_flight_requests: int = Field(default=512, ge=1)
    """HTTP requests (health and metrics aside) handled at once per process; more answer 503 before
    their body is read, so a flood cannot grow memory without bound."""

    max_concurrent_runs: int = Field(default=4, ge=1)
    """Per version of a model without the batcher: runs at once; up to max_queue_size more wait."""

    warmup: bool = True
    """Run each new version once on zeros before it takes traffic."""

    max_model_bytes: int = Field(default=2 * 1024**3, ge=1)
    """Largest model file (plus external data) the loader accepts."""

    verify_manifest: bool = True
    """Refuse versions whose files do not match the sha256 recorded in their manifest.json."""

    admin_token: SecretStr | None = None
    """Bearer token for state-changing endpoints; unset disables them (403)."""

    poll_interval_s: float = Field(default=0.0, ge=0.0)
    """Rescan the repository this often and load / unload versions (0 = no polling)."""

    drain_timeout_s: float = Field(default=30.0, ge=0.0)
    """On shutdown, how long in-flight requests may take to finish."""

    log_level: str = "info"
    """Log level for the service's loggers."""

    log_format: Literal["json", "text"] = "json"
    """Service log lines as JSON objects (with the request id) or plain text."""

    access_log: bool = False
    """One log line per HTTP request (method, path, status, duration, model, version, request id).
    Off by default: it costs more CPU than the rest of a small request's bookkeeping, and /metrics
    already counts every request."""

    weights: WeightSettings = WeightSettings()
    """Weight statistics and spectral metrics."""

    inspection: InspectionSettings = InspectionSettings()
    """Activations, heat maps and evaluation."""
