"""The coordinator walks every member through prepare / commit, with real registries that really load.

Two registries in one process stand for two workers; they differ in one setting (warm-up), so a
version whose warm-up run fails loads in one and fails in the other, for real.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from service.errors import InvalidRequest, ModelLoadError
from service.serving.coordinator import Coordinator
from service.serving.follower import LocalMember
from service.serving.registry import ModelRegistry
from service.serving.snapshots import SnapshotStore
from service.serving.triton_stats import StatsBook
from service.settings import Settings
from tests.serving.onnx_models import WIDTH, write_config, write_version

FEEDS = {"x": np.zeros((3, WIDTH), dtype=np.float32)}


def _fails_its_warm_up(directory: Path) -> None:
    """``x`` [N, 4] reshaped to [3, -1]: fine for N = 3, impossible for the warm-up's N = 1."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [3, -1])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, None])],
        [shape],
    )
    directory.mkdir(parents=True)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.save(model, os.fspath(directory / "model.onnx"))


class Workers:
    """Registries standing for worker processes, each with its own statistics file folder."""

    def __init__(self, root: Path, work: Path) -> None:
        self.root = root
        self.work = work
        self.registries: list[ModelRegistry] = []

    def member(self, label: str, **settings: object) -> tuple[ModelRegistry, LocalMember]:
        registry = ModelRegistry(
            Settings(repository=self.root, **settings),  # type: ignore[arg-type]
            StatsBook(self.work / "stats", label.replace(" ", "-")),
        )
        self.registries.append(registry)
        member = LocalMember(registry)
        member.label = label  # type: ignore[misc]
        return registry, member

    async def aclose(self) -> None:
        for registry in self.registries:
            await registry.aclose()


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[Workers]:
    root = tmp_path / "repository"
    write_version(root, "m", 1)
    pool = Workers(root, tmp_path)
    yield pool
    await pool.aclose()


def _index(registry: ModelRegistry) -> list[tuple[str, int | None, str, str]]:
    return [(e.name, e.version, e.state.value, e.reason) for e in registry.index()]


async def test_a_version_that_fails_in_one_worker_is_committed_in_none(workers: Workers, tmp_path: Path) -> None:
    # A configured warm-up sample must run: worker B runs it (and fails on version 2), worker A skips warm-up.
    sample = {"name": "one row", "inputs": {"x": {"datatype": "FP32", "shape": [1, WIDTH]}}}
    write_config(workers.root, "m", {"warmup": [sample]})
    first, a = workers.member("worker A", warmup=False)
    second, b = workers.member("worker B", warmup=True)
    coordinator = Coordinator(Settings(repository=workers.root), SnapshotStore(tmp_path / "snapshots"), 2)
    await asyncio.gather(coordinator.join(a), coordinator.join(b))  # the startup decision waits for both
    assert first.versions("m") == second.versions("m") == [1]

    _fails_its_warm_up(workers.root / "m" / "2")
    with pytest.raises(InvalidRequest, match="worker B: m version 2: warm-up sample 'one row' failed"):
        await coordinator.load("m")
    assert first.versions("m") == second.versions("m") == [1]  # worker A loaded it, and did not switch
    assert _index(first) == _index(second)
    assert _index(first)[1][:3] == ("m", 2, "UNAVAILABLE")
    assert "worker B" in _index(first)[1][3]
    assert "worker A" not in _index(first)[1][3]
    async with first.lease("m") as served:
        assert served.version == 1
        assert (await served.infer(FEEDS, 3)).outputs["y"].tolist() == [[1.0] * WIDTH] * 3

    # Without worker B the same files load: worker A alone decides nothing less.
    coordinator.leave(b)
    await coordinator.load("m")
    assert first.versions("m") == [1, 2]
    async with first.lease("m", 2) as served:
        assert (await served.infer(FEEDS, 3)).outputs["y"].tolist() == [[0.0] * WIDTH] * 3


async def test_latecomers_catch_up_or_are_turned_away(workers: Workers, tmp_path: Path) -> None:
    first, a = workers.member("worker A")
    coordinator = Coordinator(Settings(repository=workers.root), SnapshotStore(tmp_path / "snapshots"), 1)
    await coordinator.join(a)
    write_version(workers.root, "n", 1)
    await coordinator.load("n")
    await coordinator.unload("m")

    late, c = workers.member("worker C")
    await coordinator.join(c)  # the state decided since startup, not the startup state
    assert late.names() == first.names() == ["n"]
    assert _index(late) == _index(first)

    _, d = workers.member("worker D", providers=("NoSuchExecutionProvider",), strict_providers=True)
    with pytest.raises(ModelLoadError, match="worker D cannot load what the other workers serve"):
        await coordinator.join(d)
    write_version(workers.root, "o", 1)
    await coordinator.load("o")  # a refused latecomer is no member: it holds nothing up
    assert late.names() == first.names() == ["n", "o"]


async def test_a_load_that_outlasts_the_load_timeout_fails_and_the_coordinator_goes_on(
    workers: Workers, tmp_path: Path
) -> None:
    # No real load finishes within a microsecond: each one is cut off at the bound, none hangs the coordinator.
    registry, member = workers.member("")
    settings = Settings(repository=workers.root, load_timeout_s=1e-6)
    coordinator = Coordinator(settings, SnapshotStore(tmp_path / "snapshots"), 1)
    await coordinator.join(member)  # the startup decision ends; the version that did not load in time is refused
    assert registry.versions("m") == []
    assert _index(registry) == [("m", 1, "UNAVAILABLE", "did not load within 1e-06 s")]
    with pytest.raises(InvalidRequest, match="failed to load 'm': did not load within 1e-06 s"):
        await coordinator.load("m")
    write_version(workers.root, "n", 1)
    with pytest.raises(InvalidRequest, match="failed to load 'n': did not load within"):
        await coordinator.load("n")
    await coordinator.unload("m")  # answers: nothing waits on the cut-off loads
    assert [entry[:3] for entry in _index(registry)] == [("m", 1, "UNAVAILABLE"), ("n", 1, "UNAVAILABLE")]
