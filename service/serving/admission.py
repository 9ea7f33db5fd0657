"""A bounded gate for versions that run each request on its own (no dynamic batcher).

At most ``concurrency`` runs at once and at most ``max_waiting`` more wait for a turn; the next one
is refused with 503 at once, and a request that waited past its deadline gets 504 without running.
This bounds memory under a flood the way the batcher's queue does for batched models.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from service.errors import Overloaded, RequestTimeout


class AdmissionGate:
    def __init__(self, label: str, concurrency: int, max_waiting: int, timeout_s: float) -> None:
        self._label = label
        self._slots = asyncio.Semaphore(concurrency)
        self._max_waiting = max_waiting
        self._timeout_s = timeout_s
        self._waiting = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots.locked():
            if self._waiting >= self._max_waiting:
                raise Overloaded(f"{self._label}: queue is full ({self._max_waiting} waiting requests)")
            self._waiting += 1
            try:
                await asyncio.wait_for(self._slots.acquire(), self._timeout_s)
            except TimeoutError:
                raise RequestTimeout(f"{self._label}: request waited longer than {self._timeout_s} s") from None
            finally:
                self._waiting -= 1
        else:
            await self._slots.acquire()
        try:
            yield
        finally:
            self._slots.release()
