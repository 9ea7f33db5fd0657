"""Service settings: one object, read from the environment (prefix ``WEIGHTSERVE_``) or passed to
``create_app(settings)``. The weights and inspection options nest inside it, and keep their
environment names: ``WEIGHTSERVE_WEIGHTS_CACHE_DIR`` sets ``settings.weights.cache_dir``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

GraphOptimization = Literal["disable", "basic", "extended", "all"]

Scope = Literal["infer", "inspect", "export", "admin"]
"""What a token may do: ``infer`` (health, metadata, config, inference, statistics), ``inspect`` (weight
statistics, spectra, diffs, activations, heat maps, evaluation, the repository index, the dashboard's
data), ``export`` (raw weight values), ``admin`` (repository load and unload)."""

SCOPES: tuple[Scope, ...] = ("infer", "inspect", "export", "admin")


CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def available_cores(cgroup_root: Path | None = None, proc_cgroup: Path | None = None) -> int:
    """Cores this process may use, at least 1: its CPU affinity, capped by its cgroup's CPU quota.

    A container limited to 2 CPUs on a 64-core host sees 64 cores in its affinity; only the quota
    (``docker run --cpus``, a Kubernetes CPU limit) says it gets 2. A fractional quota rounds up:
    1.5 CPUs is 2 cores, each busy three quarters of the time.
    """
    cores = len(os.sched_getaffinity(0))
    quota = cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def cpu_quota(cgroup_root: Path | None = None, proc_cgroup: Path | None = None) -> float | None:
    """CPUs per period this process's cgroup (or any cgroup above it) may use; None when unlimited.

    cgroup v2: ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``). cgroup v1: the ``cpu``
    controller's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1 is unlimited). The process's
    own cgroup comes from ``/proc/self/cgroup``; inside a container whose cgroup folder is mounted as
    the root, that path does not exist below the mount and the mount's own limit applies.
    """
    cgroup_root = CGROUP_ROOT if cgroup_root is None else cgroup_root
    proc_cgroup = PROC_SELF_CGROUP if proc_cgroup is None else proc_cgroup
    paths: dict[str, str] = {}
    try:
        for line in proc_cgroup.read_text(encoding="utf-8").splitlines():
            fields = line.split(":", 2)
            if len(fields) == 3:
                for controller in fields[1].split(","):
                    paths[controller] = fields[2]  # "" is the v2 unified hierarchy
    except OSError:
        pass
    limits: list[float | None]
    if (cgroup_root / "cgroup.controllers").is_file():
        limits = [_v2_limit(folder) for folder in _cgroup_levels(cgroup_root, paths.get("", "/"))]
    else:
        mounts = [cgroup_root / name for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu")]
        mount = next((folder for folder in mounts if folder.is_dir()), None)
        if mount is None:
            return None
        limits = [_v1_limit(folder) for folder in _cgroup_levels(mount, paths.get("cpu", "/"))]
    found = [limit for limit in limits if limit is not None]
    return min(found) if found else None


def _cgroup_levels(mount: Path, path: str) -> list[Path]:
    """The cgroup's folder under ``mount`` and each parent up to the mount, those that exist."""
    parts = [part for part in PurePosixPath(path.strip() or "/").parts if part not in ("/", "..", ".")]
    folders = [mount.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]
    return [folder for folder in folders if folder.is_dir()]


def _v2_limit(folder: Path) -> float | None:
    try:
        fields = (folder / "cpu.max").read_text(encoding="utf-8").split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _ratio(fields[0], fields[1])


def _v1_limit(folder: Path) -> float | None:
    try:
        quota = (folder / "cpu.cfs_quota_us").read_text(encoding="utf-8").strip()
        period = (folder / "cpu.cfs_period_us").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    try:
        value, length = int(quota), int(period)
    except ValueError:
        return None
    return value / length if value > 0 and length > 0 else None


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


class TokenSpec(BaseModel):
    """One access token: its name (in the audit log, for rotation), its secret and its scopes.

    The secret is given either as ``token`` or as the hex ``sha256`` of the token's bytes, so a
    configuration can hold digests only.
    """

    # Validation errors must not echo the secrets they were given into a startup log.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    """Who holds the token; logged with every audited call (the token itself never is)."""

    token: SecretStr | None = None
    """The bearer token (printable ASCII, no spaces)."""

    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    """Instead of ``token``: the SHA-256 of the token, in hex."""

    scopes: frozenset[Scope] = Field(min_length=1)
    """What the token may do."""

    @field_validator("token")
    @classmethod
    def _printable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not all("!" <= char <= "~" for char in value.get_secret_value() or " "):
            raise ValueError("a token must be non-empty printable ASCII without spaces")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> TokenSpec:
        if (self.token is None) == (self.sha256 is None):
            raise ValueError(f"token {self.name!r}: give exactly one of 'token' and 'sha256'")
        return self

    def digest(self) -> bytes:
        """The SHA-256 of the token's bytes, the only form in which it is kept."""
        if self.token is not None:
            return hashlib.sha256(self.token.get_secret_value().encode("ascii")).digest()
        assert self.sha256 is not None  # one of the two, checked by _one_secret
        return bytes.fromhex(self.sha256)


class AuthSettings(BaseModel):
    """Access tokens and which scopes need one (environment prefix ``WEIGHTSERVE_AUTH_``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    tokens: tuple[TokenSpec, ...] = ()
    """Tokens as a JSON list of ``{"name", "token" or "sha256", "scopes"}`` objects."""

    tokens_file: Path | None = None
    """A JSON file holding more tokens in the same form (e.g. a mounted Kubernetes secret). A file
    that does not exist adds no tokens (logged at startup): scopes stay closed, never open."""

    open_scopes: frozenset[Scope] = frozenset({"infer", "inspect"})
    """Scopes anyone may use without a token; every other scope needs a token that grants it, and
    answers 403 while no configured token does."""


class Settings(BaseSettings):
    # "_" splits once, so WEIGHTSERVE_WEIGHTS_CACHE_ENTRIES reaches weights.cache_entries while
    # WEIGHTSERVE_MAX_BATCH_SIZE stays the top-level max_batch_size. Errors name the setting and
    # the problem but never echo the value: tokens are among them.
    model_config = SettingsConfigDict(
        env_prefix="WEIGHTSERVE_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        frozen=True,
        extra="ignore",
        hide_input_in_errors=True,
    )

    repository: Path = Path("models")
    """Root of the model repository: ``<name>/<int version>/model.onnx``."""

    host: str = "127.0.0.1"
    """Address ``weightserve serve`` binds to."""

    port: int = Field(default=8000, ge=0, le=65535)
    """Port ``weightserve serve`` binds to."""

    workers: int = Field(default_factory=available_cores, ge=1)
    """Server processes (default: one per core the process may use, its cgroup's CPU quota included);
    each has its own sessions and batchers, and all of them serve one repository state."""

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
    """How long a batch may wait for more requests once the runner is idle (0: no fixed wait; a batch with
    fewer requests than the last still waits for as many, at most as long as its run is expected to take)."""

    max_queue_size: int = Field(default=256, ge=1)
    """Requests that may wait per model version; more answer 503 with Retry-After."""

    request_timeout_s: float = Field(default=30.0, gt=0.0)
    """A request still queued after this long fails with 504 instead of running."""

    idle_poll_ms: float = Field(default=0.0, ge=0.0, le=100.0)
    """After each response a worker's event loop keeps polling this long for the next request instead
    of sleeping (see ``service.ops.idle_poll``); 0, the default, never polls."""

    max_in_flight_requests: int = Field(default=512, ge=1)
    """HTTP requests (health and metrics aside) handled at once per process; more answer 503 before
    their body is read, so a flood cannot grow memory without bound."""

    max_concurrent_runs: int = Field(default=4, ge=1)
    """Per version of a model without the batcher: runs at once; up to max_queue_size more wait."""

    warmup: bool = True
    """Run each new version once on zeros before it takes traffic."""

    max_model_bytes: int = Field(default=64 * 1024**3, ge=1)
    """Largest model file plus external data the loader accepts: a guard against absurd files, set
    well above protobuf's 2 GB, since real checkpoints keep their weights beside the graph."""

    verify_manifest: bool = True
    """Refuse versions whose files do not match the sha256 recorded in their manifest.json."""

    admin_token: SecretStr | None = None
    """Shorthand for one token named ``admin`` with the ``admin`` scope (empty: none)."""

    poll_interval_s: float = Field(default=0.0, ge=0.0)
    """Rescan the repository this often and load / unload versions (0 = no polling)."""

    drain_timeout_s: float = Field(default=30.0, ge=0.0)
    """On shutdown, how long in-flight requests may take to finish."""

    load_timeout_s: float = Field(default=600.0, gt=0.0)
    """How long every worker may take to load a new version, warm-up included. A worker that has not
    answered by then fails that load (the others keep what they serve) and is replaced."""

    state_dir: Path | None = None
    """Where the server keeps its private working folder: the snapshots of the model files it serves
    (so every worker, the weights view and inspection read exactly the bytes the loader checked)
    and the workers' shared statistics. Default: the system's temporary folder. Each server makes a
    new folder inside it and removes it when it stops; snapshots take as much space as the served
    versions' files, so point this at a disk (not a memory-backed /tmp) for large models."""

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

    auth: AuthSettings = AuthSettings()
    """Access tokens and open scopes."""


_TOKEN_LIST: TypeAdapter[tuple[TokenSpec, ...]] = TypeAdapter(tuple[TokenSpec, ...])
_SHORT_TOKEN = 16


def configured_tokens(settings: Settings) -> list[TokenSpec]:
    """Every token: ``auth.tokens``, then the tokens file, then the admin shorthand; names and secrets unique."""
    tokens = list(settings.auth.tokens)
    path = settings.auth.tokens_file
    if path is not None:
        if path.exists():
            try:
                tokens += _TOKEN_LIST.validate_json(path.read_bytes())
            except OSError as exc:
                raise ValueError(f"WEIGHTSERVE_AUTH_TOKENS_FILE {path}: {exc.strerror}") from None
            except ValidationError as exc:  # names where and what, never the values (they are secrets)
                problems = [f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors()]
                raise ValueError(f"WEIGHTSERVE_AUTH_TOKENS_FILE {path}: {'; '.join(problems)}") from None
        else:
            log.warning("tokens file %s does not exist: no tokens from it", path)
    admin = settings.admin_token.get_secret_value() if settings.admin_token is not None else ""
    if admin:
        tokens.append(TokenSpec(name="admin", token=settings.admin_token, scopes=frozenset({"admin"})))
    names = [token.name for token in tokens]
    if len(set(names)) != len(names):
        raise ValueError(f"token names must be unique: {sorted(names)}")
    if len({token.digest() for token in tokens}) != len(tokens):
        raise ValueError("two configured tokens have the same secret; each name needs its own")
    for token in tokens:
        if token.token is not None and len(token.token.get_secret_value()) < _SHORT_TOKEN:
            log.warning("token '%s' is shorter than %d characters: easy to guess", token.name, _SHORT_TOKEN)
    return tokens
