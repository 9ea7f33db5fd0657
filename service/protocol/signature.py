"""The signature of a model's inputs and outputs, independent of the runtime behind it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    """V2 datatype, e.g. ``FP32``."""
    shape: tuple[int, ...]
    """Dimensions; -1 where the model accepts any size."""
    dtype: np.dtype[np.generic]

    @property
    def batched(self) -> bool:
        """The first axis is dynamic, so requests can be stacked along it."""
        return bool(self.shape) and self.shape[0] == -1

    def as_metadata(self) -> dict[str, object]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}
