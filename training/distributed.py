"""Data-parallel context: one process per rank under torchrun (gloo on CPU), or a single process."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from types import TracebackType

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True, slots=True)
class World:
    rank: int
    size: int

    @property
    def is_main(self) -> bool:
        """Only the main rank evaluates, exports and writes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def wrap(self, module: nn.Module) -> nn.Module:
        """DDP when distributed (averages gradients across ranks), the module itself otherwise."""
        if not self.distributed:
            return module
        # A 1-input-channel conv's gradient comes back with equivalent but differently ordered
        # strides; DDP copies it into its bucket correctly and only warns about speed.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        return DistributedDataParallel(module)

    def mean(self, value: float) -> float:
        """Average of a scalar over all ranks."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.size


class ProcessGroup:
    """Joins torchrun's process group on enter (if launched by torchrun) and leaves it on exit."""

    def __enter__(self) -> World:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size > 1 and not dist.is_initialized():
            dist.init_process_group(backend="gloo")
            self._owned = True
        else:
            self._owned = False
        if dist.is_initialized():
            return World(rank=dist.get_rank(), size=dist.get_world_size())
        return World(rank=0, size=1)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if not self._owned:
            return
        if kind is None:
            # Leave together: a rank that tears down gloo and exits while another still holds its
            # connections (rank 0 exports and publishes after the others are done) can abort the job.
            # After a failure there is no waiting for the others: torchrun stops them.
            dist.barrier()
        dist.destroy_process_group()
