"""Registry semantics without HTTP: atomic swaps, old versions finish their requests, version policies."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from service.errors import ModelNotFound, Overloaded, RequestTimeout
from service.ops.run_dir import private_run_dir
from service.serving.admission import AdmissionGate
from service.serving.follower import start_in_process
from service.serving.registry import ModelRegistry
from service.serving.triton_stats import StatsBook
from service.settings import Settings
from tests.serving.onnx_models import WIDTH, write_config, write_version

FEEDS = {"x": np.zeros((1, WIDTH), dtype=np.float32)}


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[ModelRegistry]:
    """A one-worker server without HTTP: its registry, fed by the coordinator in the same process."""
    with private_run_dir(settings.state_dir) as run_dir:
        stats = StatsBook(run_dir / "stats", "test")
        registry = ModelRegistry(settings, stats)
        try:
            async with start_in_process(registry, settings, run_dir):
                yield registry
        finally:
            await registry.aclose()
            stats.close()


def _states(registry: ModelRegistry, name: str = "m") -> dict[int | None, str]:
    return {entry.version: entry.state.value for entry in registry.index() if entry.name == name}


@pytest.mark.parametrize("batch", [1, 8], ids=["unbatched", "batched"])
@pytest.mark.parametrize("entered", ["async with", "with"])
async def test_requests_holding_the_old_version_finish_on_it(tmp_path: Path, batch: int, entered: str) -> None:
    write_version(tmp_path, "m", 1)
    async with serving(Settings(repository=tmp_path, max_batch_size=batch)) as registry:
        async with contextlib.AsyncExitStack() as held:  # the lease is held until this block ends
            lease = registry.lease("m")
            old = await held.enter_async_context(lease) if entered == "async with" else held.enter_context(lease)
            write_version(tmp_path, "m", 2)
            shutil.rmtree(tmp_path / "m" / "1")
            poll = asyncio.create_task(registry.poll())
            while registry.get("m").version != 2:
                await asyncio.sleep(0.01)
            # New requests already get version 2; this one still holds version 1, which waits for it.
            assert _states(registry)[1] == "UNLOADING"
            outcome = await old.infer(FEEDS, 1)
            assert outcome.outputs["y"].tolist() == [[1.0] * WIDTH]
            assert not poll.done()
        await asyncio.wait_for(poll, 30)
        assert _states(registry) == {2: "READY"}
        async with registry.lease("m") as new:
            assert (await new.infer(FEEDS, 1)).outputs["y"].tolist() == [[2.0] * WIDTH]


@pytest.mark.parametrize(
    ("policy", "served"),
    [
        ({"policy": "all"}, [1, 2, 3]),
        ({"policy": "latest", "latest": 2}, [2, 3]),
        ({"policy": "specific", "versions": [1, 3]}, [1, 3]),
    ],
)
async def test_version_policy_selects_what_is_served(
    tmp_path: Path, policy: dict[str, object], served: list[int]
) -> None:
    for version in (1, 2, 3):
        write_version(tmp_path, "m", version)
    write_config(tmp_path, "m", {"version_policy": policy})
    async with serving(Settings(repository=tmp_path)) as registry:
        assert registry.versions("m") == served
        assert registry.get("m").version == max(served)
        for version in {1, 2, 3} - set(served):
            with pytest.raises(ModelNotFound):
                registry.get("m", version)


async def test_a_policy_change_takes_effect_on_poll(tmp_path: Path) -> None:
    for version in (1, 2):
        write_version(tmp_path, "m", version)
    async with serving(Settings(repository=tmp_path)) as registry:
        assert registry.versions("m") == [1, 2]
        write_config(tmp_path, "m", {"version_policy": {"policy": "specific", "versions": [1]}})
        await registry.poll()
        assert registry.versions("m") == [1]
        assert registry.get("m").version == 1


async def test_an_invalid_config_keeps_what_is_serving(tmp_path: Path) -> None:
    write_version(tmp_path, "m", 1)
    async with serving(Settings(repository=tmp_path)) as registry:
        write_config(tmp_path, "m", {"version_policy": {"policy": "sometimes"}})
        await registry.poll()
        assert registry.versions("m") == [1]
        assert "config.json" in _states_reason(registry)


def _states_reason(registry: ModelRegistry) -> str:
    return next(entry.reason for entry in registry.index() if entry.name == "m" and entry.version is None)


async def test_a_bad_file_is_not_retried_until_it_changes(tmp_path: Path) -> None:
    write_version(tmp_path, "m", 1)
    (tmp_path / "m" / "2").mkdir()
    (tmp_path / "m" / "2" / "model.onnx").write_bytes(b"\xff" * 16)
    async with serving(Settings(repository=tmp_path)) as registry:
        first = next(e for e in registry.index() if e.version == 2)
        await registry.poll()
        assert next(e for e in registry.index() if e.version == 2) is first  # untouched, not reloaded
        write_version(tmp_path, "m", 2)
        await registry.poll()
        assert registry.get("m").version == 2


async def test_admission_gate_bounds_waiting_and_times_out() -> None:
    gate = AdmissionGate("m", concurrency=1, max_waiting=1, timeout_s=0.05)
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.slot():
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0)
    assert gate.waiting == 1
    with pytest.raises(Overloaded) as refused:
        async with gate.slot():
            pass
    assert refused.value.headers()["Retry-After"].isdigit()
    with pytest.raises(RequestTimeout):
        await waiter
    release.set()
    await holder
    async with gate.slot():  # free again
        assert gate.waiting == 0


async def test_a_vanished_repository_unloads_nothing(tmp_path: Path) -> None:
    root = tmp_path / "repository"
    write_version(root, "m", 1)
    async with serving(Settings(repository=root)) as registry:
        root.rename(tmp_path / "elsewhere")
        await registry.poll()
        assert registry.versions("m") == [1]
        (tmp_path / "elsewhere").rename(root)
        shutil.rmtree(root / "m")
        await registry.poll()
        assert registry.names() == []
