"""A worker's side of the repository state: how its registry follows the coordinator's decisions.

With one worker (no supervisor) the coordinator runs in the same process (``start_in_process``) and
talks to the registry directly through a ``LocalMember``. With several, ``follower`` answers the
coordinator's requests arriving over the supervisor's channel, and ``RemoteControl`` sends the
repository API's calls there. Either way the registry sees the same ``prepare`` / ``commit`` calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from service.errors import InvalidRequest
from service.ops.channel import Channel, Handler, connect
from service.ops.supervisor import WorkerContext
from service.serving.coordinator import Coordinator
from service.serving.plan import Index, PrepareReport, Served, VersionPlan, index_from_json, served_from_json
from service.serving.registry import ModelRegistry
from service.serving.snapshots import SnapshotStore
from service.settings import Settings

log = logging.getLogger(__name__)


class LocalMember:
    """The registry of this very process, as the in-process coordinator's one member."""

    label = ""
    replaceable = False

    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry

    async def set_index(self, index: Index) -> None:
        self._registry.set_index(index)

    async def prepare(self, plans: list[VersionPlan]) -> PrepareReport:
        return await self._registry.prepare(plans)

    async def commit(self, served: Served, index: Index, load_failures: list[str]) -> None:
        await self._registry.commit(served, index, load_failures)

    async def evict(self, reason: str) -> None:
        log.error("this process can no longer follow the repository state: %s", reason)


@contextlib.asynccontextmanager
async def start_in_process(registry: ModelRegistry, settings: Settings, run_dir: Path) -> AsyncIterator[Coordinator]:
    """One worker: decide here, load the repository into ``registry``, poll the folder if configured."""
    coordinator = Coordinator(settings, SnapshotStore(run_dir / "snapshots"))
    registry.control = coordinator
    await coordinator.join(LocalMember(registry))
    poller = None
    if settings.poll_interval_s > 0:
        poller = asyncio.get_running_loop().create_task(coordinator.poll_forever(settings.poll_interval_s))
    try:
        yield coordinator
    finally:
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller


@contextlib.asynccontextmanager
async def follow_supervisor(
    registry: ModelRegistry, context: WorkerContext, on_pool: Callable[[dict[str, Any]], None]
) -> AsyncIterator[None]:
    """One of several workers: link to the supervisor, and return once this worker serves the decided
    state. ``on_pool`` hears the supervisor's reports on the worker pool. Losing the link (the
    supervisor died, or turned this worker away) stops this worker gracefully."""
    channel = await connect(context.socket, {"peer": context.label, "slot": context.slot}, "the supervisor")
    answer = follower(registry)

    async def handle(op: str, body: Any) -> Any:
        if op == "workers":
            on_pool(body)
            return None
        return await answer(op, body)

    channel.start(handle)
    control = RemoteControl(channel)
    registry.control = control
    try:
        await control.join()
    except BaseException:
        await channel.aclose()
        raise
    watcher = asyncio.get_running_loop().create_task(_stop_when_lost(channel))
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await channel.aclose()


async def _stop_when_lost(channel: Channel) -> None:
    await channel.wait_closed()
    log.error("lost the control channel to the supervisor; stopping this worker")
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn drains and stops, as on any SIGTERM


class RemoteControl:
    """The repository API of a worker: every change goes to the coordinator in the supervisor."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    async def load(self, name: str) -> None:
        await self._channel.request("load", name)

    async def unload(self, name: str) -> None:
        await self._channel.request("unload", name)

    async def poll(self) -> None:
        await self._channel.request("poll")

    async def join(self) -> None:
        """Returns once this worker serves the decided state (raises if it cannot load it)."""
        await self._channel.request("join")


def follower(registry: ModelRegistry) -> Handler:
    """Answers the coordinator's requests with this worker's registry."""

    async def handle(op: str, body: Any) -> Any:
        if op == "index":
            registry.set_index(index_from_json(body))
            return None
        if op == "prepare":
            return (await registry.prepare([VersionPlan.from_json(item) for item in body])).as_json()
        if op == "commit":
            await registry.commit(
                served_from_json(body["served"]), index_from_json(body["index"]), list(body["load_failures"])
            )
            return None
        raise InvalidRequest(f"unknown control operation {op!r}")

    return handle
