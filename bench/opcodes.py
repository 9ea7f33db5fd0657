"""How much Python a request runs: bytecode instructions per inference request, by function.

    python -m bench.opcodes [--body json|binary] [--server weightserve|minimal] [--connections 32] [--rounds 8]

On a machine whose speed drifts by a fifth within minutes, timings need many alternating runs to
tell a 5 % change from the noise; the number of bytecode instructions a request executes does not
drift. This drives the ASGI app in one process, with no sockets: ``--connections`` clients each send
``--rounds`` requests of the request-bound model's benchmark body, one after another, all of them
concurrently, so the batcher forms batches as it does under load. After a warm-up it traces every
thread (``sys.settrace`` with opcode events), and prints the instructions per request: in total, by
package, and for the functions that run the most. ``--server minimal`` measures the minimal server
(``bench/minimal.py``) the same way, the yardstick of what a batching server must run.

An instruction is not a unit of time (a call or a dictionary lookup costs more than a jump), and the
C code that instructions call (the JSON reader, onnxruntime, numpy) is not counted: it is a measure of
the interpreted Python only, the part a profile spreads thin over many small functions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from types import FrameType
from typing import Any

import uvloop

from bench.bodies import Body, binary_body, json_body
from bench.minimal import MinimalApp
from bench.models import SMALL, sample, write_repository

App = Callable[[dict[str, Any], Any, Any], Coroutine[Any, Any, None]]

_PACKAGES = (("service/", "weightserve"), ("litestar/", "Litestar"), ("asyncio/", "asyncio"))
_OWN_FILE = os.path.abspath(__file__)


class Tally:
    """Instructions executed, by function, while tracing is on."""

    def __init__(self) -> None:
        self.by_function: Counter[tuple[str, str]] = Counter()

    def trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            if code.co_filename != _OWN_FILE:  # the fake clients are not the server's work
                self.by_function[(code.co_filename, code.co_name)] += 1
        return self.trace

    def start(self) -> None:
        threading.settrace(self.trace)
        sys.settrace(self.trace)

    def stop(self) -> None:
        sys.settrace(None)
        threading.settrace(None)


async def _lifespan(app: App) -> Callable[[], Awaitable[None]]:
    """Start ``app``'s lifespan; the coroutine function that shuts it down."""
    messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started = asyncio.Event()
    failed: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.failed":
            failed.append(str(message.get("message")))
        if message["type"].startswith("lifespan.startup"):
            started.set()

    await messages.put({"type": "lifespan.startup"})
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, messages.get, send))
    await started.wait()
    if failed:
        raise RuntimeError(f"the app did not start: {failed[0]}")

    async def stop() -> None:
        await messages.put({"type": "lifespan.shutdown"})
        await task

    return stop


async def _request(app: App, path: str, headers: list[tuple[bytes, bytes]], data: bytes) -> int:
    """One request through ``app``; its status."""
    status = 0
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:  # nothing more comes: the client waits for its answer
            await asyncio.Event().wait()
        delivered = True
        return {"type": "http.request", "body": data, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    # What the infer path reads of a scope; uvicorn gives more, which only Litestar's routing reads.
    scope = {"type": "http", "http_version": "1.1", "method": "POST", "path": path, "headers": headers}
    await app(scope, receive, send)
    return status


async def count(server: str, body_kind: str, connections: int, rounds: int) -> tuple[Tally, int, Counter[int]]:
    """Instructions of ``connections * rounds`` requests, and the statuses they got."""
    with tempfile.TemporaryDirectory(prefix="weightserve-opcodes-") as tmp:
        folder = Path(tmp)
        repository = write_repository(folder / "models", (SMALL,))
        body: Body = (json_body if body_kind == "json" else binary_body)(sample(SMALL), folder, SMALL.name)
        data = body.path.read_bytes()
        headers = [(b"content-type", body.content_type.encode()), (b"content-length", str(len(data)).encode())]
        if body.header_length:
            headers.append((b"inference-header-content-length", body.header_length.encode()))
        app, stop = await _server(server, repository)
        path = f"/v2/models/{SMALL.name}/infer"
        statuses: Counter[int] = Counter()

        async def client(requests: int) -> None:
            for _ in range(requests):
                statuses[await _request(app, path, headers, data)] += 1

        try:
            await asyncio.gather(*(client(8) for _ in range(connections)))  # warm-up: costs measured, plan known
            statuses.clear()
            tally = Tally()
            tally.start()
            try:
                await asyncio.gather(*(client(rounds) for _ in range(connections)))
            finally:
                tally.stop()
        finally:
            await stop()
    return tally, connections * rounds, statuses


async def _server(server: str, repository: Path) -> tuple[App, Callable[[], Awaitable[None]]]:
    if server == "minimal":
        minimal = MinimalApp(repository / SMALL.name / "1" / "model.onnx")

        async def nothing() -> None:
            return None

        return minimal, nothing
    from service.app import create_app
    from service.settings import Settings

    # One worker's share of the machine, as each of the benchmark's two workers has it.
    app: Any = create_app(Settings(repository=repository, workers=1, intra_op_threads=1, log_level="warning"))
    return app, await _lifespan(app)


def report(tally: Tally, requests: int, top: int) -> str:
    total = sum(tally.by_function.values())
    packages: Counter[str] = Counter()
    for (filename, _), instructions in tally.by_function.items():
        packages[next((name for part, name in _PACKAGES if part in filename), "other")] += instructions
    lines = [f"{total / requests:,.0f} bytecode instructions per request ({requests} requests)"]
    lines += [f"  {name:12s} {instructions / requests:8,.1f}" for name, instructions in packages.most_common()]
    lines.append(f"the {top} functions that run the most, per request:")
    for (filename, function), instructions in tally.by_function.most_common(top):
        where = filename.split("site-packages/")[-1].split("/lib/python3")[-1]
        for marker in ("/service/", "/bench/"):
            if marker in where:
                where = marker.lstrip("/") + where.split(marker, 1)[1]
        lines.append(f"  {instructions / requests:8,.1f}  {where}:{function}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--body", choices=("json", "binary"), default="json")
    parser.add_argument("--server", choices=("weightserve", "minimal"), default="weightserve")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=8, help="requests per connection, traced")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    # The event loop the server runs on: asyncio's own loop would add its Python to every request.
    tally, requests, statuses = uvloop.run(count(args.server, args.body, args.connections, args.rounds))
    print(report(tally, requests, args.top))
    if set(statuses) != {200}:
        print(f"statuses: {dict(statuses)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
