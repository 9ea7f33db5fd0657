"""``weightserve explain MODEL (--example NAME | --input FILE.npy) --out heat.png``: a heat map PNG.

MODEL is a model folder (its highest numeric version, or ``--version``), a version folder or an
``.onnx`` file. Inputs come from one of the model's example requests (``examples/NAME.json`` in the
model folder, a V2 request body: every input of the model) or from a ``.npy`` array of shape [C, H, W]
or [N, C, H, W] for the image input. Runs locally on an inspection session; no server, no extras.
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
from service.model_files import version_number
from service.protocol.decode import decode_inputs
from service.protocol.request import parse_request
from service.serving.repository import TARGETS, read_example

_EXAMPLE_BYTES = 64 * 1024 * 1024


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="weightserve explain", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="model folder, version folder or .onnx file")
    parser.add_argument("--version", type=int, help="version number inside a model folder (default: highest)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--example", help="name of one of the model's example requests (examples/NAME.json)")
    source.add_argument("--input", type=Path, help=".npy array of shape [C, H, W] or [N, C, H, W]")
    parser.add_argument(
        "--method",
        choices=METHODS,
        help="default: cam where it is exact (global pool + one linear layer), else grad-cam, else occlusion",
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


def _model_folder(model_path: Path) -> Path:
    """The model folder (holding ``examples/``) of a version's model.onnx."""
    return model_path.parent.parent if version_number(model_path.parent.name) else model_path.parent


def _feeds(args: argparse.Namespace, session: InspectionSession, model_path: Path) -> dict[str, np.ndarray]:
    image = session.image
    assert image is not None
    if args.input is not None:
        array: np.ndarray = np.load(args.input, allow_pickle=False)
        return {image.name: (array[None] if array.ndim == 3 else array).astype(np.float32)}
    folder = _model_folder(model_path)
    body = read_example(folder, args.example, _EXAMPLE_BYTES)
    request = parse_request(body, {}, _EXAMPLE_BYTES)
    request.inputs = [tensor for tensor in request.inputs if tensor.name != TARGETS]  # an evaluation example
    return decode_inputs(request, session.inputs, folder.name, _EXAMPLE_BYTES)


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
        feeds = _feeds(args, session, model_path)
        images = feeds[session.image.name]
        labels = _labels(model_path)
        result = explain(session, feeds, options, labels=labels)
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
