"""Per-model serving options, read from ``models/<name>/config.json``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.settings import GraphOptimization


class BatchingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    """Off runs every request on its own."""

    max_batch_size: int | None = Field(default=None, ge=1)
    """Rows per batch; None takes the global setting."""

    max_queue_delay_ms: float | None = Field(default=None, ge=0.0)
    """Extra wait for more rows once the runner is idle; None takes the global setting."""

    preferred_batch_sizes: tuple[int, ...] = ()
    """Cut batches at the largest of these sizes that fits, when any fits."""

    max_queue_size: int | None = Field(default=None, ge=1)
    """Waiting requests before 503; None takes the global setting."""


class VersionPolicy(BaseModel):
    """Which versions of a model are served: Triton's latest / all / specific."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: Literal["latest", "all", "specific"] = "all"
    latest: int = Field(default=1, ge=1)
    """With ``latest``: how many of the highest versions."""
    versions: tuple[int, ...] = ()
    """With ``specific``: exactly these versions."""

    @model_validator(mode="after")
    def _specific_needs_versions(self) -> VersionPolicy:
        if self.policy == "specific" and not self.versions:
            raise ValueError("version policy 'specific' needs a non-empty 'versions' list")
        return self

    def select(self, available: list[int]) -> list[int]:
        ordered = sorted(available)
        if self.policy == "latest":
            return ordered[-self.latest :]
        if self.policy == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered


class WarmupInput(BaseModel):
    """One input of a warm-up sample: its datatype, shape, and zeros, random values, or literal values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    datatype: str
    """V2 datatype, e.g. ``FP32``; must be the model's."""
    shape: tuple[int, ...]
    values: Literal["zeros", "random"] | list[Any] = "zeros"
    """``zeros``, ``random`` (seeded), or the values themselves, flat or nested."""

    @model_validator(mode="after")
    def _shape_is_concrete(self) -> WarmupInput:
        if any(dim < 0 for dim in self.shape):
            raise ValueError(f"warm-up shape {list(self.shape)} must be concrete (no -1)")
        return self


class WarmupSample(BaseModel):
    """A named warm-up request, like Triton's ``model_warmup``: every input of the model, given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    inputs: dict[str, WarmupInput]


class ModelConfig(BaseModel):
    """Everything optional: a model folder without config.json gets these defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    providers: tuple[str, ...] | None = None
    """Ordered execution providers for this model; None takes the global setting."""

    strict_providers: bool | None = None
    """Fail to load rather than fall back to a later provider; None takes the global setting."""

    intra_op_threads: int | None = Field(default=None, ge=0)
    inter_op_threads: int | None = Field(default=None, ge=0)
    graph_optimization: GraphOptimization | None = None

    batching: BatchingConfig = BatchingConfig()
    version_policy: VersionPolicy = VersionPolicy()
    warmup: tuple[WarmupSample, ...] = ()
    """Warm-up requests that must all run before the version takes traffic; without any, warm-up is
    best effort (guessed inputs; a model no guess runs is served with a warning)."""
