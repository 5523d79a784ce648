"""Inference speed of several models measured side by side, fairly: the same token ids for
every model, warm-up forwards first, then interleaved repetitions (model 1, model 2, ...,
model 1, model 2, ...) so that a burst of other load on the machine hits every model alike,
and medians rather than means. Latency is one sequence (batch 1); throughput is sequences per
second at a batch size. What is timed is the encoder forward (AutoModel), what serving runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from core.errors import Cancelled, ConfigError, ModelError
from core.models import count_parameters, folder_size
from core.training import resolve_device

Progress = Callable[[str, float], None]  # (stage, fraction of that stage done)
CancelCheck = Callable[[], bool]

STAGE = "measuring speed"


@dataclass
class SpeedResult:
    name: str
    path: str
    params: int
    size_bytes: int
    device: str
    seq_len: int
    batch_size: int
    latency_ms_p50: float  # one sequence (batch 1)
    latency_ms_p95: float
    throughput_per_s: float  # sequences per second at batch_size
    speedup_vs_first: float  # the first model's p50 latency / this one's
    throughput_speedup_vs_first: float  # this throughput / the first model's

    def to_dict(self) -> dict:
        return asdict(self)


def _check_options(seq_len: int, batch_size: int, latency_repeats: int, throughput_repeats: int, warmup: int,
                   threads: int | None) -> None:
    for option, value, least in (("seq-len", seq_len, 1), ("batch-size", batch_size, 1),
                                 ("latency repeats", latency_repeats, 1), ("throughput repeats", throughput_repeats, 1),
                                 ("warmup", warmup, 0)):
        if value < least:
            raise ConfigError(f"{option} must be at least {least}, got {value}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be at least 1, got {threads}")


def _load(name: str, path: Path, device: torch.device, seq_len: int):
    """The encoder of a model folder in fp32 (one precision for all: a fair comparison), in
    eval mode on the device."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    if not path.is_dir():
        raise ModelError(f"model '{name}': no such folder {path}")
    if not any(path.glob("*.safetensors")):
        raise ModelError(f"model '{name}' ({path}) has no .safetensors weights (pickled weights are never loaded)")
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # a missing MLM head or pooler is expected and irrelevant here
    hf_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(str(path), use_safetensors=True, trust_remote_code=False,
                                          dtype=torch.float32)
    except Exception as exc:
        raise ModelError(f"cannot load model '{name}' from {path}: {exc}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    longest = getattr(model.config, "max_position_embeddings", None)
    if longest is not None and seq_len > longest:
        raise ConfigError(f"seq-len {seq_len} is longer than model '{name}' accepts ({longest}): lower --seq-len")
    return model.eval().to(device)


def _inputs(vocab_size: int, seq_len: int, batch_size: int, device: torch.device) -> tuple[dict, dict]:
    """(one sequence, a batch): token ids from a fixed generator, so every model sees the same."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
    batch = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}
    single = {key: value[:1].clone() for key, value in batch.items()}
    return single, batch


def _seconds(model, inputs: dict, cuda: bool) -> float:
    """Wall seconds of one forward; on a GPU the queued work is waited for on both sides."""
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    model(**inputs)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _check(cancel: CancelCheck | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled("cancelled")


def measure_speed(
    models: Sequence[tuple[str, str | Path]],
    device: str = "cpu",
    seq_len: int = 128,
    batch_size: int = 32,
    latency_repeats: int = 30,
    throughput_repeats: int = 5,
    warmup: int = 3,
    threads: int | None = None,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> list[SpeedResult]:
    """Latency (batch 1) and throughput (batch_size) of each (name, folder), in the given
    order; the speed-ups are relative to the first model."""
    models = [(name, Path(path)) for name, path in models]
    if not models:
        raise ConfigError("no models to measure: pass at least one model folder")
    _check_options(seq_len, batch_size, latency_repeats, throughput_repeats, warmup, threads)
    target = resolve_device(device)
    cuda = target.type == "cuda"
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        loaded = []
        for name, path in models:
            _check(cancel)
            loaded.append(_load(name, path, target, seq_len))
        vocab = min(int(model.config.vocab_size) for model in loaded)
        single, batch = _inputs(vocab, seq_len, batch_size, target)
        latencies, batches = _time_models(loaded, single, batch, warmup, latency_repeats, throughput_repeats, cuda,
                                          progress, cancel)
    finally:
        if threads is not None:
            torch.set_num_threads(previous_threads)
    del loaded
    if cuda:
        torch.cuda.empty_cache()
    return _results(models, latencies, batches, str(target), seq_len, batch_size)


def _time_models(loaded: list, single: dict, batch: dict, warmup: int, latency_repeats: int,
                 throughput_repeats: int, cuda: bool, progress: Progress | None,
                 cancel: CancelCheck | None) -> tuple[list[list[float]], list[list[float]]]:
    """Per model, the seconds of each timed batch-1 forward and of each batch forward."""
    batch_size = batch["input_ids"].shape[0]
    # Progress counts sequences pushed through the models: a batch forward weighs batch_size.
    total = len(loaded) * (warmup * (1 + batch_size) + latency_repeats + throughput_repeats * batch_size)
    done = 0

    def report(sequences: int) -> None:
        nonlocal done
        done += sequences
        if progress:
            progress(STAGE, min(done / total, 1.0))

    latencies: list[list[float]] = [[] for _ in loaded]
    batches: list[list[float]] = [[] for _ in loaded]
    with torch.inference_mode():
        report(0)
        for model in loaded:
            _check(cancel)
            for _ in range(warmup):
                model(**single)
                model(**batch)
            if cuda:
                torch.cuda.synchronize()
            report(warmup * (1 + batch_size))
        for _ in range(latency_repeats):
            _check(cancel)
            for i, model in enumerate(loaded):
                latencies[i].append(_seconds(model, single, cuda))
            report(len(loaded))
        for _ in range(throughput_repeats):
            _check(cancel)
            for i, model in enumerate(loaded):
                batches[i].append(_seconds(model, batch, cuda))
            report(len(loaded) * batch_size)
    return latencies, batches


def _results(models: list[tuple[str, Path]], latencies: list[list[float]], batches: list[list[float]],
             device: str, seq_len: int, batch_size: int) -> list[SpeedResult]:
    results = []
    for (name, path), seconds, batch_seconds in zip(models, latencies, batches):
        p50, p95 = np.percentile(np.array(seconds) * 1000.0, [50, 95])
        results.append(SpeedResult(
            name=name, path=str(path), params=count_parameters(path), size_bytes=folder_size(path), device=device,
            seq_len=seq_len, batch_size=batch_size, latency_ms_p50=float(p50), latency_ms_p95=float(p95),
            throughput_per_s=batch_size / float(np.median(batch_seconds)),
            speedup_vs_first=0.0, throughput_speedup_vs_first=0.0,
        ))
    first = results[0]
    for result in results:
        result.speedup_vs_first = first.latency_ms_p50 / result.latency_ms_p50
        result.throughput_speedup_vs_first = result.throughput_per_s / first.throughput_per_s
    return results
