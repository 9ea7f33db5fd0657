"""The desired state of the repository, as the coordinator decides it and every worker serves it:
which versions (each a checked snapshot with its config), and the index of every version's state.

Both travel between processes as JSON, so a worker and its supervisor agree on them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from service.serving.model_config import ModelConfig
from service.serving.repository import VersionSpec


class State(StrEnum):
    READY = "READY"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


TRANSIENT = frozenset({State.LOADING, State.UNLOADING})
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

    @classmethod
    def from_json(cls, data: dict[str, str]) -> IndexEntry:
        version = data.get("version")
        return cls(data["name"], None if version is None else int(version), State(data["state"]), data["reason"])


Index = dict[tuple[str, int | None], IndexEntry]


def index_to_json(index: Index) -> list[dict[str, str]]:
    return [entry.as_json() for entry in index.values()]


def index_from_json(data: list[dict[str, str]]) -> Index:
    entries = [IndexEntry.from_json(item) for item in data]
    return {(entry.name, entry.version): entry for entry in entries}


def plan_key(name: str, version: int) -> str:
    """How prepare results name a version on the wire."""
    return f"{name}/{version}"


@dataclass(slots=True)
class PrepareReport:
    """What one worker's ``prepare`` says, by plan key: why versions failed, and warnings for versions
    that loaded but serve with a caveat (a warm-up no guessed input could run)."""

    failures: dict[str, str] = field(default_factory=dict)
    warnings: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, dict[str, str]]:
        return {"failures": self.failures, "warnings": self.warnings}

    @classmethod
    def from_json(cls, data: dict[str, dict[str, str]]) -> PrepareReport:
        return cls(dict(data.get("failures", {})), dict(data.get("warnings", {})))


@dataclass(frozen=True, slots=True)
class VersionPlan:
    """One version as it must be served: its snapshot and the model's config."""

    spec: VersionSpec
    config: ModelConfig
    digest: str
    """Content digest of the snapshot (see ``snapshots``)."""
    size: int

    @property
    def key(self) -> tuple[str, int]:
        return (self.spec.name, self.spec.version)

    @property
    def identity(self) -> tuple[str, ModelConfig]:
        """Same identity, same session: a worker keeps what it has loaded instead of loading it again."""
        return (self.digest, self.config)

    def as_json(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "name": spec.name,
            "version": spec.version,
            "directory": str(spec.directory),
            "model_path": str(spec.model_path),
            "weights_path": None if spec.weights_path is None else str(spec.weights_path),
            "manifest": spec.manifest,
            "config": self.config.model_dump(mode="json"),
            "digest": self.digest,
            "size": self.size,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VersionPlan:
        weights = data.get("weights_path")
        spec = VersionSpec(
            name=data["name"],
            version=int(data["version"]),
            directory=Path(data["directory"]),
            model_path=Path(data["model_path"]),
            manifest=data.get("manifest"),
            weights_path=None if weights is None else Path(weights),
            content_digest=str(data["digest"]),
        )
        return cls(spec, ModelConfig.model_validate(data["config"]), str(data["digest"]), int(data["size"]))


Served = dict[str, dict[int, VersionPlan]]
"""Model name -> version -> plan: what every worker serves."""


def served_to_json(served: Served) -> list[dict[str, Any]]:
    return [plan.as_json() for versions in served.values() for plan in versions.values()]


def served_from_json(data: list[dict[str, Any]]) -> Served:
    served: Served = {}
    for item in data:
        plan = VersionPlan.from_json(item)
        served.setdefault(plan.spec.name, {})[plan.spec.version] = plan
    return served
