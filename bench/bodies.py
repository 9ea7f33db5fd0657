"""V2 request bodies for wrk: JSON, and Triton's binary tensor extension."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from bench.models import INPUT, OUTPUT


@dataclass(frozen=True, slots=True)
class Body:
    kind: str
    path: Path
    content_type: str
    header_length: str
    """Inference-Header-Content-Length, or "" for a plain JSON body."""


def json_body(array: np.ndarray, folder: Path, tag: str) -> Body:
    document = {
        "inputs": [{"name": INPUT, "datatype": "FP32", "shape": list(array.shape), "data": array.reshape(-1).tolist()}]
    }
    path = folder / f"{tag}.json"
    path.write_bytes(orjson.dumps(document))
    return Body("json", path, "application/json", "")


def binary_body(array: np.ndarray, folder: Path, tag: str) -> Body:
    raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": INPUT,
                    "datatype": "FP32",
                    "shape": list(array.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": OUTPUT, "parameters": {"binary_data": True}}],
        }
    )
    path = folder / f"{tag}.bin"
    path.write_bytes(header + raw)
    return Body("binary", path, "application/octet-stream", str(len(header)))


def decode_output(body: bytes, header_length: str | None) -> np.ndarray:
    """The first output of a V2 response, JSON or binary."""
    if header_length:
        size = int(header_length)
        entry = orjson.loads(body[:size])["outputs"][0]
        return np.frombuffer(body[size:], dtype="<f4").reshape(entry["shape"])
    entry = orjson.loads(body)["outputs"][0]
    return np.asarray(entry["data"], dtype=np.float32).reshape(entry["shape"])
