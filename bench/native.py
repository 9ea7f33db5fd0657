"""Where a request's CPU goes, by library: the ceiling, the minimal server and weightserve side by side.

    python -m bench.native [--seconds 8] [--connections 64] [--body json] [--rounds 1] [--env KEY=VALUE]

``python -m bench.profile`` sees Python frames only: time spent in C (simdjson's parse, onnxruntime,
numpy, the kernel's socket work) shows up under whichever Python frame called it, and the
interpreter's own cost cannot be told apart from the code it runs. Here Linux's ``perf`` (the
``linux-perf`` package; root, or ``kernel.perf_event_paranoid`` at most 1) samples every thread of
each server at ``RATE`` Hz while wrk loads it, and each sample counts for the library it was taken
in. Divided by the requests served, that is microseconds of CPU per request per library.

The three servers run the same HTTP stack (uvicorn, httptools, uvloop) with the same worker count, so
the ceiling's interpreter time is what the stack's own Python costs per request; what a server's
interpreter time exceeds it by is the Python that server runs on top: for the minimal server the
happy path of a batching model server, for weightserve everything it adds (validation, request ids,
metrics, statistics, the lease on the model version). The servers are started first and measured
one right after the other, in a rotating order when ``--rounds`` is above 1.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from bench import servers, wrk
from bench.bodies import Body, binary_body, json_body
from bench.models import SMALL, sample, write_repository
from bench.profile import load_while_recording

RATE = 1999
"""Samples per second and thread (odd, so that sampling does not beat with a periodic timer)."""

# (row, fragments of a shared object's name); the first row one fragment of which is in the name wins.
LIBRARIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Python interpreter", ("libpython", "python3")),
    ("onnxruntime", ("onnxruntime",)),
    ("simdjson (JSON parse)", ("simdjson",)),
    ("weightserve's JSON reader (C)", ("_infer_json",)),
    ("numpy, BLAS", ("_multiarray", "openblas", "_umath")),
    ("orjson", ("orjson",)),
    ("uvloop", ("uvloop", "loop.cpython")),
    ("httptools", ("httptools", "parser.cpython", "url_parser.cpython")),
    ("asyncio's C part", ("_asyncio",)),
    ("libc (memcpy, malloc)", ("libc.so", "libc-", "libm.so", "libstdc++")),
    ("kernel (sockets, scheduling)", ("[kernel",)),
)
OTHER = "other"
INTERPRETER = LIBRARIES[0][0]


def library_of(shared_object: str) -> str:
    """The row a sample taken in ``shared_object`` (as perf names it) counts for."""
    for row, fragments in LIBRARIES:
        if any(fragment in shared_object for fragment in fragments):
            return row
    return OTHER


def read_report(lines: Iterable[str]) -> Counter[str]:
    """Samples per row from ``perf report --stdio --sort dso -n``: ``<share>% <samples> <shared object>``
    per line, ``#`` lines being comments."""
    counts: Counter[str] = Counter()
    for line in lines:
        fields = line.split(None, 2)
        if len(fields) == 3 and fields[0].endswith("%") and fields[1].isdigit():
            counts[library_of(fields[2].strip())] += int(fields[1])
    return counts


def per_request_us(counts: Counter[str], requests: int) -> dict[str, float]:
    """Each row's samples as microseconds of CPU per request."""
    return {row: samples / RATE / max(1, requests) * 1e6 for row, samples in counts.items()}


def _perf() -> str:
    found = shutil.which("perf")
    if found is None:
        raise SystemExit("perf is not installed (apt-get install linux-perf)")
    return found


def _measure(
    server: servers.Server, url: str, body: Body, connections: int, seconds: float, out: Path
) -> tuple[dict[str, float], float, float]:
    """(µs per request by row, requests per second, server CPU µs per request from /proc) of one load run."""
    pids = ",".join(str(pid) for pid in server.pids())
    recorder = [_perf(), "record", "--freq", str(RATE), "--pid", pids, "--output", str(out), "--quiet",
                "--", "sleep", str(seconds + 1)]  # fmt: skip
    result, cpu_us = load_while_recording(recorder, server, url, body, connections, seconds)
    report = subprocess.run(
        [_perf(), "report", "--input", str(out), "--stdio", "--sort", "dso", "--show-nr-samples"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if report.returncode != 0 or not report.stdout:
        raise SystemExit(f"perf could not sample {server.label}: {report.stderr.strip()[:300]}")
    # perf samples from before the load starts to after it ends (idle threads give no samples).
    return per_request_us(read_report(report.stdout.splitlines()), result.requests), result.rps, cpu_us


def _print(results: dict[str, list[tuple[dict[str, float], float, float]]]) -> None:
    labels = list(results)
    medians = {label: _median_run(runs) for label, runs in results.items()}
    print("\nµs of CPU per request, by library (perf samples / rate / requests)")
    print(f"  {'':<30}" + "".join(f"{label:>14}" for label in labels))
    rows = [row for row, _ in LIBRARIES] + [OTHER]
    for row in rows:
        values = [medians[label][0].get(row, 0.0) for label in labels]
        if any(values):
            print(f"  {row:<30}" + "".join(f"{value:14.1f}" for value in values))
    print(f"  {'total sampled':<30}" + "".join(f"{sum(medians[label][0].values()):14.1f}" for label in labels))
    print(f"  {'server CPU from /proc':<30}" + "".join(f"{medians[label][2]:14.1f}" for label in labels))
    print(f"  {'requests per second':<30}" + "".join(f"{medians[label][1]:14.0f}" for label in labels))
    floor = medians[labels[0]][0].get(INTERPRETER, 0.0)
    for label in labels[1:]:
        above = medians[label][0].get(INTERPRETER, 0.0) - floor
        print(f"  {label}: {above:.1f} µs per request of Python above the ceiling's (the stack's own)")


def _median_run(runs: list[tuple[dict[str, float], float, float]]) -> tuple[dict[str, float], float, float]:
    """The run with the median throughput (one whole run, so its rows add up)."""
    return sorted(runs, key=lambda run: run[1])[len(runs) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.native", description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--body", choices=("json", "binary"), default="json")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="a weightserve setting")
    args = parser.parse_args(argv)
    _perf()
    extra = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory(prefix="weightserve-native-") as tmp:
        folder = Path(tmp)
        repository = write_repository(folder / "models", (SMALL,))
        maker = json_body if args.body == "json" else binary_body
        body = maker(sample(SMALL), folder, SMALL.name)
        model = repository / SMALL.name / "1" / "model.onnx"
        started = [
            (servers.ceiling(folder / "ceiling.log", args.workers), "/"),
            (servers.minimal(model, folder / "minimal.log", args.workers), "/"),
            (
                servers.weightserve(repository, folder / "weightserve.log", args.workers, extra),
                f"/v2/models/{SMALL.name}/infer",
            ),
        ]
        results: dict[str, list[tuple[dict[str, float], float, float]]] = {s.label: [] for s, _ in started}
        try:
            for server, path in started:
                server.wait_ready()
                wrk.run(server.url + path, body, args.connections, 2.0)  # warm
            for round_ in range(args.rounds):
                shift = round_ % len(started)
                for server, path in started[shift:] + started[:shift]:
                    out = folder / f"{server.label}-{round_}.data"
                    results[server.label].append(
                        _measure(server, server.url + path, body, args.connections, args.seconds, out)
                    )
        finally:
            for server, _ in started:
                server.stop()
    print(f"c={args.connections} {args.body}, {args.workers} workers, {args.seconds:g} s a run, rounds: {args.rounds}")
    _print(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
