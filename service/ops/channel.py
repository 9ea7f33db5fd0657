"""Messages between worker processes and their supervisor, over a private local stream socket.

A frame is a 4-byte big-endian length and a JSON object. A request carries an id and an operation;
its answer carries the same id and a result or an error. Both ends send requests (a worker asks its
supervisor to load a model while the supervisor asks every worker to prepare it), so each incoming
request runs in a task of its own and the reader never waits for a handler.

Errors of the service's error tree cross the socket with their class, so a 404 raised in the
supervisor is a 404 in the worker that answers the client. Nothing here knows what the operations
mean; this channel carries control calls only, never inference requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from service import errors
from service.errors import ServiceError

log = logging.getLogger(__name__)

Handler = Callable[[str, Any], Awaitable[Any]]
"""Answers one incoming request: (operation, body) -> result (JSON-serialisable)."""

_HEADER = struct.Struct(">I")
_MAX_FRAME = 256 * 1024 * 1024


class ChannelClosed(ConnectionError):
    """The other end went away (it exited, or closed the channel) before answering."""


async def _no_handler(op: str, body: Any) -> Any:
    raise ServiceError(f"no handler for {op!r}")


class Channel:
    """One connection; ``peer`` names the other end in log lines and error messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        self.peer = peer
        self.hello: dict[str, Any] = {}
        self._reader = reader
        self._writer = writer
        self._handler: Handler = _no_handler
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._write_lock = asyncio.Lock()
        self._reading: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def start(self, handler: Handler) -> None:
        """Begin answering incoming requests with ``handler`` (and receiving answers to ours)."""
        self._handler = handler
        self._reading = asyncio.get_running_loop().create_task(self._read_forever())

    async def request(self, op: str, body: Any = None) -> Any:
        """Send a request and wait for its answer; raises the remote error, or ChannelClosed."""
        if self.closed:
            raise ChannelClosed(f"{self.peer} is gone")
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        try:
            await self._send({"id": ident, "op": op, "body": body})
            return await future
        finally:
            self._waiting.pop(ident, None)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def aclose(self) -> None:
        if self._reading is not None and not self._reading.done():
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading
        self._finish()

    # ------------------------------------------------------------------------------ internals

    async def _send(self, message: dict[str, Any]) -> None:
        data = orjson.dumps(message)
        try:
            async with self._write_lock:
                self._writer.write(_HEADER.pack(len(data)) + data)
                await self._writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise ChannelClosed(f"{self.peer} is gone: {exc}") from exc

    async def _read_forever(self) -> None:
        try:
            while True:
                message = await read_frame(self._reader)
                if message is None:
                    break
                if "op" in message:
                    task = asyncio.get_running_loop().create_task(self._answer(message))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                else:
                    self._settle(message)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            log.debug("control channel to %s ended: %r", self.peer, exc)
        finally:
            self._finish()

    async def _answer(self, message: dict[str, Any]) -> None:
        ident = message.get("id")
        try:
            result = await self._handler(str(message["op"]), message.get("body"))
            answer: dict[str, Any] = {"id": ident, "result": result}
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not isinstance(exc, ServiceError):
                log.exception("control request %r from %s failed", message.get("op"), self.peer)
            answer = {"id": ident, "error": _describe(exc)}
        with contextlib.suppress(ChannelClosed):
            await self._send(answer)

    def _settle(self, message: dict[str, Any]) -> None:
        future = self._waiting.get(message.get("id", -1))
        if future is None or future.done():
            return
        if "error" in message:
            future.set_exception(_rebuild(message["error"]))
        else:
            future.set_result(message.get("result"))

    def _finish(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ChannelClosed(f"{self.peer} went away before answering"))
        for task in list(self._tasks):
            task.cancel()
        self._writer.close()


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None at a clean end of stream."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    (size,) = _HEADER.unpack(header)
    if size > _MAX_FRAME:
        raise ValueError(f"control frame of {size} bytes is over the limit")
    message = orjson.loads(await reader.readexactly(size))
    if not isinstance(message, dict):
        raise ValueError("control frame is not a JSON object")
    return message


async def connect(path: Path, hello: dict[str, Any], peer: str) -> Channel:
    """Open a channel to the server at ``path``, introducing this end with ``hello``."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    data = orjson.dumps(hello)
    writer.write(_HEADER.pack(len(data)) + data)
    await writer.drain()
    return Channel(reader, writer, peer)


async def listen(path: Path, on_channel: Callable[[Channel], Awaitable[None]]) -> asyncio.Server:
    """Accept channels at ``path``; ``on_channel`` gets each one with its ``hello`` read, unstarted."""

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            hello = await read_frame(reader)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            hello = None
        if hello is None:
            writer.close()
            return
        channel = Channel(reader, writer, str(hello.get("peer", "a worker")))
        channel.hello = hello
        await on_channel(channel)

    return await asyncio.start_unix_server(accepted, path=str(path))


def _describe(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, ServiceError):
        extra = {k: v for k, v in vars(exc).items() if isinstance(v, (str, int, float, bool, type(None)))}
        return {"type": type(exc).__name__, "message": exc.message, "attributes": extra}
    return {"type": "ServiceError", "message": f"{type(exc).__name__}: {exc}", "attributes": {}}


def _rebuild(error: Any) -> ServiceError:
    """The remote error as the same class of the error tree (a plain ServiceError if unknown)."""
    if not isinstance(error, dict):
        return ServiceError(f"control call failed: {error!r}")
    cls = getattr(errors, str(error.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, ServiceError)):
        cls = ServiceError
    message = str(error.get("message", ""))
    rebuilt: ServiceError = cls.__new__(cls)
    Exception.__init__(rebuilt, message)
    rebuilt.__dict__.update(error.get("attributes") or {})
    rebuilt.message = message
    return rebuilt
