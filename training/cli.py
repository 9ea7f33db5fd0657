"""`weightserve train [NAME ...]`: train, export and publish the next version of each model.

Runs data-parallel when launched by torchrun (`torchrun --nproc_per_node 2 -m training ...`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.defaults import DEFAULT_SEED, MODEL_NAMES
from training.errors import TrainingError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weightserve train",
        description="Train models on scikit-learn's bundled data, export ONNX, write the next version.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="models to train (default: all three)")
    parser.add_argument("--repository", type=Path, default=Path("models"), help="model repository (must exist)")
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help="seed for the split, initial weights and data order (fine-tuning keeps the base's split "
        "and uses this seed for the new data order)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    parser.add_argument(
        "--finetune-from",
        type=int,
        default=None,
        metavar="VERSION",
        help="continue training from this version's weights (lower LR, new data order) into a new version",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # torch is imported here, not at module level, so `--help` and usage errors stay fast.
    from training import job
    from training.distributed import ProcessGroup

    names = args.names or list(MODEL_NAMES)
    try:
        plans = [job.plan(job.Request(n, args.repository, args.seed, args.epochs, args.finetune_from)) for n in names]
        with ProcessGroup() as world:
            for p in plans:
                result = job.run(p, world)
                if result is not None:
                    summary = ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items())
                    where = f"{result.name} v{result.version} -> {result.directory}"
                    print(f"{where} ({result.seconds:.1f}s): {summary}")
    except TrainingError as exc:
        print(f"weightserve train: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("weightserve train: interrupted; nothing was published for the model in progress", file=sys.stderr)
        return 130
    return 0
