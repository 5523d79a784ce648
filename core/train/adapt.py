"""Adaptation: continued masked-LM pretraining of a (usually expanded) teacher on the domain
corpus. The result is a Hugging Face folder; checkpoints under it allow an exact resume."""

from __future__ import annotations

import dataclasses
import math
import shutil
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from core.configs import AdaptConfig, TrainConfig  # noqa: F401  (re-exported)
from core.train.mlm import IGNORE, Masker, masked_lm_loss, mlm_parts, shard_of
from core.model_io import METADATA_FILE, head_untrained, load_mlm
from core.train.loop import Prepared, finish, fit_and_save, prepare, run_loop
from core.train.checkpoints import latest_checkpoint, read_json
from core.seeds import micro_generator, stream_seed

HEAD_WARMUP_DIR = "head-warmup"  # the head's own checkpoints, under the output folder while it runs


@dataclass
class AdaptResult:
    output_dir: Path
    steps: int
    resumed_from: int
    first_loss: float | None
    last_loss: float | None
    heldout_loss_before: float | None
    heldout_loss: float | None
    tokens_per_second: float
    mlm_head_started_untrained: bool
    """The model had no trained MLM head (missing, or added by an expansion of such a model)."""
    head_warmup_steps: int = 0
    """Steps that trained the head alone, the encoder frozen, before `steps` trained everything."""

    def to_dict(self) -> dict:
        data = asdict(self)
        data["output_dir"] = str(self.output_dir)
        return data


def heldout_loss(model, blocks, masker: Masker, batch_size: int, device: torch.device, seed: int) -> float:
    """Mean MLM loss over the masked tokens of the held-out blocks, with a fixed masking."""
    encoder, head = mlm_parts(model)
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(blocks), batch_size):
            ids = torch.from_numpy(blocks[start:start + batch_size])
            inputs, labels = masker(ids, micro_generator(seed, start, "heldout-mask"))
            selected = labels != IGNORE
            hidden = encoder(input_ids=inputs.to(device)).last_hidden_state
            logits = head(hidden[selected.to(device)])
            total += float(torch.nn.functional.cross_entropy(logits.float(), labels[selected].to(device),
                                                             reduction="sum"))
            count += int(selected.sum())
    return total / max(count, 1)


def warm_up_head(model, prepared: Prepared, loss_fn, config: AdaptConfig, out_dir: Path, progress=None,
                 cancel=None) -> int:
    """Train the MLM head alone (the encoder, and with it the tied word embeddings, frozen) so that
    the main run's gradients start from a head that already reads the encoder, not a random one.
    Returns the number of head steps; skipped when the main run has already checkpointed."""
    steps = config.head_warmup_steps(prepared.train.steps)
    if not steps or latest_checkpoint(out_dir) is not None:
        return steps
    encoder, _ = mlm_parts(model)
    encoder.requires_grad_(False)
    train = dataclasses.replace(prepared.train, steps=steps, lr=config.head_lr, warmup=0.1, epochs=None,
                                seed=stream_seed(prepared.train.seed, "head-warmup"),
                                checkpoint_every=max(1, min(prepared.train.checkpoint_every, steps)))
    if progress:
        progress("training the new MLM head", 0.0)
    report = (lambda _stage, fraction: progress("training the new MLM head", fraction)) if progress else None
    try:
        run_loop(model, loss_fn, prepared.train_blocks, None, train, out_dir / HEAD_WARMUP_DIR, prepared.device,
                 None, report, cancel)
    finally:
        encoder.requires_grad_(True)
    return steps


def adapt(
    model_path: str | Path,
    documents: Callable[[], Iterable[str]],
    out_dir: str | Path,
    config: AdaptConfig,
    progress: Callable[[str, float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    on_metrics: Callable[[int, dict[str, float]], None] | None = None,
    metadata: dict | None = None,
) -> AdaptResult:
    """Continue MLM pretraining of the model at model_path; write the result to out_dir. A model
    without a trained MLM head first trains the head alone (`head_warmup`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prepared = prepare(model_path, documents, config.seq_len, config.heldout_fraction, config.train, progress, cancel)
    model, fresh = load_mlm(model_path, config.train.seed)
    untrained = head_untrained(model_path, fresh)
    mlm_parts(model)
    masker = Masker(prepared.tokenizer, config.mask_probability, config.whole_word)
    model.to(prepared.device)
    seed, batch, device = config.train.seed, config.train.batch_size, prepared.device

    def loss_fn(ids, generator, shard=None):
        inputs, labels, weight = shard_of(*masker(ids, generator), shard)
        return masked_lm_loss(model, inputs.to(device), labels.to(device)) * weight, {}

    def evaluate():
        loss = heldout_loss(model, prepared.heldout_blocks, masker, batch, device, seed)
        return {"heldout_loss": loss, "heldout_perplexity": math.exp(min(loss, 50))}

    head_steps = warm_up_head(model, prepared, loss_fn, config, out_dir, progress, cancel) if untrained else 0
    loop, before = fit_and_save(model, prepared, loss_fn, evaluate, out_dir, on_metrics, progress, cancel)
    previous = read_json(Path(model_path) / METADATA_FILE)
    result = AdaptResult(out_dir, loop.steps, loop.resumed_from, loop.first_loss, loop.last_loss,
                         before["heldout_loss"] if before else None, loop.last_eval.get("heldout_loss"),
                         loop.tokens_per_second, untrained, head_steps)
    finish(out_dir, {
        **previous, **(metadata or {}), "kind": "adapted", "parent_model": str(model_path),
        "mlm_head_trained": True, "adapt_config": asdict(config), "result": result.to_dict(),
        "train_blocks": len(prepared.train_blocks), "heldout_blocks": len(prepared.heldout_blocks),
    })
    shutil.rmtree(out_dir / HEAD_WARMUP_DIR, ignore_errors=True)
    return result
