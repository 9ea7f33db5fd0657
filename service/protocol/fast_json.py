"""Inference request JSON with floating-point tensor data read straight into numpy.

A V2 JSON body is mostly one long list of numbers. A general JSON parser turns each into a Python
float and numpy then converts them back, one object per element. simdjson parses the document in
one pass and copies a flat numeric array into a float64 buffer, so the elements never become Python
objects. Casting that buffer to the input's datatype gives exactly what converting Python floats
would (both round the same correctly rounded doubles).

Only the common case is taken this way: an object whose ``inputs`` hold flat arrays of numbers for
FP16 / FP32 / FP64 tensors. Anything else returns None and the caller parses the body as before, so
error messages and edge cases (nested data, booleans, duplicate keys) stay as they were. One
difference remains: a list that starts with a number and mixes in lists of one element each (e.g.
``[1, [2]]``) is read flattened instead of being refused.

This is the general path's reader. The requests a version's `RequestPlan` takes are read by
`native_json` instead, in one compiled pass.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

# A speed-up only: without pysimdjson every body takes the general parser.
AVAILABLE = importlib.util.find_spec("simdjson") is not None
if AVAILABLE:
    import simdjson

_FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})

ERRORS = (ValueError, TypeError, KeyError, IndexError, RuntimeError)
"""What simdjson raises for malformed input (too deep, big integers, bad syntax, a wrong type)."""

Array: Any = simdjson.Array if AVAILABLE else None
"""simdjson's array type, for exact type checks (None without pysimdjson: nothing is of that type)."""


def loads(data: bytes | memoryview) -> dict[str, Any] | None:
    """The document with float tensors' ``data`` as float64 arrays, or None to parse it the usual way."""
    parsed = parse(data)
    if parsed is None:
        return None
    try:
        return _top(parsed)
    except ERRORS:
        # The general parser then reads the body again and words the error for the client.
        return None


def _top(document: simdjson.Object) -> dict[str, Any] | None:
    keys = list(document.keys())
    if len(set(keys)) != len(keys):
        return None
    out: dict[str, Any] = {}
    for key in keys:
        value = document[key]
        if key == "inputs" and isinstance(value, simdjson.Array):
            inputs = [_input(item) for item in value]
            if any(item is None for item in inputs):
                return None
            out[key] = inputs
        else:
            out[key] = plain(value)
    return out


def _input(item: Any) -> Any:
    if not isinstance(item, simdjson.Object):
        return plain(item)
    keys = list(item.keys())
    if len(set(keys)) != len(keys):
        return None
    out: dict[str, Any] = {}
    numeric = item.get("datatype") in _FLOAT_TYPES
    for key in keys:
        value = item[key]
        if key == "data" and numeric and isinstance(value, simdjson.Array):
            array = floats(value)
            if array is None:
                return None
            out[key] = array
        else:
            out[key] = plain(value)
    return out


def parse(data: bytes | memoryview) -> Any | None:
    """The JSON object as simdjson's document, whose values become Python objects only when read (see
    `floats` and `plain`); None when simdjson is missing, the text is malformed, or it is not an object."""
    if not AVAILABLE:
        return None
    try:
        parsed = simdjson.Parser().parse(data)
    except ERRORS:
        return None
    return parsed if type(parsed) is simdjson.Object else None


def floats(value: Any) -> np.ndarray | None:
    """A flat array of numbers from `parse` as float64, copied by simdjson without Python floats; None
    for anything else (nested lists, strings, booleans, null), which the general parser words as an error."""
    if Array is None or type(value) is not Array:
        return None
    count = len(value)
    # as_buffer flattens nested lists; nested data takes the usual path and its shape checks.
    if count and type(value[0]) is Array:
        return None
    try:
        array = np.frombuffer(value.as_buffer(of_type="d"), dtype=np.float64)
    except ERRORS:
        return None
    return array if array.size == count else None


def plain(value: Any) -> Any:
    """A value from `parse` as Python objects (dicts, lists, str, numbers)."""
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value
