"""The benchmark's own parts: the bare-ASGI ceiling and the minimal server answer like servers, the profile
sorts samples."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import orjson

from bench import ceiling
from bench.bodies import binary_body, decode_output, json_body
from bench.minimal import MinimalApp
from bench.models import MlpShape, build, sample
from bench.profile import IDLE, LOOP, OTHER, classify, read_collapsed


async def test_the_ceiling_reads_the_whole_body_and_answers_a_fixed_v2_response() -> None:
    chunks = [
        {"type": "http.request", "body": b'{"inputs": [', "more_body": True},
        {"type": "http.request", "body": b"]}", "more_body": False},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await ceiling.app({"type": "http", "method": "POST", "path": "/x"}, receive, send)
    assert chunks == []
    assert sent[0]["status"] == 200
    answer = orjson.loads(sent[1]["body"])
    assert len(answer["outputs"][0]["data"]) == 10
    assert dict(sent[0]["headers"])[b"content-length"] == str(len(sent[1]["body"])).encode()


def test_the_profile_names_the_innermost_known_part_of_each_stack() -> None:
    loop = "<module> (<string>:1);_worker (service/ops/supervisor.py:143);Runner.run (asyncio/runners.py:118)"
    assert classify(f"{loop};RequestResponseCycle.send (uvicorn/protocols/http/httptools_impl.py:524)") == (
        "uvicorn, httptools"
    )
    infer = f"{loop};InferFastPath._infer (service/http/infer_fast_path.py:83);infer (service/serving/inference.py:28)"
    assert classify(f"{infer};parse_request (service/protocol/request.py:80);loads (service/protocol/fast_json.py:36)") == (
        "request JSON parse"
    )
    assert classify(f"{infer};run (onnxruntime/capi/onnxruntime_inference_collection.py:406)") == "onnxruntime run"
    assert classify(loop) == LOOP
    assert classify("Thread.run (threading.py:982);Semaphore.acquire (threading.py:479);Condition.wait (threading.py:327)") == IDLE
    assert classify("main (somewhere/else.py:1)") == OTHER
    counts = read_collapsed([f"{loop} 7", f"{infer};run (onnxruntime/capi/x.py:1) 3", "garbage"])
    assert counts == {LOOP: 7, "onnxruntime run": 3}


async def test_the_minimal_server_batches_concurrent_requests_and_answers_each_its_own_rows(tmp_path: Path) -> None:
    shape = MlpShape("tiny", (6, 5, 3))
    model = tmp_path / shape.name / "1" / "model.onnx"
    model.parent.mkdir(parents=True)
    onnx.save(build(shape), model)
    app = MinimalApp(model)
    reference = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    bodies = [
        (make(sample(shape, rows=rows, seed=seed), tmp_path, f"{make.__name__}{seed}"), sample(shape, rows, seed))
        for seed, (make, rows) in enumerate([(json_body, 1), (binary_body, 2), (json_body, 3), (binary_body, 1)])
    ]

    async def ask(body: Any) -> np.ndarray:
        headers = [(b"content-type", body.content_type.encode())]
        if body.header_length:
            headers.append((b"inference-header-content-length", body.header_length.encode()))
        messages = [{"type": "http.request", "body": body.path.read_bytes(), "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app({"type": "http", "method": "POST", "path": "/infer", "headers": headers}, receive, send)
        assert sent[0]["status"] == 200
        length = dict(sent[0]["headers"]).get(b"inference-header-content-length")
        return decode_output(sent[1]["body"], length.decode() if length else None)

    answers = await asyncio.gather(*(ask(body) for body, _ in bodies))
    for answer, (_, inputs) in zip(answers, bodies, strict=True):
        expected = reference.run(None, {"input": inputs})[0]
        np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-6)
