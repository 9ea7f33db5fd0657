"""The benchmark: onnxruntime in-process, the bare-ASGI ceiling, the minimal server, the naive server
and weightserve under identical wrk load.

    python -m bench [--seconds 10] [--workers N] [--connections 1,8,64] [--skip-naive] [--skip-ceiling]
                    [--skip-minimal] [--env KEY=VALUE]

Everything runs on 127.0.0.1 in one go; models are generated into a temporary repository.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import onnxruntime as ort

from bench import inprocess, servers, wrk
from bench.bodies import Body, binary_body, decode_output, json_body
from bench.models import SMALL, WIDE, MlpShape, sample, write_repository


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


def _mean_batch(server: servers.Server, model: str) -> float:
    """Rows per execution, over every worker (the statistics are the server's, whichever worker answers)."""
    with httpx.Client() as client:
        stats = client.get(f"{server.url}/v2/models/{model}/stats").json()["model_stats"][0]
    return float(stats["inference_count"]) / max(1, int(stats["execution_count"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load run (default 10)")
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
            shape.name: (json_body(sample(shape), folder, shape.name), binary_body(sample(shape), folder, shape.name))
            for shape in (SMALL, WIDE)
        }
        sessions = {
            shape.name: inprocess.session(repository / shape.name / "1" / "model.onnx") for shape in (SMALL, WIDE)
        }
        ceiling = {
            "small b=1": inprocess.samples_per_s(sessions[SMALL.name], SMALL, 1, 2.0),
            "small b=64": inprocess.samples_per_s(sessions[SMALL.name], SMALL, 64, 2.0),
            "wide b=64": inprocess.samples_per_s(sessions[WIDE.name], WIDE, 64, 2.0),
        }
        for key, value in ceiling.items():
            print(f"onnxruntime in-process {key:<11} {value:>9.0f} samples/s", flush=True)
        rows: list[Row] = []
        if not args.skip_ceiling:
            server = servers.ceiling(folder / "ceiling.log", workers)
            try:
                server.wait_ready()
                rows += [_load(server, SMALL, bodies[SMALL.name][0], c, args.seconds) for c in levels]
                rows.append(_load(server, SMALL, bodies[SMALL.name][1], max(levels), args.seconds))
            finally:
                server.stop()
        if not args.skip_minimal:
            server = servers.minimal(repository / SMALL.name / "1" / "model.onnx", folder / "minimal.log", workers)
            try:
                server.wait_ready()
                for body in bodies[SMALL.name]:
                    _check(server, SMALL, body, sessions[SMALL.name])
                    rows.append(_load(server, SMALL, body, max(levels), args.seconds))
            finally:
                server.stop()
        if not args.skip_naive:
            server = servers.naive(repository, folder / "naive.log")
            try:
                server.wait_ready()
                for shape in (SMALL, WIDE):
                    _check(server, shape, bodies[shape.name][0], sessions[shape.name])
                rows += [_load(server, SMALL, bodies[SMALL.name][0], c, args.seconds) for c in levels]
                rows.append(_load(server, WIDE, bodies[WIDE.name][0], max(levels), args.seconds))
            finally:
                server.stop()
        server = servers.weightserve(repository, folder / "weightserve.log", workers, extra)
        try:
            server.wait_ready()
            for shape in (SMALL, WIDE):
                for body in bodies[shape.name]:
                    _check(server, shape, body, sessions[shape.name])
            for body in bodies[SMALL.name]:
                rows += [_load(server, SMALL, body, c, args.seconds) for c in levels]
            rows += [_load(server, WIDE, body, max(levels), args.seconds) for body in bodies[WIDE.name]]
            wide_batch = _mean_batch(server, WIDE.name)
        finally:
            server.stop()
        batch = max(1, round(wide_batch))
        ceiling[f"wide b={batch}"] = inprocess.samples_per_s(sessions[WIDE.name], WIDE, batch, 3.0)
        print(
            f"onnxruntime in-process wide b={batch:<5} {ceiling[f'wide b={batch}']:>9.0f} samples/s "
            f"(weightserve's mean batch on {WIDE.name}: {wide_batch:.1f})"
        )
    print(f"load after:  {_uptime()}")
    _report(rows, levels, ceiling[f"wide b={batch}"], batch)
    return 0


def _default_workers(extra: dict[str, str]) -> int:
    """weightserve's own default worker count, so the ceiling runs as many processes."""
    from service.settings import available_cores

    configured = extra.get("WEIGHTSERVE_WORKERS") or os.environ.get("WEIGHTSERVE_WORKERS")
    return int(configured) if configured else available_cores()


Check = tuple[str, float | None, float, bool]
"""(label, measured value, bound, whether the value must be at least the bound)."""


def _ratio(a: Row | None, b: Row | None) -> float | None:
    return a.load.rps / b.load.rps if a and b and b.load.rps else None


def _report(rows: list[Row], levels: list[int], wide_ceiling: float, batch: int) -> None:
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
    print("\ntargets")
    for label, value, bound, at_least in _checks(rows, levels, wide_ceiling, batch):
        if value is None:
            print(f"  {label:<48} not measured")
            continue
        ok = value >= bound if at_least else value <= bound
        print(f"  {label:<48} {value:8.2f}  {'met' if ok else 'MISSED'}")


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
    checks.append((f"small json c={top} cpu <= 120 us/req", json_top.cpu_us if json_top else None, 120.0, False))
    checks.append((f"small json c={top} p99 <= 25 ms", json_top.load.p99_ms if json_top else None, 25.0, False))
    checks.append((f"small binary c={top} p99 <= 25 ms", binary.load.p99_ms if binary else None, 25.0, False))
    share = wide.load.rps / wide_ceiling if wide else None
    checks.append((f"wide c={top} >= 80% of in-process b={batch}", share, 0.80, True))
    return checks


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
