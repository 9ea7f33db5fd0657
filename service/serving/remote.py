"""The supervisor's side of the repository state: ``SupervisedControl`` runs the coordinator (and the
folder poller) for the whole server and turns each worker's channel into a ``RemoteMember``. The
workers' side is ``serving.follower``. Only control calls cross: inference never leaves its worker.

Operations on the channel (worker -> supervisor): ``join``, ``load``, ``unload``, ``poll``;
(supervisor -> worker): ``index``, ``prepare``, ``commit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from service.errors import InvalidRequest
from service.ops.channel import Channel, Handler
from service.serving.coordinator import Coordinator
from service.serving.plan import Index, PrepareReport, Served, VersionPlan, index_to_json, served_to_json
from service.serving.snapshots import SnapshotStore
from service.settings import Settings

log = logging.getLogger(__name__)


class RemoteMember:
    """A worker process, as the coordinator in the supervisor reaches it."""

    replaceable = True

    def __init__(self, channel: Channel) -> None:
        self.label = channel.peer
        self._channel = channel

    async def set_index(self, index: Index) -> None:
        await self._channel.request("index", index_to_json(index))

    async def prepare(self, plans: list[VersionPlan]) -> PrepareReport:
        report = await self._channel.request("prepare", [plan.as_json() for plan in plans])
        return PrepareReport.from_json(report)

    async def commit(self, served: Served, index: Index, load_failures: list[str]) -> None:
        body = {"served": served_to_json(served), "index": index_to_json(index), "load_failures": load_failures}
        await self._channel.request("commit", body)

    async def evict(self, reason: str) -> None:
        log.error("%s can no longer follow the repository state (%s); closing its channel", self.label, reason)
        await self._channel.aclose()  # the worker stops on it, and the supervisor starts another


class SupervisedControl:
    """The supervisor's control plane: one coordinator for every worker, and the poller."""

    def __init__(self, settings: Settings, workers: int, run_dir: Path) -> None:
        self._settings = settings
        self.coordinator = Coordinator(settings, SnapshotStore(run_dir / "snapshots"), expected_members=workers)
        self._members: dict[Channel, RemoteMember] = {}
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._settings.poll_interval_s > 0:
            polling = self.coordinator.poll_forever(self._settings.poll_interval_s)
            self._poller = asyncio.get_running_loop().create_task(polling)

    def attach(self, channel: Channel) -> Handler:
        member = RemoteMember(channel)
        self._members[channel] = member
        coordinator = self.coordinator

        async def handle(op: str, body: Any) -> Any:
            if op == "join":
                await coordinator.join(member)
            elif op == "load":
                await coordinator.load(str(body))
            elif op == "unload":
                await coordinator.unload(str(body))
            elif op == "poll":
                await coordinator.poll()
            else:
                raise InvalidRequest(f"unknown control operation {op!r}")
            return None

        return handle

    def detach(self, channel: Channel) -> None:
        member = self._members.pop(channel, None)
        if member is not None:
            self.coordinator.leave(member)

    async def aclose(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
