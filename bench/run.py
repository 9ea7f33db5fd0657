"""The benchmark: onnxruntime in-process, the bare-ASGI ceiling, the minimal server, the naive server
and weightserve under identical wrk load, and the floor no server can go below here (``bench.floor``).

    python -m bench [--seconds 10] [--rounds 1] [--workers N] [--connections 1,8,64] [--skip-naive]
                    [--skip-ceiling] [--skip-minimal] [--env KEY=VALUE]

Everything runs on 127.0.0.1 in one go; models are generated into a temporary repository. Every server
is started first and the load runs are interleaved: each load point (model, body, connections) is
measured on every server that serves it, one right after the other, in an order that rotates from
point to point and round to round; JSON and binary at one concurrency run one after the other. A
machine whose speed drifts during a run (a shared virtual machine can gain or lose a fifth within
minutes) then shifts every server's figure alike, so the ratios stay fair. With ``--rounds N`` each
point is measured N times and the report uses each server's median.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import onnxruntime as ort

from bench import floor, inprocess, servers, wrk
from bench.bodies import Body, binary_body, decode_output, json_body
from bench.models import SMALL, WIDE, MlpShape, sample, write_repository


@dataclass(frozen=True, slots=True)
class Point:
    """One load point: a model, a body kind and a concurrency."""

    shape: MlpShape
    body: str
    connections: int


@dataclass(frozen=True, slots=True)
class Row:
    server: str
    model: str
    body: str
    connections: int
    load: wrk.LoadResult
    cpu_us: float
    """Server CPU time (all its processes) per request, microseconds."""


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def _check(server: servers.Server, shape: MlpShape, body: Body, reference: ort.InferenceSession) -> None:
    """One request before the load: the server must answer 200 with onnxruntime's own numbers."""
    headers = {"Content-Type": body.content_type}
    if body.header_length:
        headers["Inference-Header-Content-Length"] = body.header_length
    response = httpx.post(f"{server.url}/v2/models/{shape.name}/infer", content=body.path.read_bytes(), headers=headers)
    if response.status_code != 200:
        raise RuntimeError(
            f"{server.label} {shape.name} {body.kind}: HTTP {response.status_code} {response.text[:300]}"
        )
    output = decode_output(response.content, response.headers.get("inference-header-content-length"))
    if not inprocess.check_outputs(reference, shape, output):
        raise RuntimeError(f"{server.label} {shape.name} {body.kind}: outputs differ from onnxruntime in-process")


def _load(server: servers.Server, shape: MlpShape, body: Body, connections: int, seconds: float) -> Row:
    before = server.cpu_s()
    result = wrk.run(f"{server.url}/v2/models/{shape.name}/infer", body, connections, seconds)
    spent = server.cpu_s() - before
    cpu_us = spent / result.requests * 1e6 if result.requests else float("nan")
    row = Row(server.label, shape.name, body.kind, connections, result, cpu_us)
    print(_format(row), flush=True)
    return row


def _format(row: Row) -> str:
    r = row.load
    return (
        f"{row.server:<12} {row.model:<10} {row.body:<7} c={row.connections:<3} {r.rps:>9.0f} req/s"
        f"  p50 {r.p50_ms:>7.2f} ms  p99 {r.p99_ms:>7.2f} ms  cpu {row.cpu_us:>6.0f} us/req  errors {r.errors}"
    )


def _find(rows: list[Row], server: str, model: str, body: str, connections: int) -> Row | None:
    for row in rows:
        if (row.server, row.model, row.body, row.connections) == (server, model, body, connections):
            return row
    return None


def schedule(points: dict[str, list[Point]], rounds: int) -> list[tuple[str, Point]]:
    """The load runs in order: ``points`` lists what each server (by label) is measured at. Point by point,
    the servers that serve it run back to back; their order rotates by one from point to point and from
    round to round, so that none is always measured first. The points go model by model (in the order
    they first appear), by concurrency, JSON before binary: the two bodies at one concurrency, which
    the binary targets compare, run one right after the other."""
    models: list[str] = []
    distinct: list[Point] = []
    for wanted in points.values():
        models += [point.shape.name for point in wanted if point.shape.name not in models]
        distinct += [point for point in wanted if point not in distinct]
    order = sorted(distinct, key=lambda p: (models.index(p.shape.name), p.connections, p.body != "json"))
    runs: list[tuple[str, Point]] = []
    for round_index in range(rounds):
        for index, point in enumerate(order):
            serving = [label for label, wanted in points.items() if point in wanted]
            turn = (index + round_index) % len(serving)
            runs += [(label, point) for label in serving[turn:] + serving[:turn]]
    return runs


def medians(rows: list[Row]) -> list[Row]:
    """One row per server and point: the one with the median throughput of its rounds (the upper one of
    an even count), in the order the points were first measured."""
    groups: dict[tuple[str, str, str, int], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.server, row.model, row.body, row.connections), []).append(row)
    return [sorted(group, key=lambda r: r.load.rps)[len(group) // 2] for group in groups.values()]


def _points(levels: list[int], args: argparse.Namespace) -> dict[str, list[Point]]:
    """What each server is measured at (labels as the servers report them)."""
    top = max(levels)
    small_json = [Point(SMALL, "json", c) for c in levels]
    points: dict[str, list[Point]] = {}
    if not args.skip_ceiling:
        points["bare-asgi"] = [*small_json, Point(SMALL, "binary", top)]
    if not args.skip_minimal:
        points["minimal"] = [Point(SMALL, "json", top), Point(SMALL, "binary", top)]
    if not args.skip_naive:
        points["naive"] = [*small_json, Point(WIDE, "json", top)]
    points["weightserve"] = [
        *(Point(SMALL, body, c) for c in levels for body in ("json", "binary")),
        Point(WIDE, "json", top),
        Point(WIDE, "binary", top),
    ]
    return points


def _mean_batch(server: servers.Server, model: str) -> float:
    """Rows per execution, over every worker (the statistics are the server's, whichever worker answers)."""
    with httpx.Client() as client:
        stats = client.get(f"{server.url}/v2/models/{model}/stats").json()["model_stats"][0]
    return float(stats["inference_count"]) / max(1, int(stats["execution_count"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load run (default 10)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure every point this many times; report medians (default 1)"
    )
    parser.add_argument("--workers", type=int, help="weightserve processes (default: its own default)")
    parser.add_argument("--connections", default="1,8,64", help="concurrency levels (default 1,8,64)")
    parser.add_argument("--skip-naive", action="store_true", help="measure weightserve only")
    parser.add_argument("--skip-ceiling", action="store_true", help="leave out the bare-ASGI ceiling")
    parser.add_argument(
        "--skip-minimal", action="store_true", help="leave out the minimal server (happy path only, no features)"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="extra setting for weightserve (repeatable)"
    )
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.connections.split(",")]
    extra = dict(item.split("=", 1) for item in args.env)
    workers = args.workers or _default_workers(extra)
    print(f"load before: {_uptime()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="weightserve-bench-") as tmp:
        folder = Path(tmp)
        repository = write_repository(folder / "models")
        bodies = {
            shape.name: {
                "json": json_body(sample(shape), folder, shape.name),
                "binary": binary_body(sample(shape), folder, shape.name),
            }
            for shape in (SMALL, WIDE)
        }
        sessions = {
            shape.name: inprocess.session(repository / shape.name / "1" / "model.onnx") for shape in (SMALL, WIDE)
        }
        ceiling = {
            "small b=1": inprocess.samples_per_s(sessions[SMALL.name], SMALL, 1, 2.0),
            "small b=1 cold": inprocess.cold_samples_per_s(sessions[SMALL.name], SMALL, 1, 2.0),
            "small b=64": inprocess.samples_per_s(sessions[SMALL.name], SMALL, 64, 2.0),
            "wide b=64": inprocess.samples_per_s(sessions[WIDE.name], WIDE, 64, 2.0),
        }
        for key, value in ceiling.items():
            print(f"onnxruntime in-process {key:<14} {value:>9.0f} samples/s", flush=True)
        # At the top concurrency no worker's batch can hold more than its share of the connections.
        floor_parts = floor.measure(
            repository / SMALL.name / "1" / "model.onnx",
            SMALL,
            max(1, min(64, max(levels) // workers)),
            bodies[SMALL.name]["json"].path.read_bytes(),
            2.0,
        )
        print(
            f"floor parts: small run {floor_parts.model_us:.1f} us/sample (b={floor_parts.batch}, one thread, "
            f"warm), reading a json body's numbers {floor_parts.read_us:.1f} us",
            flush=True,
        )
        points = _points(levels, args)
        with contextlib.ExitStack() as stack:
            started: dict[str, servers.Server] = {}
            for label in points:
                server = _start(label, repository, folder, workers, extra)
                stack.callback(server.stop)
                started[label] = server
            for label, server in started.items():
                server.wait_ready()
                if label == "bare-asgi":  # a fixed reply, by design
                    continue
                for shape, kind in dict.fromkeys((point.shape, point.body) for point in points[label]):
                    _check(server, shape, bodies[shape.name][kind], sessions[shape.name])
            rows: list[Row] = []
            for label, point in schedule(points, args.rounds):
                body = bodies[point.shape.name][point.body]
                rows.append(_load(started[label], point.shape, body, point.connections, args.seconds))
            wide_batch = _mean_batch(started["weightserve"], WIDE.name)
        if args.rounds > 1:
            rows = medians(rows)
            print(f"\nmedians of {args.rounds} rounds")
            for row in rows:
                print(_format(row))
        batch = max(1, round(wide_batch))
        ceiling[f"wide b={batch}"] = inprocess.samples_per_s(sessions[WIDE.name], WIDE, batch, 3.0)
        print(
            f"onnxruntime in-process wide b={batch:<5} {ceiling[f'wide b={batch}']:>9.0f} samples/s "
            f"(weightserve's mean batch on {WIDE.name}: {wide_batch:.1f})"
        )
    print(f"load after:  {_uptime()}")
    _report(rows, levels, ceiling[f"wide b={batch}"], batch, floor_parts)
    return 0


def _start(label: str, repository: Path, folder: Path, workers: int, extra: dict[str, str]) -> servers.Server:
    if label == "bare-asgi":
        return servers.ceiling(folder / "ceiling.log", workers)
    if label == "minimal":
        return servers.minimal(repository / SMALL.name / "1" / "model.onnx", folder / "minimal.log", workers)
    if label == "naive":
        return servers.naive(repository, folder / "naive.log")
    return servers.weightserve(repository, folder / "weightserve.log", workers, extra)


def _default_workers(extra: dict[str, str]) -> int:
    """weightserve's own default worker count, so the ceiling runs as many processes."""
    from service.settings import available_cores

    configured = extra.get("WEIGHTSERVE_WORKERS") or os.environ.get("WEIGHTSERVE_WORKERS")
    return int(configured) if configured else available_cores()


CPU_TARGET_US = 120.0
"""Server CPU per JSON request at the top concurrency, the target."""

Check = tuple[str, float | None, float, bool]
"""(label, measured value, bound, whether the value must be at least the bound)."""


def _ratio(a: Row | None, b: Row | None) -> float | None:
    return a.load.rps / b.load.rps if a and b and b.load.rps else None


def _report(
    rows: list[Row], levels: list[int], wide_ceiling: float, batch: int, floor_parts: floor.Floor | None = None
) -> None:
    top = max(levels)
    print("\nratios")
    for c in levels:
        ws_json = _find(rows, "weightserve", SMALL.name, "json", c)
        ws_binary = _find(rows, "weightserve", SMALL.name, "binary", c)
        naive = _find(rows, "naive", SMALL.name, "json", c)
        bare = _find(rows, "bare-asgi", SMALL.name, "json", c)
        print(f"  small json c={c:<3} weightserve / naive          {_ratio(ws_json, naive) or float('nan'):6.2f}x")
        print(f"  small c={c:<3}      weightserve binary / json    {_ratio(ws_binary, ws_json) or float('nan'):6.2f}x")
        print(f"  small json c={c:<3} weightserve / bare ASGI      {_ratio(ws_json, bare) or float('nan'):6.1%}")
        print(f"  small c={c:<3}      binary / bare ASGI (json)    {_ratio(ws_binary, bare) or float('nan'):6.1%}")
    bare_binary = _find(rows, "bare-asgi", SMALL.name, "binary", top)
    ws_binary_top = _find(rows, "weightserve", SMALL.name, "binary", top)
    share = _ratio(ws_binary_top, bare_binary) or float("nan")
    print(f"  small c={top:<3}      binary / bare ASGI (binary)  {share:6.1%}")
    for body in ("json", "binary"):
        least = _find(rows, "minimal", SMALL.name, body, top)
        bare = _find(rows, "bare-asgi", SMALL.name, "json", top)
        mine = _find(rows, "weightserve", SMALL.name, body, top)
        print(f"  small {body:<6} c={top:<3} minimal / bare ASGI (json)  {_ratio(least, bare) or float('nan'):6.1%}")
        print(f"  small {body:<6} c={top:<3} weightserve / minimal       {_ratio(mine, least) or float('nan'):6.1%}")
    # The targets in µs and ms hold on one machine only; the ceiling's own figures, from the same run,
    # say how fast this machine is.
    for body in ("json", "binary"):
        bare = _find(rows, "bare-asgi", SMALL.name, body, top)
        mine = _find(rows, "weightserve", SMALL.name, body, top)
        if bare and mine and bare.cpu_us and bare.load.p99_ms:
            print(
                f"  small {body:<6} c={top:<3} weightserve / bare ASGI: CPU per request "
                f"{mine.cpu_us / bare.cpu_us:5.2f}x, p99 {mine.load.p99_ms / bare.load.p99_ms:5.2f}x"
            )
    bare_json = _find(rows, "bare-asgi", SMALL.name, "json", top)
    lowest = floor_parts.total_us(bare_json.cpu_us) if floor_parts and bare_json and bare_json.cpu_us else None
    if floor_parts is not None and bare_json is not None and lowest is not None:
        print(
            f"  small json   c={top:<3} floor for any server here: ceiling {bare_json.cpu_us:.1f} + run "
            f"{floor_parts.model_us:.1f} (b={floor_parts.batch}) + numbers {floor_parts.read_us:.1f} = "
            f"{lowest:.1f} us CPU per request"
        )
    print("\ntargets")
    for label, value, bound, at_least in _checks(rows, levels, wide_ceiling, batch):
        if value is None:
            print(f"  {label:<48} not measured")
            continue
        ok = value >= bound if at_least else value <= bound
        print(f"  {label:<48} {value:8.2f}  {'met' if ok else 'MISSED'}")
    if lowest is not None and lowest > CPU_TARGET_US:
        print(f"  (the cpu target is below the floor of {lowest:.1f} us: out of reach for any server on this machine)")


def _checks(rows: list[Row], levels: list[int], wide_ceiling: float, batch: int) -> list[Check]:
    top = max(levels)
    ws = {c: _find(rows, "weightserve", SMALL.name, "json", c) for c in levels}
    nv = {c: _find(rows, "naive", SMALL.name, "json", c) for c in levels}
    binary = _find(rows, "weightserve", SMALL.name, "binary", top)
    bare = _find(rows, "bare-asgi", SMALL.name, "json", top)
    wide = max(
        (r for r in rows if r.server == "weightserve" and r.model == WIDE.name), key=lambda r: r.load.rps, default=None
    )
    checks: list[Check] = []
    one, naive_one = ws.get(1), nv.get(1)
    if one and naive_one:
        checks.append(("small json c=1 p50 <= naive p50 (ms)", one.load.p50_ms, naive_one.load.p50_ms, False))
    if 8 in levels:
        checks.append(("small json c=8 >= 2.7x naive", _ratio(ws[8], nv[8]), 2.7, True))
    checks.append((f"small json c={top} >= 3.5x naive", _ratio(ws[top], nv[top]), 3.5, True))
    checks.append((f"small json c={top} >= 40% of bare ASGI", _ratio(ws[top], bare), 0.40, True))
    checks.append((f"small binary c={top} >= 50% of bare ASGI", _ratio(binary, bare), 0.50, True))
    checks.append((f"small binary c={top} >= 1.3x json", _ratio(binary, ws[top]), 1.3, True))
    json_top = ws[top]
    cpu = json_top.cpu_us if json_top else None
    checks.append((f"small json c={top} cpu <= {CPU_TARGET_US:.0f} us/req", cpu, CPU_TARGET_US, False))
    checks.append((f"small json c={top} p99 <= 25 ms", json_top.load.p99_ms if json_top else None, 25.0, False))
    checks.append((f"small binary c={top} p99 <= 25 ms", binary.load.p99_ms if binary else None, 25.0, False))
    share = wide.load.rps / wide_ceiling if wide else None
    checks.append((f"wide c={top} >= 80% of in-process b={batch}", share, 0.80, True))
    return checks


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
