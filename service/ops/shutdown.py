"""Readiness turns false the moment the process is told to stop.

uvicorn installs its own SIGTERM / SIGINT handlers before the app starts, then on a signal stops
accepting connections and waits for in-flight requests before it runs the lifespan's shutdown. The
app only learns of the shutdown at that late point, so while the app runs we chain a callback in
front of uvicorn's handler; uvicorn restores its predecessors when it exits.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def on_stop_signal(callback: Callable[[], None]) -> Iterator[None]:
    """Call ``callback`` (it must be signal-safe: set a flag) before the current stop handlers run."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may install handlers (e.g. an in-process test client)
        return
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}

    def chained(sig: int, frame: FrameType | None) -> None:
        callback()
        handler = previous[signal.Signals(sig)]
        if callable(handler):
            handler(sig, frame)
        elif handler == signal.SIG_DFL:
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)

    for sig in _SIGNALS:
        signal.signal(sig, chained)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            # Put back what we replaced, unless someone else has replaced us meanwhile.
            if signal.getsignal(sig) is chained and handler is not None:
                signal.signal(sig, handler)


def exit_zero_after_graceful_stop() -> None:
    """Make a SIGTERM-triggered graceful stop end the process with status 0.

    After draining, uvicorn re-raises the signal it caught against the handler that was installed
    before it started; with the default one the process would die with 128 + SIGTERM even though it
    shut down cleanly. A handler that does nothing lets ``serve`` return normally instead.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _already_stopped)


def _already_stopped(sig: int, frame: FrameType | None) -> None:
    """The server has drained and stopped by the time uvicorn re-raises; nothing is left to do."""
