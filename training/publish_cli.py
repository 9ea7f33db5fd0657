"""`weightserve publish FACTORY --checkpoint FILE --example-shape ...`: publish a saved state_dict.

FACTORY is `module.path:callable`; the callable (with `--factory-kwargs`) returns the `nn.Module`
the checkpoint's state_dict loads into. Example inputs are random (`--example-shape`, one per
input, seeded) or real (`--example-file x.npy`, one per input; also written as an example request).
Bad input is one line on stderr and exit status 2, with nothing written.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from training.errors import TrainingError, UsageError

_WRAPPERS = ("state_dict", "model_state_dict", "model")
EXAMPLE_ROWS = 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weightserve publish",
        description="Publish a PyTorch checkpoint as the next version of a model: ONNX export, parity check "
        "against torch, weights sidecar, manifest, written atomically.",
    )
    parser.add_argument("factory", metavar="FACTORY", help="module.path:callable that returns the nn.Module")
    parser.add_argument("--checkpoint", type=Path, required=True, help="state_dict file (torch.save or .safetensors)")
    parser.add_argument("--name", required=True, help="model name in the repository")
    parser.add_argument("--repository", type=Path, default=Path("models"), help="model repository (must exist)")
    parser.add_argument("--factory-kwargs", default="{}", metavar="JSON", help="keyword arguments for FACTORY")
    parser.add_argument(
        "--example-shape",
        action="append",
        default=[],
        metavar="SHAPE",
        help="shape of one input's random example, e.g. 2,3,224,224 (repeat per input, in forward's order)",
    )
    parser.add_argument(
        "--example-dtype",
        action="append",
        default=[],
        metavar="DTYPE",
        help="dtype of that input's random example (default float32; repeat per input)",
    )
    parser.add_argument(
        "--example-range",
        action="append",
        default=[],
        metavar="LOW,HIGH",
        help="uniform range of that input's random example (default 0,1 for floats, 0,10 for integers)",
    )
    parser.add_argument(
        "--example-file", action="append", default=[], type=Path, metavar="NPY", help="real example inputs (.npy)"
    )
    parser.add_argument("--input-name", action="append", default=[], help="input names (default: forward's)")
    parser.add_argument("--output-name", action="append", default=[], help="output names (default: output_N)")
    parser.add_argument(
        "--task", choices=["classification", "regression", "image_to_image", "other"], help="what the model does"
    )
    parser.add_argument("--labels", help="class labels, comma-separated (classification)")
    parser.add_argument("--data-range", type=float, help="span of pixel values (image_to_image)")
    parser.add_argument("--opset", type=int, help="ONNX opset (default 20)")
    parser.add_argument("--finetuned-from", type=int, metavar="VERSION", help="the version the weights started from")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random example inputs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _publish(args)
    except TrainingError as exc:
        print(f"weightserve publish: error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("weightserve publish: interrupted; nothing was published", file=sys.stderr)
        return 130


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _publish(args: argparse.Namespace) -> int:
    # torch is imported here, so `--help` and usage errors stay fast.
    import numpy as np

    from training.examples import Example
    from training.publish import publish

    kwargs = _json_object(args.factory_kwargs, "--factory-kwargs")
    module = _build(args.factory, kwargs)
    _load_checkpoint(module, args.checkpoint)
    names = args.input_name or _forward_names(module)
    examples: dict[str, Example] = {}
    if args.example_file:
        if args.example_shape:
            raise UsageError("give either --example-file or --example-shape, not both")
        arrays = [_load_npy(path) for path in args.example_file]
        if arrays and all(a.ndim for a in arrays):
            examples["example"] = Example([a[:EXAMPLE_ROWS] for a in arrays], description="from --example-file")
    else:
        arrays = _random_inputs(args, np.random.default_rng(args.seed))
    if len(arrays) != len(names):
        raise UsageError(f"{len(arrays)} example inputs for the {len(names)} inputs {names}; give one per input")
    outputs = args.output_name or _output_names(module, arrays)
    task = _task(args)
    published = publish(
        module,
        arrays,
        args.repository,
        args.name,
        input_names=names,
        output_names=outputs,
        task=task,
        examples=examples or None,
        finetuned_from=args.finetuned_from,
        opset=args.opset,
        data={"checkpoint": args.checkpoint.name, "factory": args.factory, "factory_kwargs": kwargs},
    )
    check = published.parity
    print(
        f"{published.name} v{published.version} -> {published.path} "
        f"(onnxruntime vs torch: max abs diff {check.max_abs_diff:.3g} over {len(check.checks)} batches)"
    )
    return 0


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object")
    return value


def _build(factory: str, kwargs: Mapping[str, Any]) -> Any:
    from torch import nn

    module_path, _, attribute = factory.partition(":")
    if not module_path or not attribute:
        raise UsageError(f"FACTORY must be module.path:callable, got {factory!r}")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # the user's own modules, as `python -m` would find them
    try:
        target: Any = importlib.import_module(module_path)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"cannot import {factory}: {exc}") from exc
    if not callable(target):
        raise UsageError(f"{factory} is not callable")
    try:
        module = target(**kwargs)
    except Exception as exc:  # the user's code: report it on one line
        raise UsageError(f"{factory}(**{dict(kwargs)}) failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise UsageError(f"{factory} returned a {type(module).__name__}, not a torch.nn.Module")
    return module


def _load_checkpoint(module: Any, path: Path) -> None:
    import torch

    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load and safetensors raise many kinds for a bad file
        raise UsageError(f"cannot read checkpoint {path}: {type(exc).__name__}: {_one_line(str(exc))[:300]}") from exc
    state = _unwrap(state, path)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise UsageError(f"checkpoint {path} does not fit the module: {_one_line(str(exc))[:400]}") from exc


def _unwrap(state: Any, path: Path) -> dict[str, Any]:
    """The state_dict inside a checkpoint: itself, or under one of the usual keys; DDP's `module.` dropped."""
    import torch

    if not isinstance(state, dict):
        raise UsageError(f"checkpoint {path} holds a {type(state).__name__}, not a state_dict")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        inner = [key for key in _WRAPPERS if isinstance(state.get(key), dict)]
        if not inner:
            raise UsageError(f"checkpoint {path} is not a state_dict; its keys are {sorted(map(str, state))[:10]}")
        state = state[inner[0]]
    if state and all(str(k).startswith("module.") for k in state):
        state = {str(k).removeprefix("module."): v for k, v in state.items()}
    return dict(state)


def _forward_names(module: Any) -> list[str]:
    import inspect

    parameters = inspect.signature(module.forward).parameters.values()
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _output_names(module: Any, arrays: list[Any]) -> list[str]:
    import torch

    from training.parity import flatten_outputs

    with torch.no_grad():
        count = len(flatten_outputs(module.eval()(*[torch.from_numpy(a) for a in arrays])))
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _load_npy(path: Path) -> Any:
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc


def _random_inputs(args: argparse.Namespace, rng: Any) -> list[Any]:
    import numpy as np

    if not args.example_shape:
        raise UsageError("give --example-shape (one per input) or --example-file")
    arrays = []
    for i, text in enumerate(args.example_shape):
        shape = _ints(text, "--example-shape")
        dtype = _dtype(args.example_dtype[i] if i < len(args.example_dtype) else "float32")
        integer = np.issubdtype(dtype, np.integer) or dtype == np.bool_
        low, high = (0.0, 2.0 if dtype == np.bool_ else 10.0) if integer else (0.0, 1.0)
        if i < len(args.example_range):
            low, high = _range(args.example_range[i])
        if integer:
            arrays.append(rng.integers(int(low), int(high), size=shape).astype(dtype))
        else:
            arrays.append(rng.uniform(low, high, size=shape).astype(dtype))
    return arrays


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(part) for part in text.replace("x", ",").split(",") if part.strip()]
    except ValueError as exc:
        raise UsageError(f"{what} {text!r} is not a list of integers like 2,3,224,224") from exc
    if not values or any(v < 1 for v in values):
        raise UsageError(f"{what} {text!r}: every dimension must be at least 1")
    return values


def _range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError as exc:
        raise UsageError(f"--example-range {text!r} must be LOW,HIGH") from exc
    if not low < high:
        raise UsageError(f"--example-range {text!r}: LOW must be below HIGH")
    return low, high


def _dtype(text: str) -> Any:
    import numpy as np

    allowed = {"float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool"}
    if text not in allowed:
        raise UsageError(f"--example-dtype {text!r}: use one of {', '.join(sorted(allowed))}")
    return np.dtype(text)


def _task(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.task is None:
        if args.labels or args.data_range is not None:
            raise UsageError("--labels and --data-range describe a --task; give the task too")
        return None
    task: dict[str, Any] = {"kind": args.task}
    if args.labels:
        task["labels"] = [label.strip() for label in args.labels.split(",")]
    if args.data_range is not None:
        task["data_range"] = args.data_range
    return task


if __name__ == "__main__":
    sys.exit(main())
