"""The training loop shared by adaptation and distillation: deterministic data order and
randomness per micro-step (so a resumed run continues exactly as an uninterrupted one),
gradient accumulation, warmup and decay, bf16 autocast where the GPU has it, periodic
evaluation, and checkpoints (core.train.checkpoints)."""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.configs import TrainConfig
from core.devices import autocast_dtype, resolve_device
from core.errors import Cancelled, DiskFull, is_disk_full
from core.model_io import METADATA_FILE, check_written, load_tokenizer, open_to_group, scrub_remote_code
from core.seeds import batch_indices, micro_generator, stream_seed
from core.train import distributed
from core.train.checkpoints import (
    checkpoint_dir,
    disk_full,
    latest_checkpoint,
    load_checkpoint,
    read_json,
    save_checkpoint,
    write_json,
)
from core.train.eta import CHECKPOINTING, EVALUATING, TRAINING
from core.train.mlm import split_heldout
from core.train.tokens import Blocks, corpus_blocks

log = logging.getLogger(__name__)


def lr_factor(step: int, config: TrainConfig) -> float:
    warmup = config.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, config.steps - warmup)
    if config.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return max(0.0, 1 - progress)


# --- the loop --------------------------------------------------------------------------------

Metrics = Callable[[int, dict[str, float]], None]


@dataclass
class LoopResult:
    steps: int
    resumed_from: int
    first_loss: float | None
    last_loss: float | None
    last_eval: dict[str, float]
    seconds: float
    tokens_per_second: float
    carried: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def weights_sound(model: torch.nn.Module) -> bool:
    """Every parameter finite: a state worth saving."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def optimizer_for(model: torch.nn.Module, config: TrainConfig):
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "LayerNorm" in name or name.endswith("bias") else decay).append(param)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    return optimizer, scheduler


def run_loop(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, dict[str, float]]],
    train_blocks: Blocks | np.ndarray,
    evaluate: Callable[[], dict[str, float]] | None,
    config: TrainConfig,
    root: Path,
    device: torch.device,
    on_metrics: Metrics | None = None,
    progress: Callable[[str, float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    carried: dict | None = None,
) -> LoopResult:
    """Train `model` (the parameters the optimizer updates) with loss_fn(batch_ids, generator).
    Resumes from root/checkpoints/latest when there is one. `carried` (JSON) is written with every
    checkpoint and read back on resume, with the first step's loss, so a resumed run reports
    what an uninterrupted one would."""
    optimizer, scheduler = optimizer_for(model, config)
    modules = {"model": model}
    start = 0
    carried = dict(carried or {})
    checkpoint = latest_checkpoint(root)
    if checkpoint is not None:
        start = load_checkpoint(checkpoint, modules, optimizer, scheduler)
        carried = {**carried, **read_json(checkpoint / "state.json")}
    dtype = autocast_dtype(config.precision, device)
    n, tokens_per_step = len(train_blocks), config.batch_size * config.grad_accum * train_blocks.shape[1]
    first, last = carried.get("first_loss"), None

    shard = distributed.current()
    objective = distributed.data_parallel(model, loss_fn, shard, device)  # the loss, through DDP with processes

    def checkpoint_now(step: int) -> None:
        if shard.main:  # one copy, whatever the number of processes
            save_checkpoint(root, step, modules, optimizer, scheduler, config.keep_checkpoints,
                            {**carried, "first_loss": first})

    last_eval: dict[str, float] = {}
    began = time.perf_counter()
    if not shard.main:  # only the first process reports and evaluates
        on_metrics = progress = evaluate = None
    if on_metrics:
        on_metrics(start, {"total_steps": config.steps})  # known only now when epochs set the steps
    if progress:
        progress(TRAINING, start / config.steps)
    model.train()
    done, saved, stepping = start, start, False
    try:
        for step in range(start, config.steps):
            if distributed.agree(cancel is not None and cancel(), shard, device):
                checkpoint_now(step)
                saved = step
                raise Cancelled(f"cancelled at step {step}; resume continues from there")
            totals: dict[str, float] = {}
            for micro in range(config.grad_accum):
                index = step * config.grad_accum + micro
                ids = torch.from_numpy(train_blocks[batch_indices(n, index, config.batch_size, config.seed)])
                torch.manual_seed(stream_seed(config.seed, "dropout", index))  # dropout depends on the step alone
                last_micro = micro == config.grad_accum - 1  # DDP averages the gradients once, after the last
                with nullcontext() if shard.world == 1 or last_micro else objective.no_sync():
                    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                        loss, parts = (objective(ids, micro_generator(config.seed, index)) if shard.world == 1 else
                                       objective(ids, micro_generator(config.seed, index), shard))
                    (loss / config.grad_accum).backward()
                for key, value in {"loss": float(loss.detach()), **parts}.items():
                    totals[key] = totals.get(key, 0.0) + value / config.grad_accum
            totals = distributed.average(totals, shard, device)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            stepping = True  # the weights are half updated until the step is done
            optimizer.step()
            scheduler.step()
            stepping = False
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            first = totals["loss"] if first is None else first
            last = totals["loss"]
            if on_metrics and (done % config.log_every == 0 or done == start + 1 or done == config.steps):
                on_metrics(done, {**totals, "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm)})
            if evaluate is not None and (done % config.eval_every == 0 or done == config.steps):
                if progress:
                    progress(EVALUATING, done / config.steps)
                model.eval()
                last_eval = evaluate()
                model.train()
                if on_metrics:
                    on_metrics(done, last_eval)
            if done % config.checkpoint_every == 0 and done < config.steps:
                if progress:
                    progress(CHECKPOINTING, done / config.steps)
                checkpoint_now(done)
                saved = done
            if progress:
                progress(TRAINING, done / config.steps)
    except (Cancelled, DiskFull):
        raise
    except BaseException:
        # Whatever stopped the run (an error, a timeout, Ctrl-C), the steps done since the last
        # checkpoint are kept when the weights are whole and finite: resume continues from here.
        if done > saved and not stepping and weights_sound(model):
            try:
                checkpoint_now(done)
            except Exception as exc:  # the original error is the one to report
                log.warning("could not save a checkpoint after the failure at step %s: %s", done, exc)
        raise
    seconds = time.perf_counter() - began
    trained = config.steps - start
    return LoopResult(config.steps, start, first, last, last_eval, seconds,
                      trained * tokens_per_step / seconds if seconds > 0 else 0.0, carried)


@dataclass
class Prepared:
    """What adaptation and distillation both start from: the device, the tokenizer, the packed
    training and held-out blocks, and the optimisation settings with the steps resolved."""

    device: torch.device
    tokenizer: object
    train_blocks: Blocks | np.ndarray
    heldout_blocks: np.ndarray
    train: TrainConfig


def prepare(model_path: str | Path, documents: Callable[[], Iterable[str]], seq_len: int, heldout_fraction: float,
            train: TrainConfig, progress=None, cancel=None) -> Prepared:
    """Check the device, load the tokenizer of model_path, pack the corpus into blocks and keep the
    last ones out for evaluation. `epochs`, when set, becomes a number of steps here."""
    device = resolve_device(train.device)
    tokenizer = load_tokenizer(model_path)
    if progress:
        progress("tokenizing", 0.0)
    with distributed.first_alone(distributed.current()):  # the first process fills the token cache
        blocks = corpus_blocks(documents, tokenizer, seq_len, progress, cancel)
    train_blocks, held = split_heldout(blocks, heldout_fraction)
    return Prepared(device, tokenizer, train_blocks, held, train.for_blocks(len(train_blocks)))


def fit_and_save(model, prepared: Prepared, loss_fn, evaluate, out_dir: Path, on_metrics=None, progress=None,
                 cancel=None) -> tuple[LoopResult, dict | None]:
    """Evaluate once before a fresh run, train, save the model and tokenizer to out_dir and read the
    folder back (`check_written`). Returns the loop's result and the evaluation before training
    (carried through a resume in the checkpoint)."""
    before = None
    shard = distributed.current()
    if latest_checkpoint(out_dir) is None and shard.main:
        if progress:
            progress(EVALUATING, 0.0)
        model.eval()
        before = evaluate()
        model.train()
        if on_metrics:
            on_metrics(0, before)
    loop = run_loop(model, loss_fn, prepared.train_blocks, evaluate, prepared.train, out_dir, prepared.device,
                    on_metrics, progress, cancel, carried={"before": before} if before is not None else None)
    before = before if before is not None else loop.carried.get("before")
    if not shard.main:  # the first process writes the model
        return loop, before
    if progress:
        progress("saving", 1.0)
    model.to("cpu")
    save_model_folder(model, prepared.tokenizer, out_dir)
    return loop, before


def save_model_folder(model, tokenizer, out_dir: Path) -> None:
    """Write the model and tokenizer to a temporary folder inside out_dir, read them back
    (`check_written`), then move them in: a failed save (a full disk) leaves no partial file, and
    the checkpoints beside it intact."""
    tmp = out_dir / ".tmp-save"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        scrub_remote_code(tmp)
        open_to_group(tmp)
        check_written(model, tmp)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            raise disk_full(f"saving the trained model in {out_dir}", out_dir) from None
        raise
    for path in tmp.iterdir():
        os.replace(path, out_dir / path.name)
    tmp.rmdir()


def finish(out_dir: Path, metadata: dict) -> None:
    """Write the folder's metadata and drop the checkpoints (the optimizer state is 3x the model)."""
    write_json(out_dir / METADATA_FILE, metadata)
    shutil.rmtree(checkpoint_dir(out_dir), ignore_errors=True)
