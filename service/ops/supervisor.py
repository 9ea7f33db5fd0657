"""Worker processes for ``weightserve serve --workers N``, each with its own listening socket.

uvicorn's supervisor shares one listening socket between its workers, and whichever worker wakes
first accepts every connection that is waiting: a client that opens 64 connections at once often
finds all of them on one worker while the others idle. Here each worker binds its own socket with
SO_REUSEPORT, and the kernel spreads new connections over the workers by address hash.

The parent only supervises: it forwards SIGTERM / SIGINT as SIGTERM (each worker then drains and
stops gracefully, as a single uvicorn process does) and replaces a worker that dies on its own.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
import time
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

log = logging.getLogger("service.ops.supervisor")

APP = "service.app:create_app"
_STARTUP_GRACE_S = 60.0
"""A worker that dies this soon after its start is a configuration problem, not a crash to repeat."""


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound with SO_REUSEPORT, so every worker can bind the same address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker(host: str, port: int, options: dict[str, Any]) -> None:
    import uvicorn

    from service.ops.shutdown import exit_zero_after_graceful_stop

    exit_zero_after_graceful_stop()
    sock = listening_socket(host, port)
    config = uvicorn.Config(APP, factory=True, host=host, port=port, **options)
    uvicorn.Server(config).run(sockets=[sock])


class Supervisor:
    def __init__(self, workers: int, host: str, port: int, options: dict[str, Any]) -> None:
        if port == 0:  # every worker must bind the same port: choose it once
            with listening_socket(host, 0) as probe:
                port = probe.getsockname()[1]
        self._count = workers
        self._args = (host, port, options)
        self._context = multiprocessing.get_context("spawn")
        self._processes: list[tuple[BaseProcess, float]] = []
        self._stop = threading.Event()

    def run(self) -> int:
        """Run the workers until a stop signal; the exit status for ``weightserve serve``."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._processes = [self._start() for _ in range(self._count)]
            status = self._watch()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return status

    def _start(self) -> tuple[BaseProcess, float]:
        process = self._context.Process(target=_worker, args=self._args, name="weightserve worker")
        process.start()
        return process, time.monotonic()

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self._stop.set()

    def _watch(self) -> int:
        while not self._stop.wait(0.5):
            for index, (process, started) in enumerate(self._processes):
                if process.is_alive() or self._stop.is_set():
                    continue
                if time.monotonic() - started < _STARTUP_GRACE_S:
                    log.error("worker %s exited with %s while starting; stopping", process.pid, process.exitcode)
                    return 1
                log.error("worker %s exited with %s; starting a new one", process.pid, process.exitcode)
                self._processes[index] = self._start()
        return 0

    def _stop_all(self) -> None:
        for process, _ in self._processes:
            if process.is_alive() and process.pid is not None:
                process.terminate()  # SIGTERM: the worker drains and stops
        timeout = float(self._args[2].get("timeout_graceful_shutdown") or 30) + 15.0
        deadline = time.monotonic() + timeout
        for process, _ in self._processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker %s did not stop in %.0f s; killing it", process.pid, timeout)
                process.kill()
                process.join()
