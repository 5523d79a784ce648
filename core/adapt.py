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

from core.expand import METADATA_FILE
from core.mlm import IGNORE, Masker, mlm_parts, pack_documents, split_heldout
from core.models import load_mlm, load_tokenizer
from core.configs import AdaptConfig, TrainConfig  # noqa: F401  (re-exported)
from core.training import checkpoint_dir, fit_and_save, micro_generator, read_json, resolve_device, write_json


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
    mlm_head_was_fresh: bool

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
            inputs, labels = masker(ids, micro_generator(seed + 1, start))
            selected = labels != IGNORE
            hidden = encoder(input_ids=inputs.to(device)).last_hidden_state
            logits = head(hidden[selected.to(device)])
            total += float(torch.nn.functional.cross_entropy(logits.float(), labels[selected].to(device),
                                                             reduction="sum"))
            count += int(selected.sum())
    return total / max(count, 1)


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
    """Continue MLM pretraining of the model at model_path; write the result to out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.train.device)
    tokenizer = load_tokenizer(model_path)
    model, head_fresh = load_mlm(model_path)
    mlm_parts(model)
    if progress:
        progress("tokenizing", 0.0)
    blocks = pack_documents(documents(), tokenizer, config.seq_len, cancel=cancel)
    train_blocks, held = split_heldout(blocks, config.heldout_fraction)
    config = dataclasses.replace(config, train=config.train.for_blocks(len(train_blocks)))
    masker = Masker(tokenizer, config.mask_probability, config.whole_word)
    model.to(device)
    seed, batch = config.train.seed, config.train.batch_size

    def loss_fn(ids, generator):
        from core.mlm import masked_lm_loss

        inputs, labels = masker(ids, generator)
        return masked_lm_loss(model, inputs.to(device), labels.to(device)), {}

    def evaluate():
        loss = heldout_loss(model, held, masker, batch, device, seed)
        return {"heldout_loss": loss, "heldout_perplexity": math.exp(min(loss, 50))}

    loop, before = fit_and_save(model, tokenizer, loss_fn, train_blocks, evaluate, config.train, out_dir, device,
                                on_metrics, progress, cancel)
    previous = read_json(Path(model_path) / METADATA_FILE)
    result = AdaptResult(out_dir, loop.steps, loop.resumed_from, loop.first_loss, loop.last_loss,
                         before["heldout_loss"] if before else None, loop.last_eval.get("heldout_loss"),
                         loop.tokens_per_second, head_fresh)
    write_json(out_dir / METADATA_FILE, {
        **previous, **(metadata or {}), "kind": "adapted", "parent_model": str(model_path),
        "mlm_head_trained": True, "adapt_config": asdict(config), "result": result.to_dict(),
        "train_blocks": len(train_blocks), "heldout_blocks": len(held),
    })
    shutil.rmtree(checkpoint_dir(out_dir), ignore_errors=True)  # optimizer state is 3x the model
    return result
