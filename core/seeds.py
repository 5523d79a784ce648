"""Named random streams: a seed per purpose and per step, so that a resumed run draws exactly
what an uninterrupted one would."""

from __future__ import annotations

import functools
from contextlib import contextmanager

import numpy as np
import torch

from core.errors import ConfigError

# Every random draw of a run comes from its own stream, named here: the data order, the masking,
# dropout, the held-out masking, a new student's or MLM head's initialisation, a task head, and the
# seed of an MLM head's warm-up (whose order, masking and dropout then derive from it).
STREAMS = {"order": 1, "mask": 2, "dropout": 3, "heldout-mask": 4, "student-init": 5, "mlm-head": 6,
           "task-head": 7, "head-warmup": 8}


def stream_seed(seed: int, stream: str, *index: int) -> int:
    """The seed of one independent random stream of a run: a hash of (seed, stream, index...), so
    distinct tuples never share a stream (as seed * k + step would: seed 1 step 0 = seed 0 step k)."""
    if seed < 0 or any(i < 0 for i in index):
        raise ConfigError(f"seeds and indices must be >= 0, got seed {seed}, index {index}")
    return int(np.random.SeedSequence([seed, STREAMS[stream], *index]).generate_state(1, np.uint64)[0] >> 1)


@contextmanager
def seeded(seed: int, stream: str, *index: int):
    """Run a block (e.g. a model's initialisation) under torch's global RNG seeded from one stream,
    leaving the caller's RNG state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(seed, stream, *index))
        yield


@functools.lru_cache(maxsize=2)
def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the n blocks in one epoch (computed once per epoch, not once per step: n is in
    the millions for a corpus of gigabytes)."""
    order = np.random.default_rng(stream_seed(seed, "order", epoch)).permutation(n)
    order.flags.writeable = False
    return order


def batch_indices(n: int, micro_step: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices of the blocks of one micro-batch: the stream of per-epoch permutations, so the order
    depends only on (seed, micro_step)."""
    positions = np.arange(micro_step * batch_size, (micro_step + 1) * batch_size)
    out = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(positions // n):
        permutation = epoch_order(n, seed, int(epoch))
        here = positions // n == epoch
        out[here] = permutation[positions[here] % n]
    return out


def micro_generator(seed: int, micro_step: int, stream: str = "mask") -> torch.Generator:
    """The generator of one micro-step's draws (masking) in a run."""
    return torch.Generator().manual_seed(stream_seed(seed, stream, micro_step))
