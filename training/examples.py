"""Example requests shipped with a model: ``models/<name>/examples/<example>.json``.

Each file is a complete V2 inference request body (JSON tensors), so
``curl -d @models/<name>/examples/<example>.json …/v2/models/<name>/infer`` works as it is, and so
do ``activations`` and ``explain``. An evaluation example's ``inputs`` end with an entry named
``targets``, which is how ``/evaluate`` takes them (such a file is for ``/evaluate`` only). A short
description travels in the request's ``parameters`` (``{"description": ...}``), which every endpoint
accepts and ignores, so the file stays usable as it is and needs no index beside it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.errors import InvalidRequest
from service.protocol.datatypes import BINARY_ONLY, datatype_of
from service.serving.repository import EXAMPLE_SUFFIX, EXAMPLES_DIR, TARGETS, validate_example_name
from training.errors import UsageError
from training.inputs import ArrayLike, Inputs, to_array


@dataclass(frozen=True, slots=True)
class Example:
    """One example request: model inputs, optionally the targets that make it an evaluation example,
    and a one-line description."""

    inputs: Inputs
    targets: ArrayLike | None = None
    description: str | None = None


def check_name(name: str) -> str:
    try:
        return validate_example_name(name)
    except InvalidRequest as exc:
        raise UsageError(exc.message) from exc


def _values(array: NDArray[Any], what: str) -> list[Any]:
    """Flat JSON values; floats in the shortest form that reads back as the same value of their type."""
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise UsageError(f"{what} holds NaN or infinity, which JSON cannot carry")
        return [float(str(v)) for v in array.ravel()]
    values: list[Any] = array.ravel().tolist()
    return values


def _tensor(name: str, array: NDArray[Any], what: str) -> dict[str, Any]:
    try:
        datatype = datatype_of(array)
    except TypeError as exc:
        raise UsageError(f"{what}: {exc}") from exc
    if datatype in BINARY_ONLY or datatype == "BYTES":
        raise UsageError(f"{what}: {datatype} tensors cannot be written as JSON example requests")
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": _values(array, what)}


def request_body(
    input_names: Sequence[str],
    inputs: Sequence[NDArray[Any]],
    targets: NDArray[Any] | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """A V2 inference request for the inputs (plus a trailing `targets` entry for /evaluate)."""
    body: dict[str, Any] = {}
    if description:
        body["parameters"] = {"description": description}
    tensors = [_tensor(n, a, f"example input {n!r}") for n, a in zip(input_names, inputs, strict=True)]
    if targets is not None:
        tensors.append(_tensor(TARGETS, to_array(targets, "example targets"), "example targets"))
    body["inputs"] = tensors
    return body


def dumps(body: Mapping[str, Any]) -> str:
    """The body as JSON with one line per tensor, so the file reads well and diffs well."""
    lines = ["{"]
    if "parameters" in body:
        lines.append(f'  "parameters": {json.dumps(body["parameters"])},')
    lines.append('  "inputs": [')
    tensors = [f"    {json.dumps(t)}" for t in body["inputs"]]
    lines.append(",\n".join(tensors))
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def write(model_dir: Path, bodies: Mapping[str, str]) -> list[Path]:
    """Write each example into `model_dir/examples/` atomically (temp file, then rename over any
    older file of that name); examples of other names stay."""
    folder = model_dir / EXAMPLES_DIR
    written = []
    try:
        folder.mkdir(exist_ok=True)
        for name, text in bodies.items():
            handle, temp = tempfile.mkstemp(prefix=".staging-", suffix=EXAMPLE_SUFFIX, dir=folder)
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    out.write(text)
                os.chmod(temp, 0o644)  # mkstemp makes it private; examples are read like the models
                target = folder / f"{name}{EXAMPLE_SUFFIX}"
                os.replace(temp, target)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
            written.append(target)
    except OSError as exc:
        raise UsageError(f"cannot write the example requests into {folder}: {exc.strerror or exc}") from exc
    return written
