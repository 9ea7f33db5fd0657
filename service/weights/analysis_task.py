"""One spectral analysis as a unit of work: which tensor, where its bytes are, and the computation
itself, the same whether it runs in the request (tiny matrices) or in the analysis process."""

from __future__ import annotations

import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import ServiceError
from service.weights.graph import ParamTensor
from service.weights.spectral import MatrixShape, SpectralLimits, analyse
from service.weights.trained import TrainedTensor
from service.weights.version import open_values

Tensor = ParamTensor | TrainedTensor


@dataclass(frozen=True, slots=True)
class AnalysisTask:
    """Everything the analysis process needs to read one weight and analyse it (picklable)."""

    key: str
    tensor: Tensor
    directory: Path
    weights_path: Path | None
    conv: bool
    shape: MatrixShape

    @property
    def work(self) -> float:
        return self.shape.work

    @property
    def name(self) -> str:
        return self.tensor.key if isinstance(self.tensor, TrainedTensor) else self.tensor.name


@dataclass(frozen=True, slots=True)
class AnalysisResult:
    doc: dict[str, Any]
    evals: np.ndarray | None
    seconds: float
    peak_bytes: int | None = None
    """Peak numpy and Python allocations during the analysis, when it was measured."""


def run_task(task: AnalysisTask, limits: SpectralLimits, measure: bool = False) -> AnalysisResult:
    """Read the weight, compute its eigenvalues and metrics. A weight that cannot be read gives a
    ``failed`` document with the reason (as every other figure of that tensor would)."""
    began = time.perf_counter()
    if measure:
        if not tracemalloc.is_tracing():
            tracemalloc.start()
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
    try:
        values = open_values(task.tensor, task.directory, task.weights_path)
        doc, evals = analyse(values, task.conv, limits)
        del values
    except ServiceError as exc:
        doc, evals = {"status": "failed", "skipped_reason": exc.message}, None
    except OSError as exc:
        doc, evals = {"status": "failed", "skipped_reason": f"cannot read the weight: {exc}"}, None
    peak = tracemalloc.get_traced_memory()[1] - baseline if measure else None
    return AnalysisResult(doc, evals, time.perf_counter() - began, peak)
