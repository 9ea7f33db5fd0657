"""The supervisor's control channel: requests both ways at once, errors of the tree kept, a closed end."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from service.errors import ModelNotFound, Overloaded, ServiceError
from service.ops.channel import Channel, ChannelClosed, connect, listen


async def _pair(path: Path, server_handler: Any, client_handler: Any) -> tuple[Channel, Channel, asyncio.Server]:
    accepted: asyncio.Queue[Channel] = asyncio.Queue()

    async def on_channel(channel: Channel) -> None:
        channel.start(server_handler)
        await accepted.put(channel)
        await channel.wait_closed()

    server = await listen(path, on_channel)
    client = await connect(path, {"peer": "worker 7 (pid 1)", "slot": 7}, "the supervisor")
    client.start(client_handler)
    return client, await accepted.get(), server


async def test_both_ends_ask_at_once_and_errors_keep_their_class(tmp_path: Path) -> None:
    async def supervisor(op: str, body: Any) -> Any:
        if op == "load":
            # While the worker waits for this answer, ask it something back on the same channel.
            return {"prepared": await peer[0].request("prepare", body)}
        if op == "missing":
            raise ModelNotFound(body, 3)
        if op == "busy":
            raise Overloaded("queue full", retry_after_s=7)
        raise RuntimeError("a bug")

    async def worker(op: str, body: Any) -> Any:
        return f"{op} {body} done"

    peer: list[Channel] = []
    client, served, server = await _pair(tmp_path / "c.sock", supervisor, worker)
    peer.append(served)
    try:
        assert served.peer == "worker 7 (pid 1)"
        assert served.hello["slot"] == 7
        assert await client.request("load", "m") == {"prepared": "prepare m done"}
        with pytest.raises(ModelNotFound) as missing:
            await client.request("missing", "m")
        assert missing.value.message == "Request for unknown model: 'm' version 3 is not found"
        assert missing.value.status_code == 404
        assert missing.value.version == 3
        with pytest.raises(Overloaded) as busy:
            await client.request("busy")
        assert busy.value.headers() == {"Retry-After": "7"}
        with pytest.raises(ServiceError, match="RuntimeError: a bug"):
            await client.request("anything")
    finally:
        await client.aclose()
        server.close()


async def test_a_closed_end_fails_what_waits_for_it(tmp_path: Path) -> None:
    never = asyncio.Event()

    async def stuck(op: str, body: Any) -> Any:
        await never.wait()

    client, served, server = await _pair(tmp_path / "c.sock", stuck, stuck)
    try:
        waiting = asyncio.create_task(client.request("load", "m"))
        await asyncio.sleep(0.05)
        await served.aclose()  # e.g. the supervisor turned the worker away
        with pytest.raises(ChannelClosed):
            await waiting
        await asyncio.wait_for(client.wait_closed(), 5)
        with pytest.raises(ChannelClosed):
            await client.request("load", "m")
    finally:
        server.close()
