"""Data-parallel training across processes (one per GPU, or CPU processes with gloo), under
torchrun. Every process holds the whole model and reads the same global micro-batch order; each
takes its share of the rows (rank, rank + world, ...); DistributedDataParallel averages the
gradients across the processes during the backward of a step's last micro-batch; only the first
process reports, evaluates and writes checkpoints and the model. A run with N processes therefore
follows the single-process run with the same global batch: the same data order, masking, learning
rate and loss (the masked-LM loss is weighted so that the average over processes is the mean over
the whole batch's masked tokens)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def rows(self) -> slice | None:
        """This process's rows of a micro-batch; None when it has them all."""
        return None if self.world == 1 else slice(self.rank, None, self.world)


def current() -> Shard:
    """This process's place in the process group (a lone process when there is none)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return Shard(torch.distributed.get_rank(), torch.distributed.get_world_size())
    return Shard()


def init_from_env(device_type: str) -> Shard:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR...): NCCL on GPUs,
    gloo on the CPU. Each GPU process uses the GPU of its LOCAL_RANK."""
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return current()


class Objective(torch.nn.Module):
    """A model's training loss as a module, so that DistributedDataParallel can wrap it: the loss
    runs the model's parts directly (the MLM head on the masked positions only), not its forward."""

    def __init__(self, model: torch.nn.Module, loss_fn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, *args):
        return self.loss_fn(*args)


def data_parallel(model: torch.nn.Module, loss_fn, shard: Shard, device: torch.device):
    """The callable a training step runs: the loss itself in a lone process; with several, the loss
    wrapped in DistributedDataParallel, which averages the gradients across the processes during
    backward (parameters a step leaves unused, such as a pooler, are allowed)."""
    if shard.world == 1:
        return loss_fn
    return torch.nn.parallel.DistributedDataParallel(
        Objective(model, loss_fn), device_ids=[device.index or 0] if device.type == "cuda" else None,
        find_unused_parameters=True)


def average(values: dict[str, float], shard: Shard, device: torch.device) -> dict[str, float]:
    """The mean of each value across the processes (the same keys everywhere)."""
    if shard.world == 1 or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return {k: float(v) / shard.world for k, v in zip(keys, tensor.tolist())}


def agree(flag: bool, shard: Shard, device: torch.device) -> bool:
    """The first process's flag, on every process (a cancel seen by the first stops all)."""
    if shard.world == 1:
        return flag
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    torch.distributed.broadcast(tensor, src=0)
    return bool(tensor.item())


@contextmanager
def first_alone(shard: Shard):
    """The first process does the block before the others (e.g. tokenizing a corpus into the cache
    that the others then map)."""
    if shard.world > 1 and not shard.main:
        torch.distributed.barrier()
    try:
        yield
    finally:
        if shard.world > 1 and shard.main:
            torch.distributed.barrier()


def share_weight(selected: int, total: int, shard: Shard) -> float:
    """The factor that turns this process's mean over its `selected` items (of the batch's `total`)
    into its part of the batch mean, once the processes' values are averaged."""
    return 1.0 if shard.world == 1 else selected * shard.world / max(total, 1)
