"""What a caller passes as a model's inputs, made into one numpy array per input name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import torch
from numpy.typing import NDArray

from training.errors import UsageError

ArrayLike: TypeAlias = NDArray[Any] | torch.Tensor
Inputs: TypeAlias = ArrayLike | Sequence[ArrayLike] | Mapping[str, ArrayLike]
"""One array (a single input), arrays in input order, or arrays by input name."""


def to_array(value: Any, what: str) -> NDArray[Any]:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise UsageError(f"{what} must be a numpy array or a torch tensor, not {type(value).__name__}")


def to_arrays(inputs: Inputs, input_names: Sequence[str], what: str) -> list[NDArray[Any]]:
    """`inputs` as arrays in the order of `input_names`."""
    if isinstance(inputs, Mapping):
        missing = [n for n in input_names if n not in inputs]
        unknown = [n for n in inputs if n not in input_names]
        if missing or unknown:
            raise UsageError(
                f"{what} name {sorted(map(str, inputs))}; the inputs are {list(input_names)}"
                + (f" (missing {missing})" if missing else "")
            )
        values = [inputs[n] for n in input_names]
    elif isinstance(inputs, np.ndarray | torch.Tensor):
        values = [inputs]
    elif isinstance(inputs, Sequence) and not isinstance(inputs, str):
        values = list(inputs)
    else:
        raise UsageError(f"{what} must be an array, a sequence of arrays or a mapping from input name to array")
    if len(values) != len(input_names):
        raise UsageError(f"{what} hold {len(values)} arrays for {len(input_names)} input names {list(input_names)}")
    return [to_array(v, f"{what} {n!r}") for n, v in zip(input_names, values, strict=True)]


def batch_rows(arrays: Sequence[NDArray[Any]], what: str) -> int:
    """Rows along axis 0, the same for every array."""
    sizes = {int(a.shape[0]) if a.ndim else 0 for a in arrays}
    if len(sizes) != 1 or 0 in sizes:
        shapes = [list(a.shape) for a in arrays]
        raise UsageError(f"{what} must share a non-empty batch axis 0; their shapes are {shapes}")
    return sizes.pop()
