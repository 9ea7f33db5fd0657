"""After a response the event loop polls for a while instead of sleeping, then sleeps again; the
window is renewed by every response, and a server polls only when configured to."""

from __future__ import annotations

import asyncio
import selectors
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.ops.idle_poll import IdlePoll
from service.settings import Settings
from tests.serving.onnx_models import infer_body, write_version


class CountingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Records the timeout of every wait for I/O the event loop makes (0: a poll, else a sleep)."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []

    def select(self, timeout: float | None = None) -> list[Any]:
        self.timeouts.append(timeout)
        return super().select(timeout)  # type: ignore[no-any-return]


def run_with_selector(body: Any) -> list[float | None]:
    selector = CountingSelector()
    loop = asyncio.SelectorEventLoop(selector)
    try:
        loop.run_until_complete(body())
    finally:
        loop.close()
    return selector.timeouts


def test_the_loop_polls_during_the_window_and_sleeps_after_it() -> None:
    poll = IdlePoll(0.05)
    marks: dict[str, int] = {}

    async def body() -> None:
        loop = asyncio.get_running_loop()
        selector: Any = loop._selector  # type: ignore[attr-defined]
        poll.touch()
        assert poll.polling
        marks["start"] = len(selector.timeouts)
        await asyncio.sleep(0.02)  # inside the window: the loop must not sleep for it
        marks["inside"] = len(selector.timeouts)
        await asyncio.sleep(0.2)  # the window passes
        assert not poll.polling
        marks["after"] = len(selector.timeouts)
        await asyncio.sleep(0.1)  # idle: one sleep, no polls
        marks["idle"] = len(selector.timeouts)

    timeouts = run_with_selector(body)
    inside = timeouts[marks["start"] : marks["inside"]]
    assert len(inside) > 20
    assert all(t == 0 for t in inside)
    idle = timeouts[marks["after"] : marks["idle"]]
    # One sleep covers the idle time; the loop's own pass after a timer fires is the only poll.
    assert any(t is None or t > 0.05 for t in idle)
    assert idle.count(0) <= 2


def test_every_touch_renews_the_window() -> None:
    poll = IdlePoll(0.05)

    async def body() -> None:
        poll.touch()
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:  # responses every 10 ms, for four windows
            await asyncio.sleep(0.01)
            poll.touch()
            assert poll.polling
        await asyncio.sleep(0.15)
        assert not poll.polling

    run_with_selector(body)


def test_a_zero_window_never_polls() -> None:
    poll = IdlePoll(0.0)

    async def body() -> None:
        poll.touch()
        assert not poll.polling

    run_with_selector(body)


def test_the_server_never_polls_unless_configured() -> None:
    assert Settings().idle_poll_ms == 0.0


@pytest.mark.parametrize("path", ["/v2/models/m/infer", "/v2/health/live"])
def test_the_server_polls_after_each_response_only_when_configured(tmp_path: Path, path: str) -> None:
    repository = tmp_path / "repository"
    write_version(repository, "m", 1)
    polls = {}
    for window_ms in (0.0, 100.0):
        app = create_app(Settings(repository=repository, idle_poll_ms=window_ms))

        async def body(app: Any = app, window_ms: float = window_ms) -> None:
            selector: Any = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
            transport = httpx.ASGITransport(app=app)
            async with app.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                await asyncio.sleep(0.3)  # start-up's own work settles
                if path.endswith("/infer"):
                    response = await client.post(path, json=infer_body())
                else:
                    response = await client.get(path)
                assert response.status_code == 200
                before = len(selector.timeouts)
                await asyncio.sleep(0.05)
                polls[window_ms] = selector.timeouts[before:].count(0)

        run_with_selector(body)
    assert polls[0.0] <= 5
    assert polls[100.0] > 20
