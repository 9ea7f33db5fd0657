"""A tensor's stored values, dequantized lazily, walked in float64 blocks of bounded size.

Statistics never hold a float64 copy of a whole tensor: they see ``(outer, channels, inner)``
blocks of at most ``BLOCK`` values, with the output-channel axis in the middle, so per-channel
reductions are plain axis reductions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.weights.graph import ParamTensor, Quantization
from service.weights.stored import dense_values, stored_values

BLOCK = 1 << 20
"""Values per float64 block (8 MiB)."""


@dataclass(frozen=True, slots=True)
class Block:
    channels: slice
    values: np.ndarray  # float64, shape (outer, channels, inner)


@dataclass(frozen=True, slots=True)
class TensorValues:
    """Stored values plus what turns them into weights."""

    stored: np.ndarray
    out_axis: int | None = None
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    quant_axis: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.stored.shape)

    @property
    def size(self) -> int:
        return int(self.stored.size)

    @property
    def quantized(self) -> bool:
        return self.scale is not None or self.zero_point is not None

    def sha256(self) -> str:
        digest = hashlib.sha256()
        flat = self.stored.reshape(-1)
        step = max(1, (BLOCK * 8) // max(flat.itemsize, 1))
        for start in range(0, flat.size, step):
            digest.update(np.ascontiguousarray(flat[start : start + step]).tobytes())
        return digest.hexdigest()

    def to_float64(self) -> np.ndarray:
        """The whole dequantized tensor in float64 (for the callers that need it all at once)."""
        x = self.stored.astype(np.float64)
        if not self.quantized:
            return x
        shape = [1] * x.ndim
        if self.quant_axis is not None and x.ndim:
            shape[self.quant_axis] = -1
        if self.zero_point is not None:
            x -= self.zero_point.astype(np.float64).reshape(shape)
        if self.scale is not None:
            x *= self.scale.astype(np.float64).reshape(shape)
        return x

    def blocks(self) -> Iterator[Block]:
        view, scale, zero = self._channel_view()
        outer, channels, inner = view.shape
        per_outer = channels * inner
        if per_outer <= BLOCK:
            step = max(1, BLOCK // max(per_outer, 1))
            for o in range(0, outer, step):
                yield self._block(view[o : o + step], slice(0, channels), scale, zero)
            return
        for o in range(outer):
            if inner <= BLOCK:
                step = max(1, BLOCK // max(inner, 1))
                for c in range(0, channels, step):
                    cs = slice(c, min(c + step, channels))
                    yield self._block(view[o : o + 1, cs], cs, scale, zero)
            else:
                for c in range(channels):
                    for i in range(0, inner, BLOCK):
                        piece = view[o : o + 1, c : c + 1, i : i + BLOCK]
                        yield self._block(piece, slice(c, c + 1), scale, zero)

    @property
    def channels(self) -> int:
        if self.out_axis is None or not self.stored.ndim:
            return 1
        return int(self.stored.shape[self.out_axis])

    def _channel_view(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Reshape to (outer, channels, inner); dequantization parameters per channel or scalar."""
        source = self.stored
        scale, zero = self.scale, self.zero_point
        per_channel_quant = self.quant_axis is not None
        if per_channel_quant and self.quant_axis != self.out_axis:
            source, scale, zero = self.to_float64(), None, None  # rare layout: dequantize up front
        if self.out_axis is None or source.ndim == 0:
            view = source.reshape(-1, 1, 1)
            return view, _scalar(scale), _scalar(zero)
        axis = self.out_axis
        outer = int(np.prod(source.shape[:axis], dtype=np.int64))
        inner = int(np.prod(source.shape[axis + 1 :], dtype=np.int64))
        view = source.reshape(outer, int(source.shape[axis]), inner)
        if scale is not None and per_channel_quant:
            return view, scale.astype(np.float64).reshape(-1), _per_channel(zero)
        return view, _scalar(scale), _scalar(zero)

    @staticmethod
    def _block(
        raw: np.ndarray, channels: slice, scale: np.ndarray | None, zero: np.ndarray | None
    ) -> Block:
        x = raw.astype(np.float64)
        if zero is not None:
            x -= zero[channels, None] if zero.ndim else zero
        if scale is not None:
            x *= scale[channels, None] if scale.ndim else scale
        return Block(channels, x)


def _scalar(array: np.ndarray | None) -> np.ndarray | None:
    if array is None:
        return None
    return np.asarray(np.asarray(array, dtype=np.float64).reshape(-1)[0])


def _per_channel(array: np.ndarray | None) -> np.ndarray | None:
    if array is None:
        return None
    flat = np.asarray(array, dtype=np.float64).reshape(-1)
    return flat if flat.size > 1 else np.asarray(flat[0])


def tensor_values(tensor: ParamTensor, directory: Path) -> TensorValues:
    """Open one parameter tensor of a graph (memory-mapped when its data is external)."""
    if tensor.sparse is not None:
        stored = dense_values(tensor.sparse, directory)
    else:
        stored = stored_values(tensor.proto, directory)
    quant = tensor.quantization
    if quant is None:
        return TensorValues(stored, tensor.out_axis)
    return _quantized(stored, tensor.out_axis, quant, directory)


def _quantized(
    stored: np.ndarray, out_axis: int | None, quant: Quantization, directory: Path
) -> TensorValues:
    scale: np.ndarray | None = None
    if len(quant.scales) == 1:
        scale = stored_values(quant.scales[0], directory)
    elif quant.scales:  # an int32 bias: input scale x weight scale, multiplied in float64
        scale = np.ones(())
        for part in quant.scales:
            scale = scale * np.asarray(stored_values(part, directory), dtype=np.float64)
    zero = stored_values(quant.zero_point, directory) if quant.zero_point is not None else None
    axis = quant.axis
    if axis is not None and stored.ndim:
        axis %= stored.ndim
    return TensorValues(stored, out_axis, scale, zero, axis)
