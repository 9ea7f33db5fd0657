"""Dynamic batching: through ``DynamicBatcher.submit`` with a fake run function, and through a real app.

Nothing here depends on timing: a gate (an asyncio.Event) holds the fake model's first run, so the
requests that arrive meanwhile are known to be queued together.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import orjson
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.app import create_app
from service.errors import InvalidInput, ModelNotReady, Overloaded
from service.serving.batching import Arrays, BatchPolicy, DynamicBatcher, Outcome, RunCost
from service.settings import Settings
from tests import model_factory as mf


class FakeModel:
    """y = 10 * x; a run whose input holds a negative number fails, as a model rejecting bad data would."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.batches: list[int] = []
        self._gate = gate

    async def run(self, feeds: Arrays) -> Arrays:
        if self._gate is not None:
            await self._gate.wait()
        x = feeds["x"]
        self.batches.append(x.shape[0])
        if (x < 0).any():
            raise InvalidInput("negative input")
        return {"y": x * 10}


def rows(first: float, count: int = 1, width: int = 3) -> np.ndarray:
    return np.full((count, width), first, dtype=np.float32) + np.arange(count, dtype=np.float32)[:, None]


async def started(policy: BatchPolicy, run: Callable[[Arrays], Awaitable[Arrays]]) -> DynamicBatcher:
    batcher = DynamicBatcher(run, policy, "fake version 1")
    batcher.start()
    return batcher


async def settle() -> None:
    """Let every ready task run up to its next real wait."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_each_request_gets_its_own_rows_from_one_shared_batch() -> None:
    gate = asyncio.Event()
    model = FakeModel(gate)
    batcher = await started(BatchPolicy(max_batch_size=64), model.run)
    first = asyncio.create_task(batcher.submit({"x": rows(0.0)}, 1))
    await settle()  # the first request is running (held at the gate); the next ones queue behind it
    inputs = [rows(100.0 * i, count=i) for i in range(1, 6)]
    tasks = [asyncio.create_task(batcher.submit({"x": x}, len(x))) for x in inputs]
    await settle()
    gate.set()
    outcomes = await asyncio.gather(first, *tasks)
    assert model.batches == [1, sum(len(x) for x in inputs)]
    np.testing.assert_array_equal(outcomes[0].outputs["y"], rows(0.0) * 10)
    for x, outcome in zip(inputs, outcomes[1:], strict=True):
        np.testing.assert_array_equal(outcome.outputs["y"], x * 10)
    await batcher.aclose()


async def test_each_execution_reports_the_queue_times_of_the_requests_it_answered_at_once() -> None:
    gate = asyncio.Event()
    model = FakeModel(gate)
    reported: list[list[int]] = []
    batcher = DynamicBatcher(model.run, BatchPolicy(max_batch_size=64), "fake version 1", queue_observer=reported.append)
    batcher.start()
    first = asyncio.create_task(batcher.submit({"x": rows(0.0)}, 1))
    await settle()
    tasks = [asyncio.create_task(batcher.submit({"x": rows(float(i))}, 1)) for i in range(3)]
    await settle()
    gate.set()
    outcomes = await asyncio.gather(first, *tasks)
    assert model.batches == [1, 3]
    assert reported == [[outcomes[0].queue_ns], [outcome.queue_ns for outcome in outcomes[1:]]]
    assert all(value >= 0 for values in reported for value in values)
    await batcher.aclose()


async def test_a_lone_request_runs_at_once_without_waiting_for_company() -> None:
    model = FakeModel()
    batcher = await started(BatchPolicy(max_batch_size=64, max_queue_delay_s=0.0), model.run)
    outcome = await batcher.submit({"x": rows(7.0)}, 1)
    np.testing.assert_array_equal(outcome.outputs["y"], rows(7.0) * 10)
    assert model.batches == [1]
    await batcher.aclose()


async def test_one_bad_request_fails_alone_and_its_neighbours_succeed() -> None:
    gate = asyncio.Event()
    model = FakeModel(gate)
    batcher = await started(BatchPolicy(max_batch_size=64), model.run)
    blocker = asyncio.create_task(batcher.submit({"x": rows(0.0)}, 1))
    await settle()
    good = [asyncio.create_task(batcher.submit({"x": rows(float(i))}, 1)) for i in range(1, 4)]
    bad = asyncio.create_task(batcher.submit({"x": rows(-5.0)}, 1))
    more = asyncio.create_task(batcher.submit({"x": rows(9.0, count=2)}, 2))
    await settle()
    gate.set()
    await blocker
    for i, task in enumerate(good, start=1):
        np.testing.assert_array_equal((await task).outputs["y"], rows(float(i)) * 10)
    np.testing.assert_array_equal((await more).outputs["y"], rows(9.0, count=2) * 10)
    with pytest.raises(InvalidInput, match="negative input"):
        await bad
    # The shared batch failed once, then every request ran on its own.
    assert model.batches[:2] == [1, 6]
    assert sorted(model.batches[2:]) == [1, 1, 1, 1, 2]
    await batcher.aclose()


async def test_a_failed_batch_is_logged_as_a_warning_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    gate = asyncio.Event()
    model = FakeModel(gate)
    failures: list[tuple[int, str]] = []
    batcher = DynamicBatcher(
        model.run, BatchPolicy(max_batch_size=64), "fake version 1", on_batch_failure=lambda n, e: failures.append((n, str(e)))
    )
    batcher.start()
    blocker = asyncio.create_task(batcher.submit({"x": rows(0.0)}, 1))
    await settle()
    queued = [asyncio.create_task(batcher.submit({"x": rows(v)}, 1)) for v in (1.0, -1.0, 2.0)]
    await settle()
    with caplog.at_level("WARNING", logger="service.serving.batching"):
        gate.set()
        await blocker
        await asyncio.gather(*queued, return_exceptions=True)
    assert failures == [(3, "negative input")]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["fake version 1: batch of 3 requests failed (InvalidInput: negative input); rerunning them one by one"]
    await batcher.aclose()


async def test_batches_respect_max_batch_size_and_keep_arrival_order() -> None:
    gate = asyncio.Event()
    model = FakeModel(gate)
    batcher = await started(BatchPolicy(max_batch_size=4), model.run)
    first = asyncio.create_task(batcher.submit({"x": rows(0.0)}, 1))
    await settle()
    sizes = [3, 2, 2, 1, 4]
    tasks = [asyncio.create_task(batcher.submit({"x": rows(10.0 * i, n)}, n)) for i, n in enumerate(sizes)]
    await settle()
    gate.set()
    await first
    for i, (n, task) in enumerate(zip(sizes, tasks, strict=True)):
        np.testing.assert_array_equal((await task).outputs["y"], rows(10.0 * i, n) * 10)
    assert all(size <= 4 for size in model.batches)
    assert sum(model.batches) == 1 + sum(sizes)
    await batcher.aclose()


async def test_requests_with_different_trailing_shapes_never_share_a_batch() -> None:
    gate = asyncio.Event()
    model = FakeModel(gate)
    batcher = await started(BatchPolicy(max_batch_size=64), model.run)
    first = asyncio.create_task(batcher.submit({"x": rows(0.0)}, 1))
    await settle()
    narrow = [asyncio.create_task(batcher.submit({"x": rows(float(i), width=3)}, 1)) for i in range(3)]
    wide = [asyncio.create_task(batcher.submit({"x": rows(float(i), width=5)}, 1)) for i in range(2)]
    await settle()
    gate.set()
    await first
    for i, task in enumerate(narrow):
        np.testing.assert_array_equal((await task).outputs["y"], rows(float(i), width=3) * 10)
    for i, task in enumerate(wide):
        np.testing.assert_array_equal((await task).outputs["y"], rows(float(i), width=5) * 10)
    assert model.batches == [1, 3, 2]
    await batcher.aclose()


async def test_preferred_batch_sizes_cut_the_batch_and_the_rest_runs_next() -> None:
    gate = asyncio.Event()
    model = FakeModel(gate)
    batcher = await started(BatchPolicy(max_batch_size=64, preferred_batch_sizes=(2, 4)), model.run)
    first = asyncio.create_task(batcher.submit({"x": rows(0.0)}, 1))
    await settle()
    tasks = [asyncio.create_task(batcher.submit({"x": rows(float(i))}, 1)) for i in range(1, 8)]
    await settle()
    gate.set()
    await first
    for i, task in enumerate(tasks, start=1):
        np.testing.assert_array_equal((await task).outputs["y"], rows(float(i)) * 10)
    assert model.batches == [1, 4, 2, 1]
    await batcher.aclose()


async def test_a_full_queue_answers_overloaded_with_retry_after() -> None:
    gate = asyncio.Event()
    model = FakeModel(gate)
    batcher = await started(BatchPolicy(max_batch_size=64, max_queue_size=2), model.run)
    running = asyncio.create_task(batcher.submit({"x": rows(0.0)}, 1))
    await settle()
    queued = [asyncio.create_task(batcher.submit({"x": rows(float(i))}, 1)) for i in (1, 2)]
    await settle()
    with pytest.raises(Overloaded) as caught:
        await batcher.submit({"x": rows(3.0)}, 1)
    assert caught.value.status_code == 503
    assert caught.value.headers()["Retry-After"].isdigit()
    gate.set()
    await asyncio.gather(running, *queued)
    # Once the queue drains, the batcher takes requests again.
    np.testing.assert_array_equal((await batcher.submit({"x": rows(4.0)}, 1)).outputs["y"], rows(4.0) * 10)
    await batcher.aclose()


async def test_a_request_whose_caller_left_is_skipped() -> None:
    gate = asyncio.Event()
    model = FakeModel(gate)
    batcher = await started(BatchPolicy(max_batch_size=64), model.run)
    running = asyncio.create_task(batcher.submit({"x": rows(0.0)}, 1))
    await settle()
    gone = asyncio.create_task(batcher.submit({"x": rows(1.0)}, 1))
    kept = asyncio.create_task(batcher.submit({"x": rows(2.0)}, 1))
    await settle()
    gone.cancel()
    gate.set()
    await running
    np.testing.assert_array_equal((await kept).outputs["y"], rows(2.0) * 10)
    assert model.batches == [1, 1]
    await batcher.aclose()


async def test_outputs_without_a_batch_axis_fall_back_to_one_run_per_request() -> None:
    gate = asyncio.Event()

    async def summed(feeds: Arrays) -> Arrays:
        await gate.wait()
        return {"total": np.asarray(feeds["x"].sum())}

    batcher = await started(BatchPolicy(max_batch_size=64), summed)
    first = asyncio.create_task(batcher.submit({"x": rows(0.0)}, 1))
    await settle()
    tasks = [asyncio.create_task(batcher.submit({"x": rows(float(i))}, 1)) for i in (1, 2)]
    await settle()
    gate.set()
    await first
    for i, task in zip((1, 2), tasks, strict=True):
        assert float((await task).outputs["total"]) == pytest.approx(float(rows(float(i)).sum()))
    await batcher.aclose()


async def test_closing_fails_queued_requests_and_finishes_the_running_batch() -> None:
    gate = asyncio.Event()
    model = FakeModel(gate)
    batcher = await started(BatchPolicy(max_batch_size=64), model.run)
    running = asyncio.create_task(batcher.submit({"x": rows(1.0)}, 1))
    await settle()
    queued = asyncio.create_task(batcher.submit({"x": rows(2.0)}, 1))
    await settle()
    closing = asyncio.create_task(batcher.aclose())
    await settle()
    gate.set()
    await closing
    np.testing.assert_array_equal((await running).outputs["y"], rows(1.0) * 10)
    with pytest.raises(ModelNotReady):
        await queued
    with pytest.raises(ModelNotReady):
        await batcher.submit({"x": rows(3.0)}, 1)


async def test_an_unexpected_failure_becomes_a_server_error_and_the_runner_lives_on() -> None:
    calls = 0

    async def flaky(feeds: Arrays) -> Arrays:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("device lost")
        return {"y": feeds["x"] * 10}

    batcher = await started(BatchPolicy(max_batch_size=64), flaky)
    with pytest.raises(Exception, match="device lost") as caught:
        await batcher.submit({"x": rows(1.0)}, 1)
    assert getattr(caught.value, "status_code", None) == 500
    outcome: Outcome = await batcher.submit({"x": rows(2.0)}, 1)
    np.testing.assert_array_equal(outcome.outputs["y"], rows(2.0) * 10)
    await batcher.aclose()


# ------------------------------------------------------------------------------------------------
# Through a real app (real onnxruntime sessions), calling its ASGI interface directly


Response = tuple[int, dict[str, str], bytes]


async def call(app: Any, path: str, document: dict[str, Any]) -> Response:
    body = orjson.dumps(document)
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)
    start = sent[0]
    headers = {key.decode(): value.decode() for key, value in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


def infer_document(name: str, array: np.ndarray) -> dict[str, Any]:
    return {"inputs": [{"name": name, "datatype": "FP32", "shape": list(array.shape), "data": array.ravel().tolist()}]}


def output_of(body: bytes) -> np.ndarray:
    entry = orjson.loads(body)["outputs"][0]
    return np.asarray(entry["data"], dtype=np.float32).reshape(entry["shape"])


def _hidden_batch_of_one() -> onnx.ModelProto:
    """Declares a dynamic batch axis but reshapes to one row inside: any shared batch fails."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    shape = numpy_helper.from_array(np.array([1, 4], dtype=np.int64), "one_row")
    nodes = [
        helper.make_node("Reshape", ["x", "one_row"], ["row"]),
        helper.make_node("Shape", ["x"], ["x_shape"]),
        helper.make_node("Expand", ["row", "x_shape"], ["y"]),  # keeps the output's batch axis symbolic
    ]
    graph = helper.make_graph(nodes, "g", [x], [y], [shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    mf.save(mf.identity("FP32", width=4), tmp_path, "echo")
    (tmp_path / "one_row" / "1").mkdir(parents=True)
    onnx.save(_hidden_batch_of_one(), tmp_path / "one_row" / "1" / "model.onnx")
    mf.save(mf.identity("FP32", width=4), tmp_path, "tiny_queue")
    (tmp_path / "tiny_queue" / "config.json").write_text(json.dumps({"batching": {"max_queue_size": 1}}))
    return tmp_path


async def test_real_app_returns_each_request_its_own_rows_and_rejects_bad_ones_alone(repository: Path) -> None:
    app = create_app(Settings(repository=repository, log_level="warning", intra_op_threads=1))
    async with app.lifespan():
        loaded = app.state.registry.get("echo")
        assert loaded.runner is not None  # dynamic batch axis: batched by default
        inputs = [np.arange(4 * n, dtype=np.float32).reshape(n, 4) + 1000 * i for i, n in enumerate([1, 3, 2, 1] * 8)]
        bad = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 5], "data": [0.0] * 5}]}
        requests = [call(app, "/v2/models/echo/infer", infer_document("INPUT0", x)) for x in inputs]
        requests.insert(5, call(app, "/v2/models/echo/infer", bad))
        answers = await asyncio.gather(*requests)
        status, _, body = answers.pop(5)
        assert status == 400
        assert "shape" in orjson.loads(body)["error"]
        for x, (status, _, body) in zip(inputs, answers, strict=True):
            assert status == 200
            np.testing.assert_array_equal(output_of(body), x)
        stats = app.state.registry.statistics(loaded)
        assert stats["inference_count"] == sum(len(x) for x in inputs)
        assert stats["execution_count"] < len(inputs)  # requests shared executions


async def test_a_model_that_cannot_batch_is_found_out_at_load_and_runs_one_by_one(repository: Path) -> None:
    app = create_app(Settings(repository=repository, log_level="warning", intra_op_threads=1))
    async with app.lifespan():
        one_row = app.state.registry.get("one_row")
        assert one_row.runner is None
        assert one_row.batching_off is not None
        assert "fails" in one_row.batching_off
        assert app.state.registry.get("echo").runner is not None


async def test_real_app_counts_failed_batches_and_still_answers_every_request(repository: Path) -> None:
    # Without warm-up nothing checks the model at load, so its batches fail at run time.
    app = create_app(Settings(repository=repository, log_level="warning", intra_op_threads=1, warmup=False))
    async with app.lifespan():
        inputs = [np.full((1, 4), i, dtype=np.float32) for i in range(16)]
        answers = await asyncio.gather(*[call(app, "/v2/models/one_row/infer", infer_document("x", x)) for x in inputs])
        for x, (status, _, body) in zip(inputs, answers, strict=True):
            assert status == 200, body
            np.testing.assert_array_equal(output_of(body), x)
        metrics = app.state.metrics.exposition().decode()
    failures = [line for line in metrics.splitlines() if line.startswith("weightserve_batch_failures_total{")]
    assert len(failures) == 1
    assert 'model="one_row"' in failures[0]
    assert float(failures[0].rsplit(" ", 1)[1]) >= 1


async def test_real_app_answers_503_with_retry_after_when_the_queue_is_full(repository: Path) -> None:
    app = create_app(Settings(repository=repository, log_level="warning", intra_op_threads=1))
    async with app.lifespan():
        inputs = [np.full((1, 4), float(i), dtype=np.float32) for i in range(16)]
        answers = await asyncio.gather(
            *(call(app, "/v2/models/tiny_queue/infer", infer_document("INPUT0", x)) for x in inputs)
        )
        statuses = [status for status, _, _ in answers]
        assert 503 in statuses
        for x, (status, headers, body) in zip(inputs, answers, strict=True):
            if status == 200:
                np.testing.assert_array_equal(output_of(body), x)
            else:
                assert status == 503
                assert headers["retry-after"].isdigit()
                assert "queue is full" in orjson.loads(body)["error"]
        # The server keeps serving once the burst has passed.
        status, _, body = await call(app, "/v2/models/tiny_queue/infer", infer_document("INPUT0", inputs[3]))
        assert status == 200
        np.testing.assert_array_equal(output_of(body), inputs[3])


async def test_a_blocking_run_executes_on_the_batchers_own_thread_which_ends_with_it() -> None:
    seen_threads: set[str] = set()

    def blocking(feeds: Arrays) -> Arrays:
        seen_threads.add(threading.current_thread().name)
        if (feeds["x"] < 0).any():
            raise InvalidInput("negative input")
        return {"y": feeds["x"] * 10}

    # inline_run_max_s=0: every run on the thread, however cheap it turns out to be.
    batcher = DynamicBatcher.blocking(blocking, BatchPolicy(max_batch_size=8, inline_run_max_s=0), "blocking fake")
    batcher.start()
    inputs = [rows(float(i), count=1 + i % 3) for i in range(20)]
    tasks = [asyncio.create_task(batcher.submit({"x": x}, len(x))) for x in inputs]
    bad = asyncio.create_task(batcher.submit({"x": rows(-1.0)}, 1))
    for x, task in zip(inputs, tasks, strict=True):
        np.testing.assert_array_equal((await task).outputs["y"], x * 10)
    with pytest.raises(InvalidInput):
        await bad
    assert seen_threads == {"infer blocking fake"}
    await batcher.aclose()
    for _ in range(500):  # the thread ends once it has taken the stop request
        if not any(thread.name == "infer blocking fake" for thread in threading.enumerate()):
            break
        await asyncio.sleep(0.01)
    assert not any(thread.name == "infer blocking fake" for thread in threading.enumerate())


class BlockingFake:
    """y = 10 * x as a blocking run that notes the thread of each run and the rows of each batch; each run
    takes at least ``seconds``, whatever its rows (as a run that reads all of a model's weights does)."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.threads: list[str] = []
        self.batches: list[int] = []
        self._seconds = seconds

    def __call__(self, feeds: Arrays) -> Arrays:
        self.threads.append(threading.current_thread().name)
        self.batches.append(len(feeds["x"]))
        if self._seconds:
            time.sleep(self._seconds)
        if (feeds["x"] < 0).any():
            raise InvalidInput("negative input")
        return {"y": feeds["x"] * 10}


async def test_a_run_known_to_be_cheap_executes_on_the_event_loop_and_an_unmeasured_one_on_the_thread() -> None:
    model = BlockingFake()
    batcher = DynamicBatcher.blocking(model, BatchPolicy(max_batch_size=8, inline_run_max_s=3600.0), "cheap fake")
    batcher.start()
    loop_thread = threading.current_thread().name
    for value in (1.0, 2.0, 3.0):
        np.testing.assert_array_equal((await batcher.submit({"x": rows(value)}, 1)).outputs["y"], rows(value) * 10)
    # The first run had no measurement yet; once measured (and under the limit), runs stay on the loop.
    assert model.threads == ["infer cheap fake", loop_thread, loop_thread]
    # More rows than any measured run: their cost is estimated from the smaller runs' time per row.
    await batcher.submit({"x": rows(0.0, count=6)}, 6)
    assert model.threads[-1] == loop_thread
    await batcher.aclose()


async def test_requests_read_in_the_same_loop_pass_share_one_inline_batch_and_each_gets_its_rows() -> None:
    model = BlockingFake()
    batcher = DynamicBatcher.blocking(model, BatchPolicy(max_batch_size=64, inline_run_max_s=3600.0), "cheap fake")
    batcher.start()
    await batcher.submit({"x": rows(0.0)}, 1)  # measured once
    inputs = [rows(100.0 * i, count=1 + i % 3) for i in range(6)]
    outcomes = await asyncio.gather(*(batcher.submit({"x": x}, len(x)) for x in inputs))
    for x, outcome in zip(inputs, outcomes, strict=True):
        np.testing.assert_array_equal(outcome.outputs["y"], x * 10)
    assert model.batches == [1, sum(len(x) for x in inputs)]
    assert model.threads[1] == threading.current_thread().name
    await batcher.aclose()


async def test_an_inline_batch_with_a_bad_request_fails_only_that_request() -> None:
    model = BlockingFake()
    batcher = DynamicBatcher.blocking(model, BatchPolicy(max_batch_size=64, inline_run_max_s=3600.0), "cheap fake")
    batcher.start()
    await batcher.submit({"x": rows(0.0)}, 1)
    values = [1.0, 2.0, -3.0, 4.0]
    results = await asyncio.gather(*(batcher.submit({"x": rows(v)}, 1) for v in values), return_exceptions=True)
    for value, result in zip(values, results, strict=True):
        if value < 0:
            assert isinstance(result, InvalidInput)
        else:
            assert isinstance(result, Outcome)
            np.testing.assert_array_equal(result.outputs["y"], rows(value) * 10)
    assert model.batches == [1, 4, 1, 1, 1, 1]
    await batcher.aclose()


async def test_a_run_measured_as_too_long_for_the_event_loop_goes_back_to_the_thread() -> None:
    model = BlockingFake()
    # A limit no run can meet: every run stays on the thread, measured or not.
    batcher = DynamicBatcher.blocking(model, BatchPolicy(max_batch_size=8, inline_run_max_s=1e-12), "slow fake")
    batcher.start()
    for value in (1.0, 2.0, 3.0):
        await batcher.submit({"x": rows(value)}, 1)
    assert model.threads == ["infer slow fake"] * 3
    await batcher.aclose()


RUN_S = 0.3
"""A slow fake's run: long beside the loop passes and the hand-overs of the tests below, however busy the
machine, so that which requests share a batch depends on the batcher's rule and not on the machine."""


async def _after_a_batch_of_four(model: BlockingFake, label: str) -> DynamicBatcher:
    # On the thread (a limit of 0), so the event loop takes new requests while a run goes on.
    batcher = DynamicBatcher.blocking(model, BatchPolicy(max_batch_size=64, inline_run_max_s=0), label)
    batcher.start()
    await batcher.submit({"x": rows(0.0)}, 1)  # measured: the cost model now expects RUN_S
    await asyncio.gather(*(batcher.submit({"x": rows(float(i))}, 1) for i in range(4)))
    assert model.batches == [1, 4]
    return batcher


async def test_a_request_that_comes_alone_after_a_larger_batch_waits_for_the_requests_it_answered() -> None:
    model = BlockingFake(RUN_S)
    batcher = await _after_a_batch_of_four(model, "slow fake")
    first = asyncio.create_task(batcher.submit({"x": rows(10.0)}, 1))
    await asyncio.sleep(RUN_S / 10)  # the other clients' next requests come a little later
    others = [asyncio.create_task(batcher.submit({"x": rows(float(11 + i))}, 1)) for i in range(3)]
    outcomes = await asyncio.gather(first, *others)
    for i, outcome in enumerate(outcomes):
        np.testing.assert_array_equal(outcome.outputs["y"], rows(10.0 + i) * 10)
    assert model.batches == [1, 4, 4]  # one run for the four, not one for the first and one for the rest
    await batcher.aclose()


async def test_the_wait_for_company_that_does_not_come_ends_after_about_one_run() -> None:
    model = BlockingFake(RUN_S)
    batcher = await _after_a_batch_of_four(model, "slow fake")
    # Nobody else comes: the request runs alone once the wait is over (one run's time, not forever).
    outcome = await asyncio.wait_for(batcher.submit({"x": rows(7.0)}, 1), timeout=20 * RUN_S)
    np.testing.assert_array_equal(outcome.outputs["y"], rows(7.0) * 10)
    assert model.batches == [1, 4, 1]
    assert outcome.queue_ns >= 0.5 * RUN_S * 1e9  # it did wait for company
    # The batch it ran in was of one request: the next request alone does not wait.
    outcome = await batcher.submit({"x": rows(8.0)}, 1)
    assert outcome.queue_ns < 0.5 * RUN_S * 1e9
    await batcher.aclose()


async def test_a_lone_client_never_waits_for_company() -> None:
    model = BlockingFake(RUN_S)
    batcher = DynamicBatcher.blocking(model, BatchPolicy(max_batch_size=64, inline_run_max_s=0), "slow fake")
    batcher.start()
    for value in (1.0, 2.0, 3.0):
        outcome = await batcher.submit({"x": rows(value)}, 1)
        np.testing.assert_array_equal(outcome.outputs["y"], rows(value) * 10)
        assert outcome.queue_ns < 0.5 * RUN_S * 1e9
    assert model.batches == [1, 1, 1]
    await batcher.aclose()


async def test_a_request_cancelled_while_it_waits_for_company_leaves_the_others_answered() -> None:
    model = BlockingFake(RUN_S)
    batcher = await _after_a_batch_of_four(model, "slow fake")
    waiting = asyncio.create_task(batcher.submit({"x": rows(1.0)}, 1))
    await asyncio.sleep(RUN_S / 10)
    queued = asyncio.create_task(batcher.submit({"x": rows(2.0)}, 1))  # joins the wait
    await asyncio.sleep(RUN_S / 10)
    waiting.cancel()  # its client went away
    outcome = await asyncio.wait_for(queued, timeout=20 * RUN_S)
    np.testing.assert_array_equal(outcome.outputs["y"], rows(2.0) * 10)
    assert waiting.cancelled()
    assert model.batches == [1, 4, 1]  # the cancelled request never ran
    await batcher.aclose()


async def test_closing_the_batcher_ends_a_wait_for_company_at_once() -> None:
    model = BlockingFake(RUN_S)
    batcher = await _after_a_batch_of_four(model, "slow fake")
    waiting = asyncio.create_task(batcher.submit({"x": rows(1.0)}, 1))
    await asyncio.sleep(RUN_S / 10)
    await asyncio.wait_for(batcher.aclose(), timeout=RUN_S / 2)  # no run was started for it
    with pytest.raises(ModelNotReady):
        await waiting
    assert model.batches == [1, 4]


def test_run_cost_estimates_from_the_same_or_smaller_runs_only() -> None:
    cost = RunCost()
    assert cost.estimate_ns(1) is None
    cost.observe(1, 1000)
    assert cost.estimate_ns(1) == 1000
    assert cost.estimate_ns(8) == 8000  # per element of the small runs: an overestimate for a batch
    cost.observe(8, 2000)
    assert cost.estimate_ns(8) == 2000
    assert cost.estimate_ns(0) is None  # an empty run: nothing that small was measured


async def test_a_request_much_larger_than_those_measured_goes_to_the_thread() -> None:
    model = BlockingFake()
    # Runs of 3 elements are measured within the limit; a request of 3 million elements is estimated from
    # their time per element, over the limit: it must not stall the event loop.
    batcher = DynamicBatcher.blocking(model, BatchPolicy(max_batch_size=8, inline_run_max_s=0.5), "fake")
    batcher.start()
    for value in (1.0, 2.0, 3.0):
        await batcher.submit({"x": rows(value)}, 1)
    assert model.threads[1:] == [threading.current_thread().name] * 2
    big = np.zeros((1, 3_000_000), dtype=np.float32)
    await batcher.submit({"x": big}, 1)
    assert model.threads[-1] == "infer fake"
    await batcher.aclose()
