"""One training run: data, train, then `publish` (ONNX export, parity check, manifest, atomic write)."""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from safetensors.torch import load_file

from training import store
from training.defaults import DEFAULT_SEED
from training.distributed import World
from training.errors import UsageError
from training.loop import Schedule, fit
from training.publish import publish
from training.tasks import TASKS, Task

FINETUNE_EPOCHS = 5
FINETUNE_LR_FACTOR = 0.1


@dataclass(frozen=True, slots=True)
class Request:
    """What to train. `hyperparameters` overrides the task defaults key by key (e.g. a manifest's)."""

    name: str
    repository: Path
    seed: int = DEFAULT_SEED
    epochs: int | None = None
    finetune_from: int | None = None
    hyperparameters: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    version: int
    directory: Path
    metrics: dict[str, float]
    seconds: float


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated request: the task, final hyperparameters and where the weights start from."""

    request: Request
    task: Task
    seed: int
    hyperparameters: dict[str, Any]
    source: Path | None


def plan(request: Request) -> Plan:
    """Validate a request before any training starts (raises UsageError)."""
    if request.name not in TASKS:
        raise UsageError(f"unknown model {request.name!r}; known: {', '.join(sorted(TASKS))}")
    if request.epochs is not None and request.epochs < 1:
        raise UsageError("--epochs must be at least 1")
    store.check_repository(request.repository)
    store.check_model_folder(request.repository / request.name)
    task = TASKS[request.name]()
    hyperparameters = copy.deepcopy(dict(task.defaults)) | copy.deepcopy(dict(request.hyperparameters or {}))
    seed, source = request.seed, None
    if request.finetune_from is not None:
        model_dir = request.repository / request.name
        base = store.read_version(model_dir, request.finetune_from)
        source = model_dir / str(request.finetune_from) / "weights.safetensors"
        # Same architecture and the same split as the base, so the held-out set stays unseen.
        seed = int(base["seed"])
        hyperparameters = copy.deepcopy(base["hyperparameters"])
        hyperparameters.pop("finetune", None)
        hyperparameters["finetune"] = {
            "from_version": request.finetune_from,
            "epochs": request.epochs or FINETUNE_EPOCHS,
            "lr": float(base["hyperparameters"]["lr"]) * FINETUNE_LR_FACTOR,
            "order_seed": request.seed + 1 + request.finetune_from,
        }
    elif request.epochs is not None:
        hyperparameters["epochs"] = request.epochs
    return Plan(request, task, seed, hyperparameters, source)


def _schedule(p: Plan) -> Schedule:
    hp = p.hyperparameters
    if "finetune" in hp:
        ft = hp["finetune"]
        return Schedule(ft["epochs"], hp["batch_size"], ft["lr"], hp["weight_decay"], ft["order_seed"])
    return Schedule(hp["epochs"], hp["batch_size"], hp["lr"], hp["weight_decay"], p.seed)


@contextmanager
def _reproducible(seed: int) -> Iterator[None]:
    """Seed every generator and pin torch's numerics; restore torch's process-wide settings after."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # the same initial weights on every rank
    torch.use_deterministic_algorithms(True)
    # These networks are tiny: one thread is as fast as several, fixes the order of every
    # reduction, and never spins waiting for cores that other processes hold.
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def run(p: Plan, world: World) -> Result | None:
    """Train; on the main rank evaluate, export and publish the next version (others return None)."""
    with _reproducible(p.seed):
        return _run(p, world)


def _run(p: Plan, world: World) -> Result | None:
    started = time.monotonic()
    task, hp = p.task, p.hyperparameters
    prepared = task.prepare(p.seed, hp)
    module = task.build(hp, prepared)
    if p.source is not None:
        module.load_state_dict(load_file(p.source))
    torch.manual_seed(p.seed * 1000 + world.rank + 1)  # dropout masks: independent per rank
    split = prepared.split
    label = f"{task.name}" + (f" (fine-tune of v{p.request.finetune_from})" if p.source else "")
    train_loss = fit(module, task.loss(module, hp), split.x_train, split.y_train, _schedule(p), world, label)
    if not world.is_main:
        return None

    def evaluate(outputs: list[NDArray[Any]]) -> dict[str, float]:
        # The exported graph's own quality: onnxruntime's outputs on the held-out split.
        return task.evaluate(outputs[0], prepared) | {"train_loss": train_loss}

    published = publish(
        module,
        prepared.eval_inputs,
        p.request.repository,
        task.name,
        input_names=[task.input_name],
        output_names=[task.output_name],
        task=task.manifest_task(),
        metrics=evaluate,
        data=task.describe_dataset(prepared, p.seed, hp),
        split=split.sizes() | {"seed": p.seed},
        seed=p.seed,
        hyperparameters=hp | {"processes": world.size},
        examples=task.examples(prepared, p.seed),
        finetuned_from=p.request.finetune_from,
    )
    return Result(task.name, published.version, published.path, published.metrics, time.monotonic() - started)
