"""onnxruntime alone, in this process: the ceiling a server can approach."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.models import INPUT, MlpShape, sample


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def samples_per_s(sess: ort.InferenceSession, shape: MlpShape, batch: int, seconds: float) -> float:
    """Back-to-back runs at one batch size for about ``seconds``; returns samples per second."""
    feeds = {INPUT: sample(shape, batch)}
    for _ in range(3):
        sess.run(None, feeds)
    runs, began = 0, time.perf_counter()
    deadline = began + seconds
    while True:
        sess.run(None, feeds)
        runs += 1
        now = time.perf_counter()
        if now >= deadline:
            return float(runs * batch / (now - began))


def check_outputs(sess: ort.InferenceSession, shape: MlpShape, outputs: np.ndarray) -> bool:
    expected = sess.run(None, {INPUT: sample(shape, 1)})[0]
    return bool(np.allclose(expected, outputs, rtol=1e-4, atol=1e-5))
