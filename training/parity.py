"""onnxruntime against torch: the same inputs through both, every output value compared.

Checked on the caller's example inputs and, where every input shares a dynamic batch axis, on
generated batches of other sizes: rows drawn from the example (seeded), float inputs with a little
noise on top, so the check also covers batch sizes and values the exporter never traced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from numpy.typing import NDArray
from torch import nn

from training.errors import ParityError, UsageError

TOLERANCE = 1e-4
"""Largest absolute difference allowed between an onnxruntime output value and torch's."""
GENERATED_BATCHES = (1, 3, 7)
NOISE = 0.05
"""Noise on generated float inputs, as a fraction of that input's standard deviation in the example."""

Arrays = list[NDArray[Any]]


@dataclass(frozen=True, slots=True)
class ParityCheck:
    inputs: str
    """`example` or `generated`."""
    batch_size: int | None
    max_abs_diff: float

    def as_json(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "batch_size": self.batch_size, "max_abs_diff": self.max_abs_diff}


@dataclass(frozen=True, slots=True)
class Parity:
    """What the check found: the largest difference over every check, and each check."""

    max_abs_diff: float
    samples: int
    """Rows of the example inputs."""
    tolerance: float
    checks: tuple[ParityCheck, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "max_abs_diff": self.max_abs_diff,
            "samples": self.samples,
            "tolerance": self.tolerance,
            "checks": [c.as_json() for c in self.checks],
        }


def session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def flatten_outputs(result: Any) -> list[torch.Tensor]:
    """forward's result as a flat list of tensors (a tensor, or tuples, lists and dicts of them)."""
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, list | tuple):
        return [t for item in result for t in flatten_outputs(item)]
    if isinstance(result, Mapping):
        return [t for item in result.values() for t in flatten_outputs(item)]
    raise UsageError(f"forward returned a {type(result).__name__}; publish needs tensors (or tuples of tensors)")


def torch_outputs(module: nn.Module, inputs: Sequence[NDArray[Any]]) -> Arrays:
    """The module's outputs in eval mode, without gradients."""
    with torch.no_grad():
        result = module.eval()(*[torch.from_numpy(np.ascontiguousarray(a)) for a in inputs])
    return [t.detach().cpu().numpy() for t in flatten_outputs(result)]


def onnx_outputs(runner: ort.InferenceSession, names: Sequence[str], inputs: Sequence[NDArray[Any]]) -> Arrays:
    result: Arrays = runner.run(None, dict(zip(names, inputs, strict=True)))
    return result


def compare(
    expected: Sequence[NDArray[Any]],
    actual: Sequence[NDArray[Any]],
    output_names: Sequence[str],
    where: str,
    tolerance: float,
) -> float:
    """The largest absolute difference over every output; ParityError naming the output and the
    index of the largest one if it is over `tolerance` (NaN in both at one place counts as equal)."""
    if len(expected) != len(output_names):
        raise UsageError(f"forward returned {len(expected)} outputs for {len(output_names)} output names")
    worst = 0.0
    for name, want, got in zip(output_names, expected, actual, strict=True):
        if want.shape != got.shape:
            raise ParityError(
                f"onnxruntime's output {name!r} has shape {list(got.shape)}, torch's {list(want.shape)} ({where})"
            )
        if want.size == 0:
            continue
        a, b = want.astype(np.float64), got.astype(np.float64)
        diff = np.abs(a - b)
        same = (a == b) | (np.isnan(a) & np.isnan(b))  # equal infinities and matching NaNs
        diff = np.where(same, 0.0, np.where(np.isnan(diff), np.inf, diff))
        flat = int(np.argmax(diff))
        largest = float(diff.flat[flat])
        if not largest <= tolerance:
            index = ", ".join(str(int(i)) for i in np.unravel_index(flat, diff.shape))
            raise ParityError(
                f"onnxruntime differs from torch by {largest:.3g} at {name}[{index}] "
                f"(torch {a.flat[flat]:.7g}, onnxruntime {b.flat[flat]:.7g}) on {where}; tolerance {tolerance:g}"
            )
        worst = max(worst, largest)
    return worst


def generated_inputs(example: Sequence[NDArray[Any]], size: int, seed: int) -> Arrays:
    """A batch of `size` rows drawn from the example's rows; float inputs get a little noise."""
    rng = np.random.default_rng([seed, size])
    rows = rng.integers(0, len(example[0]), size=size)
    batch = []
    for array in example:
        picked = array[rows]
        if np.issubdtype(array.dtype, np.floating):
            spread = float(np.std(array.astype(np.float64))) or 1.0
            picked = (picked + rng.normal(0.0, NOISE * spread, size=picked.shape)).astype(array.dtype)
        batch.append(picked)
    return batch


def check(
    module: nn.Module,
    runner: ort.InferenceSession,
    inputs: Sequence[NDArray[Any]],
    input_names: Sequence[str],
    output_names: Sequence[str],
    batched: bool,
    tolerance: float = TOLERANCE,
) -> tuple[Parity, Arrays]:
    """Parity on the example inputs and on generated batches; returns onnxruntime's outputs on the example."""
    rows = len(inputs[0]) if batched else 1
    actual = onnx_outputs(runner, input_names, inputs)
    where = f"the example inputs (batch {rows})" if batched else "the example inputs"
    first = compare(torch_outputs(module, inputs), actual, output_names, where, tolerance)
    checks = [ParityCheck("example", rows if batched else None, first)]
    if batched:
        for size in (s for s in GENERATED_BATCHES if s != rows):
            batch = generated_inputs(inputs, size, seed=0)
            diff = compare(
                torch_outputs(module, batch),
                onnx_outputs(runner, input_names, batch),
                output_names,
                f"generated inputs (batch {size})",
                tolerance,
            )
            checks.append(ParityCheck("generated", size, diff))
    parity = Parity(max(c.max_abs_diff for c in checks), rows, tolerance, tuple(checks))
    return parity, actual
