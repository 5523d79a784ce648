"""Fine-tuning evaluation: a model gets a task head (transformers' sequence or token
classification head), is trained on the task's train split with several seeds, each until its dev
score stops improving, and the best dev epoch of each seed is scored on test. Scores are the mean
and standard deviation over the seeds, with each seed's dev curve, so a user sees whether it
converged. Checkpoints per seed let a cancelled evaluation resume exactly where it stopped."""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.judge import metrics as scoring
from core.configs import TrainConfig
from core.judge.settings import FinetuneConfig
from core.errors import Cancelled, ModelError
from core.model_io import load_tokenizer, quiet_transformers
from core.judge.tasks import TaskData
from core.devices import autocast_dtype, resolve_device
from core.folder_kinds import FINE_TUNED, task_class
from core.train.checkpoints import (checkpoint_dir, latest_checkpoint, load_checkpoint, read_json, save_checkpoint,
    write_json)
from core.train.loop import optimizer_for
from core.seeds import seeded, stream_seed

IGNORE = -100
LENGTH_WINDOW = 50  # batches per window of similar lengths: padding stays small, the order stays random


@dataclass
class SeedResult:
    seed: int
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    dev: dict
    test: dict
    curve: list[dict] = field(default_factory=list)  # per epoch: epoch, train_loss, dev scores
    seconds: float = 0.0
    test_predicted: list = field(default_factory=list)  # per test example: its label (ner: its tags)
    test_onnx: dict = field(default_factory=dict)  # precision -> test scores of the model exported to ONNX


@dataclass
class EvaluationResult:
    metric: str
    lr: float
    test: dict  # every score's mean, "<name>_std", "per_seed", "seeds" and "ci95" (name -> [low, high])
    dev: dict
    seeds: list[SeedResult]
    converged: bool  # every seed stopped early or peaked before its last epoch
    seconds: float
    test_onnx: dict = field(default_factory=dict)  # precision -> test scores exported to ONNX, as `test`
    kept: dict = field(default_factory=dict)  # the kept model's adapt_distill.json (keep_best), if one was kept

    def to_dict(self) -> dict:
        return asdict(self)


# --- data ------------------------------------------------------------------------------------------

@dataclass
class Encoded:
    """One split, tokenized: features for the collator, their lengths, and (ner) each token's word."""

    features: list[dict]
    lengths: np.ndarray
    word_ids: list[list[int | None]] | None = None


def encode(task: TaskData, split: str, tokenizer, max_length: int) -> Encoded:
    """Tokenize a split. Classification: text (and its pair) truncated to max_length. NER: the label
    of a word goes on its first piece, the other pieces are ignored by the loss. A special-token
    string in the text ("[SEP]") is text, as in adaptation."""
    items = task.splits[split]
    index = {label: i for i, label in enumerate(task.labels)}
    if task.type == "classification":
        texts = [x.text for x in items]
        pairs = [x.text_pair for x in items] if task.has_pair else None
        batch = tokenizer(texts, pairs, truncation=True, max_length=max_length, split_special_tokens=True)
        features = [{k: batch[k][i] for k in batch.keys()} | {"labels": index[x.label]} for i, x in enumerate(items)]
        return Encoded(features, np.array([len(f["input_ids"]) for f in features]))
    batch = tokenizer([list(x.tokens) for x in items], is_split_into_words=True, truncation=True,
                      max_length=max_length, split_special_tokens=True)
    features, words = [], []
    for i, sentence in enumerate(items):
        ids = batch.word_ids(i)
        labels, previous = [], None
        for word in ids:
            labels.append(IGNORE if word is None or word == previous else index.get(sentence.tags[word], IGNORE))
            previous = word
        features.append({k: batch[k][i] for k in batch.keys()} | {"labels": labels})
        words.append(ids)
    return Encoded(features, np.array([len(f["input_ids"]) for f in features]), words)


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The batches of one epoch: a permutation that depends only on (seed, epoch), cut into windows
    of LENGTH_WINDOW batches sorted by length (little padding), then the batches shuffled."""
    rng = np.random.default_rng(stream_seed(seed, "order", epoch))
    order = rng.permutation(len(lengths))
    window = batch_size * LENGTH_WINDOW
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


# --- model -----------------------------------------------------------------------------------------

def load_for_task(model_path: str | Path, task: TaskData, seed: int):
    """The model with a fresh head for the task's labels, seeded so that a seed always starts alike."""
    cls = task_class(task.type)
    labels = {i: label for i, label in enumerate(task.labels)}
    try:  # the load report lists the new head: expected here
        with quiet_transformers(), seeded(seed, "task-head"):  # the new head's initialisation
            return cls.from_pretrained(str(model_path), num_labels=len(labels), id2label=labels,
                                       label2id={v: k for k, v in labels.items()}, use_safetensors=True,
                                       trust_remote_code=False)
    except Exception as exc:
        raise ModelError(f"cannot load {model_path} for {task.type}: {exc}") from None


def collator_for(task: TaskData, tokenizer):
    from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

    if task.type == "classification":
        return DataCollatorWithPadding(tokenizer, return_tensors="pt")
    return DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE, return_tensors="pt")


def predict(model, encoded: Encoded, collate, device: torch.device, batch_size: int) -> list[np.ndarray]:
    """Argmax label ids per example (classification: one id; ner: one per piece), in input order."""
    order = np.argsort(-encoded.lengths, kind="stable")
    out: list[np.ndarray | None] = [None] * len(order)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = collate([{k: v for k, v in encoded.features[i].items() if k != "labels"} for i in chunk])
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy()
            for row, i in enumerate(chunk):
                out[i] = logits[row].argmax(-1)[: encoded.lengths[i]] if logits.ndim == 3 else logits[row].argmax(-1)
    return out


def predicted_labels(task: TaskData, split: str, encoded: Encoded, predicted: list[np.ndarray]) -> list:
    """Predicted label ids as the task's labels: one per example (classification) or one tag per
    word (ner: a word's first piece; words cut off by truncation count as O)."""
    items = task.splits[split]
    if task.type == "classification":
        return [task.labels[int(p)] for p in predicted]
    predicted_tags = []
    for sentence, word_ids, ids in zip(items, encoded.word_ids, predicted):
        tags = ["O"] * len(sentence.tokens)
        seen = set()
        for position, word in enumerate(word_ids):
            if word is not None and word not in seen:
                seen.add(word)
                tags[word] = task.labels[int(ids[position])]
        predicted_tags.append(tags)
    return predicted_tags


def gold_labels(task: TaskData, split: str) -> list:
    """The split's gold labels (classification) or tag lists (ner)."""
    items = task.splits[split]
    return [x.label for x in items] if task.type == "classification" else [list(x.tags) for x in items]


def scores_of(task: TaskData, split: str, labels: list, config: FinetuneConfig) -> dict:
    """The split's scores from predicted labels (or tag lists)."""
    if task.type == "classification":
        return scoring.classification_scores(gold_labels(task, split), labels, task.labels, config.exclude_labels)
    return scoring.entity_scores(gold_labels(task, split), labels, config.scheme)


def scores(task: TaskData, split: str, encoded: Encoded, predicted: list[np.ndarray], config: FinetuneConfig) -> dict:
    """The split's scores from predicted label ids."""
    return scores_of(task, split, predicted_labels(task, split, encoded, predicted), config)


def example_counts(task: TaskData, predictions: dict[int, list], config: FinetuneConfig) -> scoring.ExampleCounts:
    """The test split's per-example counts for the seeds' predictions (seed -> labels or tag lists)."""
    gold = gold_labels(task, "test")
    if task.type == "classification":
        return scoring.classification_sample(gold, predictions, task.labels, config.exclude_labels)
    return scoring.entity_sample(gold, predictions, config.scheme)


def _numbers(values: dict) -> dict:
    return {k: v for k, v in values.items() if isinstance(v, (int, float))}


# --- one seed ----------------------------------------------------------------------------------------

def finetune_seed(model_path: Path, task: TaskData, data: dict[str, Encoded], tokenizer, seed: int,
                  config: FinetuneConfig, metric: str, root: Path, device: torch.device,
                  progress: Callable[[float], None] | None = None, cancel: Callable[[], bool] | None = None,
                  on_metrics: Callable[[int, dict[str, float]], None] | None = None) -> SeedResult:
    """Fine-tune with one seed in `root` (resuming from its checkpoint), keep the best dev epoch's
    weights, and score them on dev and test."""
    from safetensors.torch import load_model, save_model

    began = time.perf_counter()
    model = load_for_task(model_path, task, seed)
    model.to(device)
    collate = collator_for(task, tokenizer)
    lengths = data["train"].lengths
    per_epoch = len(epoch_batches(lengths, config.batch_size, seed, 0))
    train = TrainConfig(steps=per_epoch * config.epochs, batch_size=config.batch_size,
                        lr=config.learning_rate(model.config.hidden_size), weight_decay=config.weight_decay,
                        warmup=config.warmup, seed=seed, device=config.device, precision=config.precision)
    optimizer, scheduler = optimizer_for(model, train)
    state = {"curve": [], "best_epoch": 0, "best": None, "losses": []}
    start = 0
    if (checkpoint := latest_checkpoint(root)) is not None:
        start = load_checkpoint(checkpoint, {"model": model}, optimizer, scheduler)
        state = read_json(checkpoint / "state.json") or state
    dtype = autocast_dtype(config.precision, device)
    batches = epoch_batches(lengths, config.batch_size, seed, start // per_epoch)
    stopped_early = False
    model.train()
    for step in range(start, train.steps):
        epoch, position = divmod(step, per_epoch)
        if position == 0:
            batches = epoch_batches(lengths, config.batch_size, seed, epoch)
        if cancel is not None and cancel():
            save_checkpoint(root, step, {"model": model}, optimizer, scheduler, 1, state)
            raise Cancelled(f"cancelled at seed {seed}, step {step}; resume continues from there")
        batch = collate([data["train"].features[i] for i in batches[position]])
        torch.manual_seed(stream_seed(seed, "dropout", step))  # dropout depends on (seed, step) alone
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["losses"].append(float(loss.detach()))
        if progress:
            progress((step + 1) / train.steps)
        if position + 1 < per_epoch:
            continue
        # the end of an epoch: score dev, keep the best weights, stop when it no longer improves
        dev = scores(task, "dev", data["dev"], predict(model, data["dev"], collate, device, 2 * config.batch_size),
                     config)
        model.train()
        train_loss = float(np.mean(state["losses"])) if state["losses"] else math.nan
        state["losses"] = []
        state["curve"].append({"epoch": epoch + 1, "train_loss": train_loss, **{f"dev_{k}": v
                                                                                for k, v in _numbers(dev).items()}})
        if on_metrics:
            on_metrics(epoch + 1, {f"seed{seed}/train_loss": train_loss, f"seed{seed}/dev_{metric}": dev[metric]})
        if state["best"] is None or dev[metric] > state["best"]:
            state["best"], state["best_epoch"] = dev[metric], epoch + 1
            save_model(model, str(root / f"best-epoch-{epoch + 1}.safetensors"))
        save_checkpoint(root, step + 1, {"model": model}, optimizer, scheduler, 1, state)
        for old in root.glob("best-epoch-*.safetensors"):  # only the best the checkpoint names stays
            if old.name != f"best-epoch-{state['best_epoch']}.safetensors":
                old.unlink()
        if config.patience and epoch + 1 - state["best_epoch"] >= config.patience and epoch + 1 < config.epochs:
            stopped_early = True
            break
    load_model(model, str(root / f"best-epoch-{state['best_epoch']}.safetensors"))
    batch = 2 * config.batch_size
    dev = scores(task, "dev", data["dev"], predict(model, data["dev"], collate, device, batch), config)
    test_predicted = predicted_labels(task, "test", data["test"], predict(model, data["test"], collate, device, batch))
    test = scores_of(task, "test", test_predicted, config)
    test_onnx = {precision: scores(task, "test", data["test"], exported_predictions(
        model, data["test"], collate, batch, root / f"test-{precision}.onnx", precision), config)
        for precision in config.onnx}
    epochs_run = len(state["curve"])
    return SeedResult(seed, state["best_epoch"], epochs_run, stopped_early or epochs_run < config.epochs, dev, test,
                      state["curve"], time.perf_counter() - began, test_predicted, test_onnx)


def exported_predictions(model, encoded: Encoded, collate, batch_size: int, file: Path,
                         precision: str) -> list[np.ndarray]:
    """The split's predictions of the model exported to ONNX (its task head included) and run by
    ONNX Runtime on the CPU; the file is removed afterwards."""
    from core.export import OnnxTaskModel, write_onnx

    example = collate([{k: v for k, v in encoded.features[i].items() if k != "labels"} for i in range(2)])
    cpu = model.to("cpu").eval()
    try:
        write_onnx(cpu, {k: v.numpy() for k, v in example.items()}, "logits", file, precision)
        return predict(OnnxTaskModel(file), encoded, collate, torch.device("cpu"), batch_size)
    finally:
        for written in file.parent.glob(f"{file.stem}*"):
            written.unlink()


# --- several seeds -------------------------------------------------------------------------------------

def best_seed(results: list[SeedResult], metric: str) -> SeedResult:
    """The seed with the best dev score, the first seed on a tie."""
    return max(results, key=lambda r: (r.dev[metric], -r.seed))


def keep_best(model_path: Path, task: TaskData, results: list[SeedResult], out_dir: Path, keep: Path,
              metric: str) -> dict:
    """Write the best dev seed's fine-tuned model (the first on a tie), its task head and labels
    included, with the tokenizer, to the folder `keep`, built beside it; its adapt_distill.json."""
    from safetensors.torch import load_model

    best = best_seed(results, metric)
    info = {"kind": FINE_TUNED, "task_type": task.type, "labels": list(task.labels), "has_pair": task.has_pair,
            "metric": metric, "seeds": len(results), "seed": best.seed, "best_epoch": best.best_epoch,
            "dev": _numbers(best.dev), "test": _numbers(best.test), "source": str(model_path)}
    if (keep / "config.json").is_file():  # written before the evaluation was interrupted
        return read_json(keep / "adapt_distill.json") or info
    weights = out_dir / f"seed-{best.seed}" / f"best-epoch-{best.best_epoch}.safetensors"
    if not weights.is_file():
        raise ModelError(f"the fine-tuned weights of seed {best.seed} are gone ({weights}): start a new evaluation with --keep")
    model = load_for_task(model_path, task, best.seed)
    load_model(model, str(weights))
    shutil.rmtree(work := keep.with_name(f".{keep.name}.partial"), ignore_errors=True)
    try:
        with quiet_transformers():
            model.save_pretrained(str(work))
        load_tokenizer(model_path).save_pretrained(str(work))
        write_json(work / "adapt_distill.json", info)
        os.replace(work, keep)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return info


def evaluate_model(model_path: str | Path, task: TaskData, out_dir: str | Path, config: FinetuneConfig,
                   progress: Callable[[str, float], None] | None = None, cancel: Callable[[], bool] | None = None,
                   on_metrics: Callable[[int, dict[str, float]], None] | None = None,
                   keep: Path | None = None) -> EvaluationResult:
    """Fine-tune the model at model_path on the task with config.seeds seeds and score it. A seed that
    finished before (its result.json in out_dir) is not run again. With `keep`, the best seed's
    fine-tuned model is written there (keep_best); each seed's weights are removed once done with."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metric = config.metric_for(task.type, task.labels)
    device = resolve_device(config.device)
    tokenizer = load_tokenizer(model_path)
    if progress:
        progress("tokenizing", 0.0)
    data = {split: encode(task, split, tokenizer, config.max_length) for split in ("train", "dev", "test")}
    results: list[SeedResult] = []
    seeds = [config.seed + k for k in range(config.seeds)]
    if on_metrics:  # the reporter's step counter runs over all seeds
        per_epoch = len(epoch_batches(data["train"].lengths, config.batch_size, 0, 0))
        on_metrics(0, {"total_steps": per_epoch * config.epochs * len(seeds)})
    for k, seed in enumerate(seeds):
        root = out_dir / f"seed-{seed}"
        done = root / "result.json"
        if not done.is_file():
            root.mkdir(parents=True, exist_ok=True)
            report = (lambda f, k=k: progress("training", (k + f) / len(seeds))) if progress else None
            result = finetune_seed(Path(model_path), task, data, tokenizer, seed, config, metric, root, device,
                                   report, cancel, on_metrics)
            write_json(done, asdict(result))
            shutil.rmtree(checkpoint_dir(root), ignore_errors=True)  # optimizer state: no longer needed
        results.append(SeedResult(**read_json(done)))
        # one model's weights at most stay on disk: with keep, the best seed's so far
        _drop_weights(out_dir, [r.seed for r in results if keep is None or r is not best_seed(results, metric)])
    if keep is not None:
        if progress:
            progress("keeping the best seed's model", 1.0)
        kept = keep_best(Path(model_path), task, results, out_dir, Path(keep), metric)
        _drop_weights(out_dir, seeds)
    lr = config.learning_rate(_hidden_size(model_path))
    test = scoring.aggregate([_numbers(r.test) for r in results])
    if all(r.test_predicted for r in results):  # a seed finished before predictions were kept has none
        test["ci95"] = scoring.bootstrap_intervals(
            example_counts(task, {r.seed: r.test_predicted for r in results}, config), scoring.METRICS[task.type])
        test["bootstrap"] = dict(scoring.BOOTSTRAP)
    onnx = {precision: scoring.aggregate([_numbers(r.test_onnx[precision]) for r in results])
            for precision in config.onnx if all(precision in r.test_onnx for r in results)}
    return EvaluationResult(
        metric, lr, test, scoring.aggregate([_numbers(r.dev) for r in results]), results,
        all(r.stopped_early or r.best_epoch < r.epochs_run for r in results), sum(r.seconds for r in results), onnx,
        kept if keep is not None else {})


def _drop_weights(out_dir: Path, seeds: list[int]) -> None:
    for seed in seeds:
        for weights in (out_dir / f"seed-{seed}").glob("best-epoch-*.safetensors"):
            os.unlink(weights)


def _hidden_size(model_path: str | Path) -> int:
    config = read_json(Path(model_path) / "config.json")
    return int(config.get("hidden_size") or config.get("dim") or 768)
