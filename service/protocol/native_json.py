"""The common V2 JSON inference request read in one native pass (``_infer_json.c``).

`parse` gives the body as the Python objects ``json.loads`` would, except that each flat ``data``
array of numbers under ``inputs`` comes as `Numbers`: the values as float64 and as float32 bytes,
converted without a Python object per element. It gives None for anything it does not read exactly
as the general path would (escapes, duplicate keys, nested data, numbers out of range, malformed
text), and the caller then reads the body the general way, which words any error.

The extension parses numbers with the Eisel-Lemire algorithm. Its table of 128-bit powers of five
is computed here from Python's exact integers, once, when this module is imported.
"""

from __future__ import annotations

import sys
from typing import Any, TypeAlias

from service.protocol import _infer_json

POWER_MIN = -342
POWER_MAX = 308
"""The powers of ten whose products the extension computes itself; others go to CPython's parser."""

Numbers: TypeAlias = tuple[bytes, bytes | None]
"""A flat ``data`` array: (float64 bytes, float32 bytes, or None where a value is beyond float32's range)."""


def powers_of_five() -> bytes:
    """The 128-bit truncated mantissas of 5**q, q in [POWER_MIN, POWER_MAX], as (high, low) native words.

    For q >= 0 the value is 5**q shifted into [2**127, 2**128), truncated. For q < 0 it is 2**b // 5**-q + 1
    for b large enough, truncated to 128 bits: never below the true value, so the algorithm's error
    bound holds from the other side."""
    words = bytearray()
    for q in range(POWER_MIN, POWER_MAX + 1):
        if q >= 0:
            value = 5**q
            while value < 1 << 127:
                value <<= 1
            value >>= max(0, value.bit_length() - 128)
        else:
            power = 5**-q
            z = power.bit_length()
            b = z + 127 if q >= -27 else 2 * z + 128
            value = 2**b // power + 1
            value >>= max(0, value.bit_length() - 128)
        words += (value >> 64).to_bytes(8, sys.byteorder) + (value & (2**64 - 1)).to_bytes(8, sys.byteorder)
    return bytes(words)


_infer_json.set_powers(powers_of_five())


def parse(body: bytes) -> dict[str, Any] | None:
    """The body's JSON object, its input data as `Numbers`; None to read it the general way."""
    return _infer_json.parse(body)


# The extension's own functions, not Python wrappers around them: they are called on every request.
split_data = _infer_json.split_data
"""``split_data(body)``: the byte segments around the body's ``"data"`` arrays (before the first,
between, after the last) and the arrays' (start, stop) offsets, flat; None when it has none. Found by
looking for the key and the first ``]`` after it, nothing else read: a body whose segments are those of
one that `parse` read whole differs from it only in those arrays, which `read_floats` reads."""

read_floats = _infer_json.read_floats
"""``read_floats(body, start, stop)``: the flat number array spanning ``body[start:stop]`` exactly, as
`parse` reads a ``data`` array (`Numbers`); None for anything else."""


def read_float(text: bytes) -> float | None:
    """One JSON number's text as `parse` reads it (None when it is not one, or out of range)."""
    return _infer_json.read_float(text)
