"""The least CPU a JSON inference request can cost on this machine, whatever server answers it.

Any server on weightserve's HTTP stack pays, per request, at least what the bare-ASGI ceiling pays
(reading the request and writing an answer, with no model), plus the model's run for its sample, plus
reading the sample's numbers out of the JSON text. This module times the last two alone, each at its
best: the run on a session with one intra-op thread (as every server here runs it), back to back so
its weights stay in the cache, at the largest batch the load allows; the numbers read by weightserve's
native reader from a body already in memory, with nothing else checked. `python -m bench` adds the
ceiling's CPU per request from the same run: a server-CPU target below that sum is out of reach here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from bench.models import INPUT, MlpShape, sample
from service.protocol import native_json


@dataclass(frozen=True, slots=True)
class Floor:
    model_us: float
    """CPU per sample of the model's run, warm, one thread, at ``batch``."""
    batch: int
    read_us: float
    """CPU to read one request's numbers out of its JSON text."""

    def total_us(self, ceiling_us: float) -> float:
        """The least CPU per request: the ceiling's, plus the run's and the read's."""
        return ceiling_us + self.model_us + self.read_us


def model_us_per_sample(path: Path, shape: MlpShape, batch: int, seconds: float) -> float:
    """CPU microseconds per sample of back-to-back runs of ``batch`` samples, on one intra-op thread
    with no spinning (weightserve's and the minimal server's session options)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {INPUT: sample(shape, batch)}
    for _ in range(3):
        session.run(None, feeds)
    runs, began = 0, time.process_time()
    deadline = time.perf_counter() + seconds
    while runs == 0 or time.perf_counter() < deadline:
        session.run(None, feeds)
        runs += 1
    return (time.process_time() - began) * 1e6 / (runs * batch)


def read_us(body: bytes, seconds: float) -> float:
    """CPU microseconds to read the numbers of ``body``'s ``data`` arrays, the body already in memory:
    the arrays found, then read into float64 and float32, and nothing else of the request looked at."""
    split = native_json.split_data(body)
    if split is None:
        raise ValueError("the body has no data array")
    spans = split[1]
    pairs = list(zip(spans[::2], spans[1::2], strict=True))
    read_floats = native_json.read_floats
    for start, stop in pairs:
        if read_floats(body, start, stop) is None:
            raise ValueError("the body's data is not a flat array of numbers")
    reads, began = 0, time.process_time()
    deadline = time.perf_counter() + seconds
    while reads == 0 or time.perf_counter() < deadline:
        for _ in range(100):
            native_json.split_data(body)
            for start, stop in pairs:
                read_floats(body, start, stop)
        reads += 100
    return (time.process_time() - began) * 1e6 / reads


def measure(model: Path, shape: MlpShape, batch: int, body: bytes, seconds: float) -> Floor:
    return Floor(model_us_per_sample(model, shape, batch, seconds), batch, read_us(body, seconds))
