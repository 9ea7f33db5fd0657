"""Benchmark: every per-tensor statistic of a ~100M-parameter ONNX model stored as external data.

    python bench/weights_bench.py [--params 100e6] [--workdir DIR]

Builds an MLP of Gemm layers whose weights live in ``model.onnx.data`` (written tensor by tensor,
never held whole in memory), then times the weight store computing every statistic of every tensor,
cold and then cached, and reports peak memory: numpy/Python allocations (tracemalloc) and the
process's peak resident set beyond what it held before (which also counts the memory-mapped pages
of the model file itself). Targets: under 10 s, allocations under 2x the largest tensor.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from service.settings import WeightSettings
from service.weights.report import model_report
from service.weights.store import WeightStore

HIDDEN = (4096, 3072)


def build_model(folder: Path, params: float, seed: int = 0) -> tuple[Path, int, int]:
    """Write model.onnx + model.onnx.data; returns the path, parameter count and largest tensor bytes."""
    rng = np.random.default_rng(seed)
    out_dim, in_dim = HIDDEN
    layers = max(1, round(params / (out_dim * in_dim + out_dim)))
    data_path = folder / "model.onnx.data"
    inits, nodes, offset, total, largest = [], [], 0, 0, 0
    x = "input"
    with data_path.open("wb") as data:
        for i in range(layers):
            shape_w = (out_dim if i % 2 == 0 else in_dim, in_dim if i % 2 == 0 else out_dim)
            for name, shape in ((f"fc{i}.weight", shape_w), (f"fc{i}.bias", (shape_w[0],))):
                count = int(np.prod(shape))
                for start in range(0, count, 1 << 22):  # 16 MiB at a time
                    chunk = rng.standard_normal(min(1 << 22, count - start), dtype=np.float32) * 0.02
                    data.write(chunk.tobytes())
                proto = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape)
                proto.data_location = TensorProto.EXTERNAL
                for key, value in (("location", data_path.name), ("offset", offset), ("length", count * 4)):
                    entry = proto.external_data.add()
                    entry.key, entry.value = key, str(value)
                inits.append(proto)
                offset += count * 4
                total += count
                largest = max(largest, count * 4)
            y = f"h{i}"
            nodes.append(helper.make_node("Gemm", [x, f"fc{i}.weight", f"fc{i}.bias"], [y], transB=1))
            x = y
    first_in = in_dim
    last_out = out_dim if (layers - 1) % 2 == 0 else in_dim
    graph = helper.make_graph(
        nodes,
        "bench_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", first_in])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", last_out])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model_path = folder / "model.onnx"
    model_path.write_bytes(model.SerializeToString())
    onnx.checker.check_model(str(model_path))
    return model_path, total, largest


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run(params: float, workdir: Path) -> dict[str, object]:
    began = time.perf_counter()
    model_path, total, largest = build_model(workdir, params)
    built_s = time.perf_counter() - began
    store = WeightStore(WeightSettings())
    rss_before = _maxrss_bytes()
    tracemalloc.start()
    began, cpu_began = time.perf_counter(), time.process_time()
    version = store.open("bench", model_path)
    for tensor in version.graph.tensors.values():
        store.stats(version, tensor)
    stats_s = time.perf_counter() - began
    stats_cpu_s = time.process_time() - cpu_began
    _, peak_alloc = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_peak = _maxrss_bytes() - rss_before
    began = time.perf_counter()
    report = model_report(store, version, "bench", 1)  # adds spectral metrics (budgeted) and the listing
    report_s = time.perf_counter() - began
    began = time.perf_counter()
    model_report(store, version, "bench", 1)
    cached_s = time.perf_counter() - began
    spectral = [t["spectral"] for t in report["tensors"] if t["spectral"]]
    return {
        "parameters": total,
        "tensors": len(version.graph.tensors),
        "model_data_bytes": total * 4,
        "largest_tensor_bytes": largest,
        "build_s": round(built_s, 2),
        "all_stats_s": round(stats_s, 2),
        "all_stats_cpu_s": round(stats_cpu_s, 2),
        "stats_throughput_mparams_per_s": round(total / stats_s / 1e6, 1),
        "peak_allocations_bytes": peak_alloc,
        "peak_allocations_x_largest_tensor": round(peak_alloc / largest, 2),
        "peak_rss_growth_bytes": rss_peak,
        "peak_rss_growth_beyond_model_x_largest": round(max(rss_peak - total * 4, 0) / largest, 2),
        "listing_with_spectral_s": round(report_s, 2),
        "listing_cached_s": round(cached_s, 3),
        "spectral_status": sorted({f"{s['status']}: {s.get('skipped_reason', '')}" for s in spectral}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=float, default=100e6)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        print(json.dumps(run(args.params, args.workdir), indent=2))
        return
    with tempfile.TemporaryDirectory(prefix="weights-bench-") as tmp:
        print(json.dumps(run(args.params, Path(tmp)), indent=2))


if __name__ == "__main__":
    main()
