"""uvicorn's httptools protocol, with each response's head and body sent in one write.

uvicorn writes the status line and headers as soon as the application sends ``http.response.start``
and the body as a second write; uvloop sends each write at once, so every response costs two
``send`` system calls and two TCP segments, and the client wakes up twice. For a small inference
answer those are a measurable share of the whole request. Here a response head is held back until
the next write on the connection (the body, which the service sends right after it) and both go out
together; if nothing follows within the current pass of the event loop (a streamed response, a
``100 Continue``), the head goes out on its own at the end of that pass. Order is kept: a held head
is always written before anything after it, and before the connection closes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD = b"HTTP/1.1 "


class CoalescingTransport:
    """A transport wrapper that holds a response head for the write that follows it."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.writelines((held, data))
        elif isinstance(data, bytes) and data.startswith(_HEAD):
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a `CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
