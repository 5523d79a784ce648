"""The training loop shared by adaptation and distillation: deterministic data order and
randomness per micro-step (so a resumed run continues exactly as an uninterrupted one),
gradient accumulation, warmup and decay, bf16 autocast where the GPU has it, periodic
evaluation, and checkpoints (safetensors weights + a weights-only trainer state)."""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from core import distributed
from core.configs import SCHEDULES, TrainConfig  # noqa: F401  (re-exported)
from core.errors import Cancelled, ConfigError, DiskFull, is_disk_full
from core.eta import CHECKPOINTING, EVALUATING, TRAINING
from core.mlm import split_heldout
from core.tokens import Blocks, corpus_blocks
from core.models import METADATA_FILE, check_written, load_tokenizer, open_to_group, scrub_remote_code

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name} asked for, but no CUDA GPU is visible: use --device cpu")
    if name.startswith("cuda:") and int(name.split(":")[1]) >= torch.cuda.device_count():
        raise ConfigError(f"device {name} asked for, but only {torch.cuda.device_count()} GPU(s) are visible "
                          f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device mps asked for, but this machine has no Apple GPU: use --device cpu")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where the GPU supports it; None means plain fp32."""
    if precision == "fp32" or device.type != "cuda":
        if precision == "bf16" and device.type != "cuda":
            raise ConfigError("bf16 needs a GPU here: use --precision fp32 on the CPU")
        return None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if precision == "bf16":
        raise ConfigError("this GPU has no bf16: use --precision fp32")
    return None


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


# --- checkpoints -----------------------------------------------------------------------------

def checkpoint_dir(root: Path) -> Path:
    return root / "checkpoints"


def latest_checkpoint(root: Path) -> Path | None:
    pointer = checkpoint_dir(root) / "latest"
    if not pointer.is_file():
        return None
    path = checkpoint_dir(root) / pointer.read_text().strip()
    return path if (path / "trainer.pt").is_file() else None


def checkpoint_step(path: Path) -> int:
    """The step a checkpoint folder (step-0000020) was written at."""
    return int(path.name.removeprefix("step-"))


def disk_full(doing: str, root: Path) -> DiskFull:
    """The one line for a write that found the disk full, saying which checkpoint is left."""
    previous = latest_checkpoint(root)
    kept = f"the checkpoint of {previous.name} is intact" if previous else "there is no checkpoint to resume from"
    return DiskFull(f"no space left on device {doing}: {kept}; free some space, then resume")


def save_checkpoint(root: Path, step: int, modules: dict[str, torch.nn.Module], optimizer, scheduler,
                    keep: int, state: dict | None = None) -> Path:
    """Weights (safetensors), optimizer and schedule, and the caller's `state` (state.json), written
    under a temporary name and renamed, then pointed to by checkpoints/latest. A write that fails
    (a full disk) leaves no partial file and the previous checkpoint as it was: DiskFull says so."""
    from safetensors.torch import save_model

    folder = checkpoint_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    tmp, pointer = folder / f".tmp-{name}", folder / "latest.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        for key, module in modules.items():
            save_model(module, str(tmp / f"{key}.safetensors"))
        torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                   tmp / "trainer.pt")
        if state is not None:
            write_json(tmp / "state.json", state)
        pointer.write_text(name)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        pointer.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full(f"writing the checkpoint of step {step} in {folder}", root) from None
        raise
    shutil.rmtree(folder / name, ignore_errors=True)
    os.replace(tmp, folder / name)
    os.replace(pointer, folder / "latest")
    for old in sorted(p for p in folder.glob("step-*") if p.name != name)[:-max(keep - 1, 0) or None]:
        shutil.rmtree(old, ignore_errors=True)
    return folder / name


def load_checkpoint(path: Path, modules: dict[str, torch.nn.Module], optimizer, scheduler) -> int:
    from safetensors.torch import load_model

    for key, module in modules.items():
        load_model(module, str(path / f"{key}.safetensors"))
    state = torch.load(path / "trainer.pt", weights_only=True)  # our own file; still no pickle code
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"])


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


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)
