"""``weightserve inspect MODEL_DIR_OR_ONNX_FILE``: the per-layer weight table in the terminal.

The figures come from the same report the HTTP API returns (``--json`` prints it whole). Spectral
analyses of large matrices run in the background analysis process, with a progress bar on stderr;
they land in the same on-disk cache a server on this machine uses, so whichever runs first does the
work for both.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import IO, Any

from service.errors import ServiceError
from service.model_files import version_number
from service.settings import Settings
from service.weights.report import model_report
from service.weights.store import WeightStore
from service.weights.version import VersionWeights

_COLUMNS = (
    ("layer", 6),
    ("op", 14),
    ("module", 20),
    ("tensor", 28),
    ("role", 10),
    ("shape", 16),
    ("dtype", 8),
    ("mean", 11),
    ("std", 10),
    ("abs_max", 10),
    ("zero%", 6),
    ("alpha", 7),
    ("spectral", 10),
)


def _locate(target: Path) -> tuple[Path, str, int | None]:
    """An .onnx file, a version folder, or a model folder (its highest numeric version)."""
    if target.is_file():
        return target, target.stem, None
    if (target / "model.onnx").is_file():
        version = version_number(target.name)
        name = target.parent.name if version is not None else target.name
        return target / "model.onnx", name, version
    folders = [p for p in target.iterdir() if p.is_dir()] if target.is_dir() else []
    versions = sorted(number for p in folders if (number := version_number(p.name)) and (p / "model.onnx").is_file())
    if not versions:
        raise FileNotFoundError(f"{target} is neither an .onnx file nor a model folder with model.onnx")
    return target / str(versions[-1]) / "model.onnx", target.name, versions[-1]


def _manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


_NO_LAYER = {"id": "-", "op_type": "-", "module_path": ""}


def render_table(report: dict[str, Any]) -> str:
    tensors = {t["id"]: t for t in report["tensors"]}
    header = " ".join(name.ljust(width) for name, width in _COLUMNS)
    lines = [header.rstrip(), "-" * len(header.rstrip())]
    rows = [(layer, member) for layer in report["layers"] for member in layer["tensors"]]
    rows += [(_NO_LAYER, {"id": t["id"], "role": t["role"]}) for t in report["tensors"] if not t["layers"]]
    for layer, member in rows:
        t = tensors[member["id"]]
        stats, spectral = t["stats"], t["spectral"] or {}
        zero = stats["zero_fraction"]
        cells = (
            layer["id"],
            layer["op_type"],
            layer["module_path"],
            t["name"],
            member["role"],
            "x".join(str(d) for d in t["shape"]) or "scalar",
            t["storage_dtype"],
            _fmt(stats["mean"]),
            _fmt(stats["std"]),
            _fmt(stats["abs_max"]),
            _fmt(None if zero is None else round(100 * zero, 1)),
            _fmt(spectral.get("alpha")),
            spectral.get("status", ""),
        )
        row = " ".join(_clip(str(c), w).ljust(w) for c, (_, w) in zip(cells, _COLUMNS, strict=True))
        lines.append(row.rstrip())
    s = report["summary"]
    lines.append("")
    lines.append(
        f"{s['layers']} layers, {s['tensors']} tensors ({s['buffers']} outside layers),"
        f" {s['parameters']} parameters, {s['bytes']} bytes;"
        f" folded {s['folded']}, transposed {s['transposed']}, shared {s['shared']},"
        f" NaN {s['nan_count']}, Inf {s['inf_count']}; mean alpha {_fmt(s['mean_alpha'])}"
    )
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    if value is None:
        return "?"
    value = max(value, 0.0)
    return f"{value:.0f}s" if value < 90 else f"{value / 60:.1f}min"


def progress_line(status: dict[str, Any], width: int = 24) -> str:
    """``spectral analysis [#####-----] 3/8 layers  41% of the work  elapsed 12s  left ~17s``"""
    layers = status["layers"]
    fraction = min(max(float(status["progress"]), 0.0), 1.0)
    filled = round(fraction * width)
    running = f", {layers['running']} running" if layers["running"] else ""
    failed = f", {layers['failed']} failed" if layers["failed"] else ""
    return (
        f"spectral analysis [{'#' * filled}{'-' * (width - filled)}] {layers['done']}/{layers['total']} layers"
        f"{running}{failed}  {fraction:.0%} of the work  elapsed {_seconds(status['elapsed_s'])}"
        f"  left ~{_seconds(status['eta_s'])}"
    )


def wait_for_analysis(store: WeightStore, version: VersionWeights, stream: IO[str], poll_s: float = 0.5) -> None:
    """Start the version's analysis and show its progress until it is done."""
    tty = stream.isatty()
    shown: tuple[int, ...] | None = None
    while True:
        status = store.analysis(version, start=True)
        line = progress_line(status)
        counts = tuple(status["layers"][k] for k in ("done", "running", "failed"))
        if tty:
            stream.write("\r" + line)
        elif counts != shown:  # in a log: a line when a layer starts or finishes, not every poll
            stream.write(line + "\n")
        shown = counts
        stream.flush()
        if status["state"] == "done":
            if tty:
                stream.write("\n")
            return
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="weightserve inspect", description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path, help="an .onnx file, a version folder or a model folder")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument("--no-wait", action="store_true",
                        help="print at once; layers whose spectral analysis is unfinished show its state")
    args = parser.parse_args(argv)
    store = None
    try:
        model_path, name, version = _locate(args.target)
        folder = model_path.parent
        weights = folder / "weights.safetensors"
        store = WeightStore(Settings().weights)
        opened = store.open(name, model_path, weights if weights.is_file() else None, _manifest(folder))
        report = model_report(store, opened, name, version)
        if not args.no_wait and report["analysis"]["state"] != "done":
            wait_for_analysis(store, opened, sys.stderr)
            report = model_report(store, opened, name, version)
    except (OSError, ServiceError) as exc:
        print(f"weightserve inspect: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if store is not None:
            store.close()
    print(json.dumps(report, indent=2) if args.json else render_table(report))
    return 0
