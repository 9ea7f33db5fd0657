"""The least a batching model server does, on weightserve's HTTP stack: a yardstick, not a server.

A raw ASGI app that answers ``POST`` V2 inference requests for one model with the happy path only:
the body read whole, its float tensor taken straight into numpy (simdjson for JSON, the bytes as they
are for Triton's binary form), requests that arrive while a batch runs stacked into the next one
(a request that finds the batcher idle waits one event-loop pass for company, then runs the batch on
the loop), and the answer encoded with orjson. No routing, validation, errors, request ids,
statistics or metrics: whatever it costs above the bare-ASGI ceiling (``bench/ceiling.py``) is what
the model run and the protocol's own work cost on this stack, so its share of the ceiling bounds
what any server with those features can reach here. Same uvicorn, protocol, options, worker count
and ``SO_REUSEPORT`` sockets as weightserve and the ceiling; onnxruntime with weightserve's session
options (one thread per worker, no spinning).

    python -m bench.minimal --model FILE --port PORT [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import simdjson

from bench import ceiling


class MinimalApp:
    """One model, one batcher: the ASGI callable."""

    def __init__(self, model: Path) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name
        self._name = model.parent.parent.name
        self._queue: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        self._busy = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await ceiling.app(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":  # the readiness check (any path)
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        header_length = None
        for key, value in scope["headers"]:
            if key == b"inference-header-content-length":
                header_length = int(value)
        if header_length is None:
            document: Any = simdjson.Parser().parse(body)
            entry = document["inputs"][0]
            data = np.frombuffer(entry["data"].as_buffer(of_type="d"), dtype=np.float64).astype(np.float32)
            array = data.reshape(entry["shape"].as_list())
        else:
            entry = orjson.loads(body[:header_length])["inputs"][0]
            array = np.frombuffer(body, dtype=np.float32, offset=header_length).reshape(entry["shape"])
        result = await self._infer(array)
        answer: dict[str, Any] = {"name": self._output, "datatype": "FP32", "shape": list(result.shape)}
        headers = [(b"content-type", b"application/json")]
        if header_length is None:
            answer["data"] = result.reshape(-1)
            payload = orjson.dumps(
                {"model_name": self._name, "model_version": "1", "outputs": [answer]},
                option=orjson.OPT_SERIALIZE_NUMPY,
            )
        else:
            raw = result.tobytes()
            answer["parameters"] = {"binary_data_size": len(raw)}
            head = orjson.dumps({"model_name": self._name, "model_version": "1", "outputs": [answer]})
            payload = head + raw
            headers = [
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", b"%d" % len(head)),
            ]
        headers.append((b"content-length", b"%d" % len(payload)))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _infer(self, array: np.ndarray) -> np.ndarray:
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.append((array, future))
        if self._busy:
            return await future
        self._busy = True
        try:
            await asyncio.sleep(0)  # the requests read in the same pass join this batch
            while self._queue:
                batch, self._queue = self._queue, []
                stacked = np.concatenate([item for item, _ in batch])
                outputs = self._session.run([self._output], {self._input: stacked})[0]
                start = 0
                for item, waiter in batch:
                    waiter.set_result(outputs[start : start + len(item)])
                    start += len(item)
        finally:
            self._busy = False
        return await future


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    return ceiling.serve(MinimalApp, (args.model,), args.host, args.port, args.workers)


if __name__ == "__main__":
    raise SystemExit(main())
