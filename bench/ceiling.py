"""The HTTP stack's own ceiling: a bare ASGI app on the ASGI server weightserve runs, with its options
and worker count, that reads the whole request body and answers a fixed 10-float V2 JSON response.

No routing, no parsing, no model: whatever weightserve serves above this rate is impossible, and
its share of this rate says how much of the stack's capacity the service's own work takes. Workers
bind their own SO_REUSEPORT sockets, as weightserve's do.

    python -m bench.ceiling --port PORT [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
from collections.abc import Callable
from typing import Any

import orjson

ANSWER = orjson.dumps(
    {
        "model_name": "mlp_small",
        "model_version": "1",
        "outputs": [
            {
                "name": "output",
                "datatype": "FP32",
                "shape": [1, 10],
                "data": [0.125, -1.5, 2.25, 0.0625, -0.75, 3.5, -2.125, 0.5, 1.75, -0.25],
            }
        ],
    }
)
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:  # the whole body, as any server that answers from it must
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


def _options() -> dict[str, Any]:
    from service.cli import server_options
    from service.settings import Settings

    return server_options(Settings())


def _fixed_reply() -> Any:
    return app


def _worker(factory: Callable[..., Any], arguments: tuple[Any, ...], host: str, port: int) -> None:
    import uvicorn

    from service.ops.supervisor import listening_socket

    sock = listening_socket(host, port)
    config = uvicorn.Config(factory(*arguments), host=host, port=port, **_options())
    server = uvicorn.Server(config)
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(server.serve(sockets=[sock]))


def serve(factory: Callable[..., Any], arguments: tuple[Any, ...], host: str, port: int, workers: int) -> int:
    """Run ``factory(*arguments)`` (a module-level callable: worker processes are spawned) as an ASGI app
    on weightserve's server options, in ``workers`` processes with their own ``SO_REUSEPORT`` sockets."""
    if workers == 1:
        import uvicorn

        uvicorn.run(factory(*arguments), host=host, port=port, **_options())
        return 0
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker, args=(factory, arguments, host, port)) for _ in range(workers)]
    for process in processes:
        process.start()

    def on_signal(sig: int, frame: Any) -> None:
        for process in processes:
            if process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    for process in processes:
        process.join()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    return serve(_fixed_reply, (), args.host, args.port, args.workers)


if __name__ == "__main__":
    raise SystemExit(main())
