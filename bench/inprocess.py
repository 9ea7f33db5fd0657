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


EVICT_BYTES = 64 * 1024 * 1024
"""Memory read between cold runs: more than any last-level cache here, so the weights come from memory."""


def cold_samples_per_s(sess: ort.InferenceSession, shape: MlpShape, batch: int, seconds: float) -> float:
    """Runs at one batch size with the caches refilled by other data before each, counting only the
    runs' own time; returns samples per second. A server's run finds its weights like this whenever
    other work (its requests, the other workers, other tenants of the host) has passed through the
    cache since the last run: back-to-back runs (`samples_per_s`) keep them cached and overstate what a
    lone request's run can take."""
    feeds = {INPUT: sample(shape, batch)}
    other = np.ones(EVICT_BYTES // 4, dtype=np.float32)
    sess.run(None, feeds)
    runs, spent = 0, 0.0
    deadline = time.perf_counter() + seconds
    while runs == 0 or time.perf_counter() < deadline:
        other.sum()
        began = time.perf_counter()
        sess.run(None, feeds)
        spent += time.perf_counter() - began
        runs += 1
    return float(runs * batch / spent)


def check_outputs(sess: ort.InferenceSession, shape: MlpShape, outputs: np.ndarray) -> bool:
    expected = sess.run(None, {INPUT: sample(shape, 1)})[0]
    return bool(np.allclose(expected, outputs, rtol=1e-4, atol=1e-5))
