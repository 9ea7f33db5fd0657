"""The training loop shared by every model: seeded order, sharded batches, DDP, progress bar."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from tqdm import tqdm

from training.distributed import World

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]
"""(module, inputs, targets, generator for batch-level randomness such as noise) -> scalar loss."""


@dataclass(frozen=True, slots=True)
class Schedule:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    order_seed: int
    """Seeds the data order (and per-batch noise); the same on every rank."""


def _batches(rows: int, batch_size: int, seed: int, epoch: int) -> list[NDArray[np.int64]]:
    """Full global batches of one epoch; the partial tail is dropped so every rank gets equal shards."""
    order = np.random.default_rng([seed, epoch]).permutation(rows)
    count = rows // batch_size
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(count)]


def fit(
    module: nn.Module,
    loss_fn: LossFn,
    x: NDArray[np.float32],
    y: NDArray[np.float32] | NDArray[np.int64],
    schedule: Schedule,
    world: World,
    description: str,
) -> float:
    """Train `module` in place; returns the last epoch's mean loss averaged over ranks.

    Each global batch is split row-wise across ranks and DDP averages the gradients, so one
    step sees the same rows whatever the number of processes.
    """
    if len(x) // schedule.batch_size == 0:
        raise ValueError(f"batch size {schedule.batch_size} exceeds the {len(x)} training rows")
    model = world.wrap(module)
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)
    steps_per_epoch = len(x) // schedule.batch_size
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=schedule.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(schedule.order_seed * 1000 + world.rank)
    x_all = torch.from_numpy(x)
    y_all = torch.from_numpy(y)
    epoch_loss = float("nan")
    model.train()
    with tqdm(total=schedule.epochs * steps_per_epoch, desc=description, unit="step", disable=not world.is_main) as bar:
        for epoch in range(schedule.epochs):
            losses: list[float] = []
            for batch in _batches(len(x), schedule.batch_size, schedule.order_seed, epoch):
                shard = torch.from_numpy(batch[world.rank :: world.size])
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model, x_all[shard], y_all[shard], generator)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                scheduler.step()
                losses.append(float(loss.item()))
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.4f}", refresh=False)
            epoch_loss = world.mean(float(np.mean(losses)))
    module.eval()
    return epoch_loss
