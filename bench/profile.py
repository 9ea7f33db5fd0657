"""Where a request's CPU goes: weightserve under wrk load with py-spy sampling every server process.

    python -m bench.profile [--seconds 10] [--connections 1,64] [--body json] [--model mlp_small] [--env KEY=VALUE]

For each concurrency level it runs the request-bound model (or ``--model mlp_wide``, the compute-bound
one) under closed-loop load, samples every
thread of every server process with py-spy, and prints each part of the request path as its share of
the samples of working threads, and that share of the server's CPU per request as measured from
/proc. Samples of threads that wait (a condition, a queue) are left out. Samples whose innermost
Python frame is the event loop itself are uvloop's C code: socket reads and writes, and at low load
also waiting in epoll, which py-spy cannot tell apart here (so that row is an upper bound at c=1).
Kernel time is spread over the rows in proportion. py-spy pauses the processes for each sample and
takes CPU of its own on the same cores, so the throughput figures of ``python -m bench`` come from a
run without it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from bench import servers, wrk
from bench.bodies import Body, binary_body, json_body
from bench.models import SMALL, WIDE, sample, write_repository

# (part of the request path, frame file fragments); a sample counts for the innermost frame that matches.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("onnxruntime run", ("onnxruntime/",)),
    ("metrics (prometheus-client)", ("prometheus_client/",)),
    ("statistics (Triton counters)", ("serving/triton_stats.py", "ops/counters.py")),
    ("request plan (compiled JSON read, checks)", ("protocol/request_plan.py", "protocol/native_json.py")),
    ("request JSON parse", ("protocol/fast_json.py", "protocol/request.py", "protocol/compression.py")),
    ("decode to numpy feeds", ("protocol/decode.py", "protocol/signature.py")),
    ("encode response", ("protocol/encode.py",)),
    ("batching, runner threads", ("serving/batching.py", "serving/admission.py", "threading.py", "anyio/")),
    ("inference glue (lease, outcome)", ("serving/inference.py", "serving/loaded_version.py", "serving/registry.py")),
    ("request ids, logging", ("ops/logs.py", "logging/", "contextvars")),
    ("middleware, infer fast path", ("http/middleware.py", "http/infer_fast_path.py", "http/error_responses.py")),
    ("Litestar", ("litestar/",)),
    ("uvicorn, httptools", ("uvicorn/", "httptools/")),
    ("event loop, sockets", ("asyncio/", "uvloop/", "selectors.py")),
)
RATE = 200
"""Samples per second and thread."""
OTHER = "other Python code"
IDLE = "waiting"
LOOP = "event loop's C code"
_WAITS = (
    "Condition.wait (threading.py",
    "Event.wait (threading.py",
    "Queue.get (queue.py",
    "_worker (concurrent/futures/thread.py",
    "select (selectors.py",
)
_LOOP_LEAVES = ("Runner.run (asyncio/runners.py", "run (asyncio/runners.py", "run_forever (asyncio/")


def classify(stack: str) -> str:
    """The part of a collapsed stack (outermost frame first, ``;``-separated) its innermost match names."""
    frames = stack.split(";")
    leaf = frames[-1]
    if leaf.startswith(_WAITS):
        return IDLE
    if leaf.startswith(_LOOP_LEAVES):
        return LOOP
    for frame in reversed(frames):
        for part, fragments in PARTS:
            if any(fragment in frame for fragment in fragments):
                return part
    return OTHER


def read_collapsed(lines: Iterable[str]) -> Counter[str]:
    """Samples per part from py-spy's raw (collapsed) output: ``frame;frame;... count`` per line."""
    counts: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            counts[classify(stack)] += int(count)
    return counts


def _profile(server: servers.Server, url: str, body: Body, connections: int, seconds: float, out: Path) -> None:
    beside = Path(sys.executable).with_name("py-spy")  # installed in the same environment
    spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed (pip install py-spy, or the dev extra)")
    root = server.pids()[0]
    recorder = [spy, "record", "--pid", str(root), "--subprocesses", "--rate", str(RATE),
                "--format", "raw", "--output", str(out), "--duration", str(int(seconds))]  # fmt: skip
    result, cpu_us = load_while_recording(recorder, server, url, body, connections, seconds)
    counts = read_collapsed(out.read_text().splitlines()) if out.exists() else Counter()
    print(
        f"\nc={connections} {body.kind}: {result.rps:.0f} req/s, p50 {result.p50_ms:.2f} ms, "
        f"server CPU {cpu_us:.0f} us/req (under the profiler), {sum(counts.values())} samples"
    )
    working = sum(count for part, count in counts.items() if part != IDLE) or 1
    for part, _ in (*PARTS, (OTHER, ()), (LOOP, ())):
        share = counts.get(part, 0) / working
        if share:
            print(f"  {part:<34} {share:6.1%}  {share * cpu_us:6.1f} us/req")


def load_while_recording(
    recorder: list[str], server: servers.Server, url: str, body: Body, connections: int, seconds: float
) -> tuple[wrk.LoadResult, float]:
    """wrk's load on ``server`` with a sampling profiler (``recorder``, a command that stops by itself
    after about ``seconds``) attached from before it starts: the load's result, and the server's CPU
    µs per request from /proc."""
    recording = subprocess.Popen(recorder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached before the load starts
    before = server.cpu_s()
    result = wrk.run(url, body, connections, seconds)
    cpu_us = (server.cpu_s() - before) / max(1, result.requests) * 1e6
    recording.wait(timeout=seconds + 60)
    return result, cpu_us


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", default="1,64")
    parser.add_argument("--body", choices=("json", "binary"), default="json")
    parser.add_argument("--model", choices=(SMALL.name, WIDE.name), default=SMALL.name)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--keep", type=Path, help="folder to keep py-spy's raw stacks in")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory(prefix="weightserve-profile-") as tmp:
        folder = Path(tmp)
        shape = WIDE if args.model == WIDE.name else SMALL
        repository = write_repository(folder / "models", (shape,))
        maker = json_body if args.body == "json" else binary_body
        body = maker(sample(shape), folder, shape.name)
        server = servers.weightserve(repository, folder / "weightserve.log", args.workers, extra)
        try:
            server.wait_ready()
            url = f"{server.url}/v2/models/{shape.name}/infer"
            wrk.run(url, body, 8, 2.0)  # warm
            for connections in (int(c) for c in args.connections.split(",")):
                out = (args.keep or folder) / f"stacks-c{connections}-{args.body}.txt"
                out.parent.mkdir(parents=True, exist_ok=True)
                _profile(server, url, body, connections, args.seconds, out)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
