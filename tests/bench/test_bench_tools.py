"""The benchmark's own parts: the bare-ASGI ceiling and the minimal server answer like servers, the profile
sorts samples, the load runs interleave the servers and the report reads them."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import orjson
import pytest

from bench import ceiling, floor, inprocess, opcodes
from bench.bodies import binary_body, decode_output, json_body
from bench.minimal import MinimalApp
from bench.models import SMALL, WIDE, MlpShape, build, sample
from bench.native import INTERPRETER, RATE, library_of, per_request_us, read_report
from bench.native import OTHER as NATIVE_OTHER
from bench.profile import IDLE, LOOP, OTHER, classify, read_collapsed
from bench.run import Point, Row, _report, medians, schedule
from bench.wrk import LoadResult


async def test_the_ceiling_reads_the_whole_body_and_answers_a_fixed_v2_response() -> None:
    chunks = [
        {"type": "http.request", "body": b'{"inputs": [', "more_body": True},
        {"type": "http.request", "body": b"]}", "more_body": False},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await ceiling.app({"type": "http", "method": "POST", "path": "/x"}, receive, send)
    assert chunks == []
    assert sent[0]["status"] == 200
    answer = orjson.loads(sent[1]["body"])
    assert len(answer["outputs"][0]["data"]) == 10
    assert dict(sent[0]["headers"])[b"content-length"] == str(len(sent[1]["body"])).encode()


def test_the_profile_names_the_innermost_known_part_of_each_stack() -> None:
    loop = "<module> (<string>:1);_worker (service/ops/supervisor.py:143);Runner.run (asyncio/runners.py:118)"
    assert classify(f"{loop};RequestResponseCycle.send (uvicorn/protocols/http/httptools_impl.py:524)") == (
        "uvicorn, httptools"
    )
    infer = f"{loop};InferFastPath._infer (service/http/infer_fast_path.py:83);infer (service/serving/inference.py:28)"
    assert classify(f"{infer};parse_request (service/protocol/request.py:80);loads (service/protocol/fast_json.py:36)") == (
        "request JSON parse"
    )
    assert classify(f"{infer};_read_json (service/protocol/request_plan.py:199)") == (
        "request plan (compiled JSON read, checks)"
    )
    assert classify(f"{infer};run (onnxruntime/capi/onnxruntime_inference_collection.py:406)") == "onnxruntime run"
    assert classify(loop) == LOOP
    assert classify("Thread.run (threading.py:982);Semaphore.acquire (threading.py:479);Condition.wait (threading.py:327)") == IDLE
    assert classify("main (somewhere/else.py:1)") == OTHER
    counts = read_collapsed([f"{loop} 7", f"{infer};run (onnxruntime/capi/x.py:1) 3", "garbage"])
    assert counts == {LOOP: 7, "onnxruntime run": 3}


def test_the_native_profile_counts_each_perf_sample_for_the_library_it_was_taken_in() -> None:
    report = """# To display the perf.data header info, please use --header/--header-only options.
#
# Samples: 16K of event 'cpu-clock:ppp'
#
# Overhead       Samples  Shared Object
# ........  ............  ..........................................
#
    52.73%          8531  libpython3.11.so.1.0
    11.79%          1908  onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so
    10.83%          1752  [kernel.kallsyms]
     9.03%          1461  csimdjson.abi3.so
     6.14%           994  libc.so.6
     3.32%           537  loop.cpython-311-x86_64-linux-gnu.so
     2.85%           461  _multiarray_umath.cpython-311-x86_64-linux-gnu.so
     1.29%           209  parser.cpython-311-x86_64-linux-gnu.so
     0.19%            31  url_parser.cpython-311-x86_64-linux-gnu.so
     0.12%            19  libscipy_openblas64_-32a4b2a6.so
     0.05%             8  [vdso]
"""
    counts = read_report(report.splitlines())
    assert counts[INTERPRETER] == 8531
    assert counts["httptools"] == 209 + 31
    assert counts["numpy, BLAS"] == 461 + 19
    assert counts["kernel (sockets, scheduling)"] == 1752
    assert counts[NATIVE_OTHER] == 8
    assert sum(counts.values()) == 8531 + 1908 + 1752 + 1461 + 994 + 537 + 461 + 209 + 31 + 19 + 8
    assert library_of("python3.13") == INTERPRETER  # a statically linked interpreter
    assert library_of("libc.so.6") == "libc (memcpy, malloc)"
    assert library_of("_infer_json.cpython-311-x86_64-linux-gnu.so") == "weightserve's JSON reader (C)"
    # RATE samples a second are a second of CPU: spread over 1000 requests, 1000 us each.
    assert per_request_us(Counter({INTERPRETER: RATE}), 1000) == {INTERPRETER: 1000.0}


def test_cold_runs_are_timed_one_by_one_and_at_least_once(tmp_path: Path) -> None:
    shape = MlpShape("tiny", (6, 5, 3))
    model = tmp_path / "model.onnx"
    onnx.save(build(shape), model)
    sess = inprocess.session(model)
    rate = inprocess.cold_samples_per_s(sess, shape, 4, 0.0)  # no time given: still one timed run of 4 samples
    assert np.isfinite(rate)
    assert rate > 0


async def test_the_minimal_server_batches_concurrent_requests_and_answers_each_its_own_rows(tmp_path: Path) -> None:
    shape = MlpShape("tiny", (6, 5, 3))
    model = tmp_path / shape.name / "1" / "model.onnx"
    model.parent.mkdir(parents=True)
    onnx.save(build(shape), model)
    app = MinimalApp(model)
    reference = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    bodies = [
        (make(sample(shape, rows=rows, seed=seed), tmp_path, f"{make.__name__}{seed}"), sample(shape, rows, seed))
        for seed, (make, rows) in enumerate([(json_body, 1), (binary_body, 2), (json_body, 3), (binary_body, 1)])
    ]

    async def ask(body: Any) -> np.ndarray:
        headers = [(b"content-type", body.content_type.encode())]
        if body.header_length:
            headers.append((b"inference-header-content-length", body.header_length.encode()))
        messages = [{"type": "http.request", "body": body.path.read_bytes(), "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app({"type": "http", "method": "POST", "path": "/infer", "headers": headers}, receive, send)
        assert sent[0]["status"] == 200
        length = dict(sent[0]["headers"]).get(b"inference-header-content-length")
        return decode_output(sent[1]["body"], length.decode() if length else None)

    answers = await asyncio.gather(*(ask(body) for body, _ in bodies))
    for answer, (_, inputs) in zip(answers, bodies, strict=True):
        expected = reference.run(None, {"input": inputs})[0]
        np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-6)


def test_the_floor_times_a_warm_run_per_sample_and_the_read_of_a_bodys_numbers(tmp_path: Path) -> None:
    shape = MlpShape("tiny", (6, 5, 3))
    model = tmp_path / "model.onnx"
    onnx.save(build(shape), model)
    parts = floor.measure(model, shape, 4, json_body(sample(shape, rows=2), tmp_path, "tiny").path.read_bytes(), 0.0)
    assert parts.batch == 4
    assert 0 < parts.model_us < 1e6
    assert 0 < parts.read_us < 1e6
    assert parts.total_us(100.0) == pytest.approx(100.0 + parts.model_us + parts.read_us)


def test_the_floor_refuses_a_body_without_numbers_to_read() -> None:
    with pytest.raises(ValueError, match="no data array"):
        floor.read_us(b'{"inputs": []}', 0.0)
    with pytest.raises(ValueError, match="not a flat array of numbers"):
        floor.read_us(b'{"inputs": [{"data": [[1, 2]]}]}', 0.0)


def test_the_report_prints_ratios_from_one_run_and_a_verdict_per_target(capsys: Any) -> None:
    def row(server: str, body: str, connections: int, rps: float, p50: float, p99: float, cpu: float) -> Row:
        load = LoadResult(requests=int(rps * 10), seconds=10.0, p50_ms=p50, p99_ms=p99, errors=0)
        return Row(server, SMALL.name, body, connections, load, cpu)

    rows = [
        row("bare-asgi", "json", 1, 10_000, 0.1, 0.5, 100),
        row("bare-asgi", "json", 64, 20_000, 3.0, 10.0, 100),
        row("bare-asgi", "binary", 64, 25_000, 2.5, 8.0, 80),
        row("naive", "json", 1, 1_000, 0.8, 2.0, 1500),
        row("naive", "json", 64, 1_000, 60.0, 150.0, 1700),
        row("weightserve", "json", 1, 1_100, 0.7, 2.0, 800),
        row("weightserve", "json", 64, 9_000, 7.0, 20.0, 400),
        row("weightserve", "binary", 64, 10_000, 6.0, 30.0, 300),
        Row("weightserve", WIDE.name, "json", 64, LoadResult(850, 1.0, 50.0, 70.0, 0), 1600),
    ]
    _report(rows, [1, 64], wide_ceiling=1_000, batch=16)
    out = capsys.readouterr().out
    assert "small json c=64  weightserve / naive            9.00x" in out
    assert "small json c=64  weightserve / bare ASGI       45.0%" in out
    assert "small json   c=64  weightserve / bare ASGI: CPU per request  4.00x, p99  2.00x" in out
    assert "small binary c=64  weightserve / bare ASGI: CPU per request  3.75x, p99  3.75x" in out
    verdicts = {line[:50].strip(): line.split()[-1] for line in out.split("targets")[1].strip().splitlines()}
    assert verdicts["small json c=1 p50 <= naive p50 (ms)"] == "met"
    assert verdicts["small json c=64 >= 40% of bare ASGI"] == "met"
    assert verdicts["small binary c=64 >= 50% of bare ASGI"] == "met"
    assert verdicts["small binary c=64 >= 1.3x json"] == "MISSED"  # 1.11x
    assert verdicts["small json c=64 cpu <= 120 us/req"] == "MISSED"
    assert verdicts["small binary c=64 p99 <= 25 ms"] == "MISSED"
    assert verdicts["wide c=64 >= 80% of in-process b=16"] == "met"  # 85 %
    assert "floor" not in out  # not measured: nothing said of it

    _report(rows, [1, 64], wide_ceiling=1_000, batch=16, floor_parts=floor.Floor(18.0, 32, 17.5))
    out = capsys.readouterr().out
    assert "small json   c=64  floor for any server here: ceiling 100.0 + run 18.0 (b=32) + numbers 17.5 = 135.5" in out
    assert "the cpu target is below the floor of 135.5 us: out of reach for any server on this machine" in out
    _report(rows, [1, 64], wide_ceiling=1_000, batch=16, floor_parts=floor.Floor(5.0, 32, 5.0))
    assert "out of reach" not in capsys.readouterr().out  # 110 us: within the target


def test_each_load_point_runs_on_every_server_back_to_back_in_a_rotating_order() -> None:
    json_1, json_64, binary_64 = Point(SMALL, "json", 1), Point(SMALL, "json", 64), Point(SMALL, "binary", 64)
    binary_1, wide = Point(SMALL, "binary", 1), Point(WIDE, "json", 64)
    points = {
        "bare-asgi": [json_1, json_64, binary_64],
        "naive": [wide, json_1, json_64],
        "weightserve": [json_1, binary_64, json_64, wide, binary_1],
    }
    runs = schedule(points, rounds=2)
    first_round, second_round = runs[: len(runs) // 2], runs[len(runs) // 2 :]
    assert first_round == [
        ("bare-asgi", json_1),
        ("naive", json_1),
        ("weightserve", json_1),
        ("weightserve", binary_1),  # binary right after JSON at the same concurrency, wherever it was listed
        ("weightserve", json_64),  # the third point: two servers on
        ("bare-asgi", json_64),
        ("naive", json_64),
        ("weightserve", binary_64),  # two servers serve it: the fourth turn is the second
        ("bare-asgi", binary_64),
        ("naive", wide),  # the next model after the first one's points
        ("weightserve", wide),
    ]
    # The next round starts each point one turn later, so no server is always measured first.
    assert [label for label, point in second_round if point == json_1] == ["naive", "weightserve", "bare-asgi"]
    assert sorted(map(repr, second_round)) == sorted(map(repr, first_round))  # the same runs, once more


def test_the_medians_keep_one_row_per_server_and_point_the_middle_one_by_throughput() -> None:
    def row(server: str, connections: int, rps: float) -> Row:
        return Row(server, SMALL.name, "json", connections, LoadResult(int(rps), 1.0, rps / 1000, rps / 100, 0), rps)

    rows = [row("weightserve", 64, 5_000), row("naive", 64, 900), row("weightserve", 64, 4_000)]
    rows += [row("naive", 64, 1_100), row("weightserve", 64, 6_000), row("naive", 64, 1_000), row("naive", 1, 700)]
    kept = medians(rows)
    assert [(r.server, r.connections, r.load.rps) for r in kept] == [
        ("weightserve", 64, 5_000),
        ("naive", 64, 1_000),
        ("naive", 1, 700),
    ]
    assert kept[0].cpu_us == 5_000  # the whole row of that run: its latencies and CPU too


async def test_the_instruction_count_covers_the_servers_work_and_not_its_clients() -> None:
    tally, requests, statuses = await opcodes.count("weightserve", "json", 4, 2)
    assert (requests, dict(statuses)) == (8, {200: 8})
    files = {filename for filename, _ in tally.by_function}
    assert any(filename.endswith("service/serving/inference.py") for filename in files)
    assert not any(filename.endswith("bench/opcodes.py") for filename in files)
    minimal, _, minimal_statuses = await opcodes.count("minimal", "binary", 4, 2)
    assert dict(minimal_statuses) == {200: 8}
    # The minimal server runs a fraction of weightserve's Python: no validation, metrics or statistics.
    assert sum(minimal.by_function.values()) < sum(tally.by_function.values()) / 2
    text = opcodes.report(tally, requests, top=3)
    assert text.splitlines()[0].endswith("bytecode instructions per request (8 requests)")
    assert "service/serving/inference.py:infer" in text
