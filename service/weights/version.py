"""One model version's weights: its graph index, its trained sidecar, and access to any tensor by id."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import TensorNotFound
from service.weights.graph import ParamTensor, WeightGraph, load_graph
from service.weights.trained import TrainedTensor, apply_provenance, trained_tensors, trained_values
from service.weights.values import TensorValues, tensor_values


@dataclass(frozen=True, slots=True)
class VersionWeights:
    label: str
    model_path: Path
    graph: WeightGraph
    weights_path: Path | None
    trained: dict[str, TrainedTensor]
    trained_by_effective: dict[str, TrainedTensor]
    content_digest: str | None = None
    """The digest of the version's files when they are a checked snapshot: it names their bytes, so
    figures cached under it outlive the folder the snapshot happens to lie in."""

    def tensor(self, tensor_id: str) -> ParamTensor | TrainedTensor:
        found = self.graph.tensors.get(tensor_id) or self.trained.get(tensor_id)
        if found is None:
            raise TensorNotFound(f"{self.label} has no weight tensor with id {tensor_id!r}")
        return found

    def values(self, tensor: ParamTensor | TrainedTensor) -> TensorValues:
        return open_values(tensor, self.graph.directory, self.weights_path)


def open_values(tensor: ParamTensor | TrainedTensor, directory: Path, weights_path: Path | None) -> TensorValues:
    """A tensor's stored values (memory-mapped where they are external) and their dequantization."""
    if isinstance(tensor, TrainedTensor):
        if weights_path is None:
            raise TensorNotFound(f"trained tensor {tensor.key!r} without its weights file")
        return TensorValues(trained_values(weights_path, tensor), tensor.out_axis)
    return tensor_values(tensor, directory)


def open_version(
    label: str,
    model_path: Path,
    weights_path: Path | None = None,
    manifest: dict[str, Any] | None = None,
    content_digest: str | None = None,
) -> VersionWeights:
    """Index a version (blocking: parses the ONNX protobuf without its external data)."""
    graph = load_graph(model_path)
    trained: dict[str, TrainedTensor] = {}
    if weights_path is not None:
        trained = trained_tensors(weights_path, manifest, graph)
    by_effective = apply_provenance(graph, trained)
    return VersionWeights(label, model_path, graph, weights_path, trained, by_effective, content_digest)
