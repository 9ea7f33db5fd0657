"""``weightserve explain MODEL [--digit-index I | --input FILE.npy] --out heat.png``: a heat map PNG.

MODEL is a model folder (its highest numeric version, or ``--version``), a version folder or an
``.onnx`` file. Inputs come from scikit-learn's bundled digits (if scikit-learn is installed) or from
a ``.npy`` array of shape [C, H, W] or [N, C, H, W]. Runs locally on an inspection session; no server.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import ServiceError
from service.inspection.explain import METHODS, ExplainOptions, explain
from service.inspection.render import heatmap_png
from service.inspection.session import InspectionSession
from service.serving.repository import version_number


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="weightserve explain", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="model folder, version folder or .onnx file")
    parser.add_argument("--version", type=int, help="version number inside a model folder (default: highest)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--digit-index",
        type=int,
        action="append",
        help="index into scikit-learn's digits data set (repeat for several)",
    )
    source.add_argument("--input", type=Path, help=".npy array of shape [C, H, W] or [N, C, H, W]")
    parser.add_argument(
        "--method", choices=METHODS, help="default: cam where the model allows it, else occlusion"
    )
    parser.add_argument("--target", help="class index or label (default: each input's predicted class)")
    parser.add_argument("--window", type=int, help="occlusion window side in pixels")
    parser.add_argument("--stride", type=int, help="occlusion stride in pixels")
    parser.add_argument("--baseline", default="0", help="occlusion fill value, or 'mean'")
    parser.add_argument("--size", type=int, default=256, help="approximate side of each tile in pixels")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    return parser


def _locate(target: Path, version: int | None) -> Path:
    """The model.onnx of an .onnx path, a version folder, or a model folder's chosen version."""
    if target.is_file():
        return target
    if (target / "model.onnx").is_file():
        return target / "model.onnx"
    if version is not None:
        chosen = target / str(version) / "model.onnx"
        if chosen.is_file():
            return chosen
        raise FileNotFoundError(f"{target} has no version {version} with a model.onnx")
    versions = sorted(
        int(p.name) for p in target.glob("*") if version_number(p.name) and (p / "model.onnx").is_file()
    )
    if not versions:
        raise FileNotFoundError(f"{target} is neither an .onnx file nor a model folder with model.onnx")
    return target / str(versions[-1]) / "model.onnx"


def _labels(model_path: Path) -> list[str] | None:
    try:
        manifest: Any = json.loads((model_path.parent / "manifest.json").read_text(encoding="utf-8"))
        labels = manifest["task"]["labels"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [str(label) for label in labels] if isinstance(labels, list) else None


def _inputs(args: argparse.Namespace) -> np.ndarray:
    if args.input is not None:
        array: np.ndarray = np.load(args.input, allow_pickle=False)
        return array[None] if array.ndim == 3 else array
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise FileNotFoundError("--digit-index needs scikit-learn; pass --input FILE.npy instead") from exc
    images: np.ndarray = load_digits().images
    indices = list(args.digit_index)
    bad = [i for i in indices if not 0 <= i < len(images)]
    if bad:
        raise FileNotFoundError(f"digit index {bad[0]} is outside 0..{len(images) - 1}")
    return np.stack([images[i][None] for i in indices])


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    params: dict[str, object] = {"baseline": args.baseline}
    for key in ("method", "target", "window", "stride"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    try:
        model_path = _locate(args.model, args.version)
        options = ExplainOptions.from_parameters(params)
        session = InspectionSession(model_path)
        if session.image is None:
            raise FileNotFoundError(f"{model_path} has no image input (rank 4, [N, C, H, W])")
        images = _inputs(args).astype(np.float32)
        labels = _labels(model_path)
        result = explain(session, {session.image.name: images}, options, labels=labels)
    except (OSError, ValueError, ServiceError) as exc:
        message = exc.message if isinstance(exc, ServiceError) else str(exc)
        print(f"weightserve explain: {message}", file=sys.stderr)
        return 2
    args.out.write_bytes(heatmap_png(images, result.heatmaps, args.size))
    for n, (target, predicted) in enumerate(zip(result.targets, result.predicted, strict=True)):
        name = labels[predicted] if labels is not None and predicted < len(labels) else str(predicted)
        print(
            f"input {n}: predicted {name} (score {result.scores[n, predicted]:.3f}), map for class {target}"
        )
    print(f"wrote {args.out} ({result.method}, {len(images)} input(s))")
    return 0
