"""Keep a worker's event loop polling for a short while after each response, instead of sleeping.

A closed-loop client (one that sends its next request when the answer arrives) finds the worker
asleep in ``epoll_wait`` unless the request comes back within the same event-loop pass. On a virtual
machine an idle vCPU halts, the host may run something else on its core, and the next request then
pays for the wake-up and for caches that no longer hold the model's weights. Polling for a while
after each answer keeps the core and its caches: measured on a 2-core VM with one connection, the
benchmark's small model answered at a median of 0.5-0.8 ms with a 1 ms window against 1.0-1.1 ms
without (the minimal server of ``bench/minimal.py``: 0.4 against 0.8 ms). onnxruntime's own thread
pools spin after work for the same reason.

The poll is bounded: a window after the latest response, renewed by every response. An idle worker
stops polling once the window has passed, and a busy one never polls (its loop always has work).
It is off by default (``Settings.idle_poll_ms``): while requests keep coming less than a window
apart, a worker's core stays busy, which spends a container's CPU quota and misleads autoscalers
that follow CPU use, for a gain only where waking up is slow.
"""

from __future__ import annotations

import asyncio
import time


class IdlePoll:
    """One per event loop (the request middleware owns it). ``touch`` after each response."""

    __slots__ = ("_loop", "_touched", "_until", "_window_ns")

    def __init__(self, window_s: float) -> None:
        self._window_ns = int(window_s * 1e9)
        self._touched = False
        self._until = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop polling now; None when it is not."""

    @property
    def polling(self) -> bool:
        return self._loop is not None

    def touch(self) -> None:
        """A response went out: poll until the window after it has passed. Called on the event loop."""
        # A flag, not a clock read: the poll reads the clock once per loop pass, however many
        # responses that pass sent.
        self._touched = True
        if self._loop is None and self._window_ns > 0:
            self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._poll)

    def _poll(self) -> None:
        """Runs once per loop pass while polling. A ready callback makes the loop check for I/O without
        blocking, so the loop keeps turning instead of sleeping."""
        loop = self._loop
        if loop is None:
            return
        now = time.monotonic_ns()
        if self._touched:
            self._touched = False
            self._until = now + self._window_ns
        if now < self._until:
            loop.call_soon(self._poll)
        else:
            self._loop = None
