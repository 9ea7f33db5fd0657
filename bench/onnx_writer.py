"""Write large ONNX models for the weights benchmark without holding their weights in memory: every
initializer goes to ``model.onnx.data`` in 16 MiB chunks of seeded random values, and the protobuf
keeps only its external-data reference."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from onnx import TensorProto

_CHUNK = 1 << 22


class ExternalWriter:
    """Appends float32 tensors to one data file; `initializer()` returns the external reference."""

    def __init__(self, folder: Path, seed: int, location: str = "model.onnx.data") -> None:
        self.location = location
        self._path = folder / location
        self._rng = np.random.default_rng(seed)
        self._file: BinaryIO = self._path.open("wb")
        self.offset = 0
        self.parameters = 0
        self.largest = 0
        self.initializers: list[TensorProto] = []

    def add(self, name: str, shape: tuple[int, ...], scale: float = 0.02, fill: float | None = None) -> str:
        """Random N(0, scale²) values (or all ``fill``), written chunk by chunk."""
        count = int(np.prod(shape))
        for start in range(0, count, _CHUNK):
            size = min(_CHUNK, count - start)
            if fill is None:
                chunk = self._rng.standard_normal(size, dtype=np.float32) * np.float32(scale)
            else:
                chunk = np.full(size, fill, np.float32)
            self._file.write(chunk.astype("<f4").tobytes())
        proto = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape)
        proto.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", self.offset), ("length", count * 4)):
            entry = proto.external_data.add()
            entry.key, entry.value = key, str(value)
        self.initializers.append(proto)
        self.offset += count * 4
        self.parameters += count
        self.largest = max(self.largest, count * 4)
        return name

    def close(self) -> None:
        self._file.close()
