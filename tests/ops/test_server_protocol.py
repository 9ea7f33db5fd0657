"""The HTTP server's protocol: a response head goes out with the body that follows it, in one write,
and every kind of response still arrives whole and in order."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from service.ops.server_protocol import CoalescingHttpToolsProtocol, CoalescingTransport
from tests.server import free_port


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        self.writes.append(b"".join(bytes(chunk) for chunk in chunks))

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info {name}"


async def test_a_head_and_the_body_after_it_go_out_as_one_write() -> None:
    inner = FakeTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
    assert inner.writes == []
    transport.write(b"hello")
    assert inner.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"]
    transport.write(b"more")  # not a head: straight through
    assert inner.writes[-1] == b"more"
    assert transport.get_extra_info("peername") == "info peername"


async def test_a_head_with_nothing_after_it_goes_out_at_the_end_of_the_loop_pass() -> None:
    inner = FakeTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]


async def test_closing_writes_a_held_head_first() -> None:
    inner = FakeTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    transport.close()
    assert inner.writes == [b"HTTP/1.1 204 No Content\r\n\r\n"]
    assert inner.closed


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    path = scope["path"]
    if path == "/stream":  # chunks with pauses between them: the head must not wait for them
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for index in range(3):
            await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": f"chunk {index};".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif path == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    else:
        body = b"x" * int(path.strip("/") or "0")
        headers = [(b"content-type", b"application/octet-stream"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=CoalescingHttpToolsProtocol, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    for _ in range(500):
        if instance.started:
            break
        threading.Event().wait(0.01)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(10)


def test_responses_of_every_kind_arrive_whole_over_one_connection(server: str) -> None:
    with httpx.Client(base_url=server, timeout=10) as client:
        for size in (0, 10, 70_000, 3):
            response = client.post(f"/{size}", content=b"y" * 20_000)
            assert response.status_code == 200
            assert response.content == b"x" * size
        streamed = client.get("/stream")
        assert streamed.text == "chunk 0;chunk 1;chunk 2;"
        assert client.get("/empty").status_code == 204
        head = client.head("/10")
        assert head.status_code == 200
        assert head.headers["content-length"] == "10"
        assert client.post("/5", content=b"z", headers={"Expect": "100-continue"}).content == b"xxxxx"
