"""Worker processes for ``weightserve serve --workers N``: one server, however many processes.

Sockets. uvicorn's supervisor shares one listening socket between its workers, and whichever worker
wakes first accepts every connection that is waiting: a client that opens 64 connections at once
often finds all of them on one worker while the others idle. Here each worker binds its own socket
with SO_REUSEPORT, and the kernel spreads new connections over the workers by address hash. A
worker listens only once its app has started, that is once it serves the current repository state.

Control. The supervisor runs the control plane (the repository's coordinator, named like the app
factory so that this package imports nothing above it) and every worker keeps one channel to it
over a private Unix socket (``ops.channel``): the workers send repository changes there and the
control plane walks all of them through each change. Inference never crosses a process boundary.

Restarts. A worker that dies after it has been ready once is replaced while the others keep
serving; the replacement joins the current state before it listens. A worker that keeps dying (again
within ``STABLE_S`` of its start) is restarted after a delay doubling from ``BACKOFF_S`` up to
``MAX_BACKOFF_S``, with an error line each time; every worker hears the pool's state (readiness
body, ``/metrics``). Only a worker that never became ready at startup counts as a configuration
error (a port taken, a setting that cannot work), which stops the server with status 1. SIGTERM /
SIGINT reach every worker as SIGTERM: each drains and stops, as a single uvicorn process does.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Protocol

from service.errors import ServiceError
from service.ops.channel import Channel, ChannelClosed, Handler, listen
from service.settings import Settings

log = logging.getLogger("service.ops.supervisor")

APP = "service.app:create_app"
SERVED = "service.app:served_models"
"""``(app) -> [{"name", "version", "providers"}]``: what a started worker serves, for the startup line."""
CONTROL = "service.serving.remote:SupervisedControl"
"""The control plane's factory: ``(settings, workers, run_dir) -> ControlPlane``."""

STABLE_S = 30.0
"""A worker that dies sooner than this after becoming ready (or before) is dying in a loop."""
BACKOFF_S = 1.0
UNLINKED_GRACE_S = 10.0
"""Beyond the drain timeout, how long a worker whose control channel closed may take to exit."""
MAX_BACKOFF_S = 30.0

_ENV_SOCKET = "WEIGHTSERVE_SUPERVISOR_SOCKET"
_ENV_RUN_DIR = "WEIGHTSERVE_SUPERVISOR_RUN_DIR"
_ENV_SLOT = "WEIGHTSERVE_SUPERVISOR_SLOT"


class ControlPlane(Protocol):
    """What the supervisor runs beside its workers (see ``service.serving.remote``)."""

    async def start(self) -> None: ...

    def attach(self, channel: Channel) -> Handler:
        """A worker connected: the handler for its requests."""
        ...

    def detach(self, channel: Channel) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """What a worker process learns from its supervisor (None for a server without one)."""

    slot: int
    socket: Path
    run_dir: Path

    @property
    def label(self) -> str:
        return f"worker {self.slot} (pid {os.getpid()})"


def worker_context() -> WorkerContext | None:
    socket_path = os.environ.get(_ENV_SOCKET)
    if not socket_path:
        return None
    return WorkerContext(int(os.environ.get(_ENV_SLOT, "0")), Path(socket_path), Path(os.environ[_ENV_RUN_DIR]))


@dataclass(slots=True)
class PoolStatus:
    """The worker pool as the supervisor last reported it; one worker and no supervisor by default."""

    configured: int = 1
    ready: int = 1
    restarts: int = 0
    crash_looping: list[dict[str, Any]] = field(default_factory=list)
    """Workers dying in a loop: slot, failures in a row, seconds until the next start."""

    def as_json(self) -> dict[str, Any]:
        return {
            "configured": self.configured,
            "ready": self.ready,
            "restarts": self.restarts,
            "crash_looping": self.crash_looping,
        }

    def update(self, data: dict[str, Any]) -> None:
        self.configured = int(data["configured"])
        self.ready = int(data["ready"])
        self.restarts = int(data["restarts"])
        self.crash_looping = list(data["crash_looping"])


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound with SO_REUSEPORT, so every worker can bind the same address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def listen_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def log_serving(url: str, workers: int, repository: str, models: Sequence[dict[str, Any]]) -> None:
    """The startup line, written once the whole server serves: where, how many workers, what (with the
    execution providers each version runs on)."""
    grouped: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for entry in models:
        grouped.setdefault((str(entry["name"]), tuple(entry["providers"])), []).append(str(entry["version"]))
    served = "; ".join(
        f"{name} v{', v'.join(versions)} on {', '.join(providers)}" for (name, providers), versions in grouped.items()
    )
    logging.getLogger("service.serve").info(
        "serving on %s with %d worker%s, repository %s: %s",
        url, workers, "" if workers == 1 else "s", repository, served or "no models",
        extra={"url": url, "workers": workers, "repository": repository, "models": list(models)},
    )  # fmt: skip


def run_server(server: Any, sockets: list[socket.socket] | None, on_started: Callable[[], None]) -> bool:
    """Run a uvicorn server until it stops, calling ``on_started`` once it listens (its app has started,
    models loaded); whether it ever started."""
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        return runner.run(_serve_and_report(server, sockets, on_started))


def serve_one(settings: Settings, options: dict[str, Any]) -> int:
    """One worker, no supervisor: this process serves, and writes the startup line once it listens; the
    exit status for ``weightserve serve``."""
    import uvicorn

    app = _load(APP)()
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, **options))

    def started() -> None:
        port = next((s.getsockname()[1] for srv in server.servers for s in srv.sockets), settings.port)
        repository = str(settings.repository.resolve())
        log_serving(listen_url(settings.host, port), 1, repository, _load(SERVED)(app))

    # As uvicorn.run: Ctrl-C ends quietly, and a server that never started (a port taken, an app that
    # failed) exits with 3.
    try:
        return 0 if run_server(server, None, started) else 3
    except KeyboardInterrupt:
        return 0


def _worker(
    host: str, port: int, options: dict[str, Any], slot: int, link: str, run_dir: str, ready: Connection
) -> None:
    os.environ.update({_ENV_SLOT: str(slot), _ENV_SOCKET: link, _ENV_RUN_DIR: run_dir})
    import uvicorn

    from service.ops.shutdown import exit_zero_after_graceful_stop

    exit_zero_after_graceful_stop()
    sock = listening_socket(host, port)  # bound, not listening: no connection waits for a worker still starting
    app = _load(APP)()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **options))

    def report() -> None:
        ready.send_bytes(json.dumps({"models": _load(SERVED)(app)}).encode())
        ready.close()

    try:
        run_server(server, [sock], report)
    finally:
        ready.close()


async def _serve_and_report(server: Any, sockets: list[socket.socket] | None, on_started: Callable[[], None]) -> bool:
    serving = asyncio.get_running_loop().create_task(server.serve(sockets=sockets))
    while not server.started and not serving.done():
        await asyncio.wait([serving], timeout=0.05)
    started = bool(server.started)
    if started:
        on_started()
    await serving
    return started


@dataclass(slots=True)
class _Slot:
    index: int
    process: BaseProcess | None = None
    ready: Connection | None = None
    """Our end of the pipe the worker writes to once it listens (EOF if it dies first)."""
    started_at: float = 0.0
    ready_at: float | None = None
    established: bool = False
    """A worker of this slot has been ready once: from now on its deaths are restarts, not a stop."""
    failures: int = 0
    """Deaths in a row, each within STABLE_S of becoming ready (or before)."""
    restarts: int = 0
    next_start_wall: float = 0.0


class Supervisor:
    def __init__(
        self,
        workers: int,
        host: str,
        port: int,
        options: dict[str, Any],
        settings: Settings,
        run_dir: Path,
        control: str = CONTROL,
    ) -> None:
        if port == 0:  # every worker must bind the same port: choose it once
            with listening_socket(host, 0) as probe:
                port = probe.getsockname()[1]
        self._args = (host, port, options)
        self._settings = settings
        self._run_dir = run_dir
        self._socket = run_dir / "control.sock"
        self._control_name = control
        self._context = multiprocessing.get_context("spawn")
        self._slots = [_Slot(index) for index in range(workers)]
        self._channels: set[Channel] = set()
        self._stop = asyncio.Event()
        self._control: ControlPlane | None = None
        self._notices: set[asyncio.Task[None]] = set()
        self._status = 0
        self._announced = False

    def run(self) -> int:
        """Run the workers until a stop signal; the exit status for ``weightserve serve``."""
        return asyncio.run(self._main())

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        factory: Callable[[Settings, int, Path], ControlPlane] = _load(self._control_name)
        self._control = factory(self._settings, len(self._slots), self._run_dir)
        server = await listen(self._socket, self._on_channel)
        try:
            await self._control.start()
            for slot in self._slots:
                self._start(slot)
            # Everything else happens in callbacks: a worker's pipe (ready), its sentinel (exit).
            await self._stop.wait()
            return self._status
        finally:
            await self._stop_all()
            server.close()
            await self._control.aclose()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _start(self, slot: _Slot) -> None:
        if self._stop.is_set():
            return
        loop = asyncio.get_running_loop()
        host, port, options = self._args
        ours, theirs = self._context.Pipe(duplex=False)
        args = (host, port, options, slot.index, str(self._socket), str(self._run_dir), theirs)
        process = self._context.Process(target=_worker, args=args, name=f"weightserve worker {slot.index}")
        process.start()
        theirs.close()  # the worker holds the only writing end: its exit is an end of file here
        slot.process, slot.ready, slot.started_at, slot.ready_at = process, ours, time.monotonic(), None
        loop.add_reader(ours.fileno(), self._on_ready, slot, process)
        loop.add_reader(process.sentinel, self._on_exit, slot, process)
        log.info("worker %d started (pid %s)", slot.index, process.pid)

    def _on_ready(self, slot: _Slot, process: BaseProcess) -> None:
        assert slot.ready is not None
        loop = asyncio.get_running_loop()
        loop.remove_reader(slot.ready.fileno())
        try:
            report = json.loads(slot.ready.recv_bytes())
        except (EOFError, OSError):
            return  # it died before it listened: its sentinel says so
        finally:
            slot.ready.close()
        slot.ready_at = time.monotonic()
        slot.established = True
        log.info("worker %d (pid %s) is ready", slot.index, process.pid)
        if not self._announced and all(s.established for s in self._slots):
            # Once, when every worker serves for the first time (they all serve the same decided state).
            self._announced = True
            host, port, _ = self._args
            repository = str(self._settings.repository.resolve())
            log_serving(listen_url(host, port), len(self._slots), repository, report["models"])
        if slot.failures:
            loop.call_later(STABLE_S, self._stayed_up, slot, process)
        self._broadcast()

    def _stayed_up(self, slot: _Slot, process: BaseProcess) -> None:
        if slot.process is process and process.exitcode is None:
            slot.failures = 0  # out of the loop
            self._broadcast()

    def _on_exit(self, slot: _Slot, process: BaseProcess) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(process.sentinel)
        process.join()  # reaped: it has ended
        if slot.ready is not None and not slot.ready.closed:
            loop.remove_reader(slot.ready.fileno())
            slot.ready.close()
        slot.process, slot.ready = None, None
        _forget_metrics(process.pid)
        if self._stop.is_set():
            return
        code = process.exitcode
        if not slot.established:
            log.error(
                "worker %d (pid %s) exited with %s before it was ever ready: a configuration problem; stopping",
                slot.index, process.pid, code,
            )  # fmt: skip
            self._status = 1
            self._stop.set()
            return
        now = time.monotonic()
        if slot.ready_at is not None and now - slot.ready_at >= STABLE_S:
            slot.failures = 0
        slot.failures += 1
        slot.restarts += 1
        delay = 0.0 if slot.failures == 1 else min(MAX_BACKOFF_S, BACKOFF_S * 2 ** (slot.failures - 2))
        slot.next_start_wall = time.time() + delay
        if slot.failures == 1:
            log.error("worker %d (pid %s) exited with %s; starting a new one", slot.index, process.pid, code)
        else:
            log.error(
                "worker %d (pid %s) exited with %s, %d times in a row within %.0f s of starting: "
                "crash loop, next start in %.0f s",
                slot.index, process.pid, code, slot.failures, STABLE_S, delay,
            )  # fmt: skip
        loop.call_later(delay, self._start, slot)
        self._broadcast()

    def status(self) -> PoolStatus:
        alive = [s for s in self._slots if s.process is not None and s.ready_at is not None]
        looping = [
            {
                "slot": s.index,
                "failures": s.failures,
                "next_start_in_s": round(max(0.0, s.next_start_wall - time.time()), 1),
            }
            for s in self._slots
            if s.failures >= 2
        ]
        return PoolStatus(len(self._slots), len(alive), sum(s.restarts for s in self._slots), looping)

    def _broadcast(self) -> None:
        status = self.status().as_json()
        for channel in list(self._channels):
            self._notify(channel, status)

    def _notify(self, channel: Channel, status: dict[str, Any]) -> None:
        async def send() -> None:
            with contextlib.suppress(ChannelClosed, ServiceError):
                await channel.request("workers", status)

        task = asyncio.get_running_loop().create_task(send())
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def _on_channel(self, channel: Channel) -> None:
        assert self._control is not None
        process = self._process_of(channel)
        channel.start(self._control.attach(channel))
        self._channels.add(channel)
        self._notify(channel, self.status().as_json())
        try:
            await channel.wait_closed()
        finally:
            self._channels.discard(channel)
            self._control.detach(channel)
        if process is not None and not self._stop.is_set():
            # A worker stops by itself once its channel is gone (after draining); one that was turned
            # away because it stopped answering may not be able to: end it, and its slot starts another.
            grace = self._settings.drain_timeout_s + UNLINKED_GRACE_S
            asyncio.get_running_loop().call_later(grace, self._kill_if_alive, process, grace)

    def _process_of(self, channel: Channel) -> BaseProcess | None:
        slot = channel.hello.get("slot")
        if isinstance(slot, int) and 0 <= slot < len(self._slots):
            return self._slots[slot].process
        return None

    def _kill_if_alive(self, process: BaseProcess, grace: float) -> None:
        if self._stop.is_set() or not process.is_alive():
            return
        log.error("worker pid %s still runs %.0f s after its control channel closed; killing it", process.pid, grace)
        process.kill()

    async def _stop_all(self) -> None:
        loop = asyncio.get_running_loop()
        running = []
        for slot in self._slots:
            if slot.process is not None:
                loop.remove_reader(slot.process.sentinel)  # joined here from now on
                running.append(slot.process)
            if slot.ready is not None and not slot.ready.closed:
                loop.remove_reader(slot.ready.fileno())
                slot.ready.close()
        for process in running:
            if process.is_alive():
                process.terminate()  # SIGTERM: the worker drains and stops
        timeout = float(self._args[2].get("timeout_graceful_shutdown") or 30) + 15.0
        deadline = time.monotonic() + timeout
        for process in running:
            await asyncio.to_thread(process.join, max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker %s did not stop in %.0f s; killing it", process.pid, timeout)
                process.kill()
                await asyncio.to_thread(process.join)
            _forget_metrics(process.pid)


def _load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _forget_metrics(pid: int | None) -> None:
    """A dead worker's live gauges (requests in flight) must not count on in ``/metrics``."""
    if pid is None or not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
