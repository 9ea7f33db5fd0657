"""The signature of a model's inputs and outputs, independent of the runtime behind it, and the one rule
for how many samples (rows) a request carries.

The batch axis of a tensor is its first dynamic dimension: ``[-1, 3, 8, 8]`` is batched on axis 0, a
recurrent state ``[2, -1, 128]`` on axis 1; a tensor with only fixed dimensions (a 0-d scalar such as a
sample rate, a ``[2, 3]`` table) has none. Where the model names its dynamic dimensions, the name they
all share decides instead: beside ``h0 [batch, 7]``, a sequence ``[time, batch, 5]`` is batched on axis 1,
not on its first dynamic axis (see `name_batch_axes`). The rows of a request are the size every input
with a batch axis has along it; a request whose inputs have no batch axis at all is one row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from service.errors import InvalidInput


def batch_axis(shape: Sequence[int]) -> int | None:
    """The first dynamic (-1) dimension of a signature shape, or None when every dimension is fixed."""
    return next((axis for axis, dim in enumerate(shape) if dim < 0), None)


_FIRST_DYNAMIC = -2
"""Default of `TensorSpec.batch_axis`: the first dynamic dimension."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    """V2 datatype, e.g. ``FP32``."""
    shape: tuple[int, ...]
    """Dimensions; -1 where the model accepts any size."""
    dtype: np.dtype[np.generic]
    dim_names: tuple[str | None, ...] = ()
    """The model's symbolic names of the dimensions (None where fixed or unnamed); may be empty."""
    batch_axis: int | None = _FIRST_DYNAMIC
    """The axis along which samples stack (see the module's rule), or None."""

    def __post_init__(self) -> None:
        if self.batch_axis == _FIRST_DYNAMIC:
            object.__setattr__(self, "batch_axis", batch_axis(self.shape))

    @property
    def batched(self) -> bool:
        """The first axis is the batch axis, so requests can be stacked along it."""
        return self.batch_axis == 0

    def as_metadata(self) -> dict[str, object]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def request_rows(specs: Sequence[TensorSpec], feeds: Mapping[str, np.ndarray]) -> int:
    """Samples in a request: the size shared by every input along its batch axis; 1 when no input has
    one. Inputs that disagree are a caller mistake (400) named here, before the model sees them."""
    rows: int | None = None
    for spec in specs:
        axis = spec.batch_axis
        array = feeds.get(spec.name)
        if axis is not None and array is not None and axis < array.ndim:
            size = int(array.shape[axis])
            if rows is None:
                rows = size
            elif size != rows:
                detail = ", ".join(
                    f"'{other.name}' has {feeds[other.name].shape[other.batch_axis]}"
                    for other in specs
                    if other.batch_axis is not None
                    and other.name in feeds
                    and other.batch_axis < feeds[other.name].ndim
                )
                raise InvalidInput(f"inputs disagree on the batch dimension: {detail}")
    return 1 if rows is None else rows


def name_batch_axes(
    inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs and outputs with the batch axis their dimension names agree on, when they do.

    The batch name is a name every input with a dynamic dimension has among its named dynamic
    dimensions (the one at the lowest axes when several are shared). A tensor with a dimension of
    that name is batched along it; when no name is shared by all inputs the first-dynamic-dimension
    rule stands for every tensor.
    """
    dynamic = [spec for spec in inputs if any(dim < 0 for dim in spec.shape)]
    shared: set[str] | None = None
    for spec in dynamic:
        names = {name for dim, name in zip(spec.shape, spec.dim_names, strict=False) if dim < 0 and name}
        shared = names if shared is None else shared & names
    if not shared:
        return tuple(inputs), tuple(outputs)
    chosen = min(shared, key=lambda name: (sum(spec.dim_names.index(name) for spec in dynamic), name))

    def placed(spec: TensorSpec) -> TensorSpec:
        return replace(spec, batch_axis=spec.dim_names.index(chosen)) if chosen in spec.dim_names else spec

    return tuple(map(placed, inputs)), tuple(map(placed, outputs))
