"""Inference speed of several models measured side by side, fairly: the same token ids for
every model, warm-up forwards first, then interleaved repetitions (model 1, model 2, ...,
model 1, model 2, ...) so that a burst of other load on the machine hits every model alike,
and medians rather than means. Latency is one sequence (batch 1); throughput is sequences per
second at a batch size. What is timed is the encoder forward (AutoModel), what serving runs.

Measured as a serving engineer would: torch is pinned to a number of threads (one by default:
what one serving worker gets) for the whole measurement; at least MIN_LATENCY_REPEATS batch-1
forwards per model; p50, p95 and the interquartile range (p75 - p25) of the latency; the threads,
torch version, CPU model and 1-minute load average before and after are recorded; and a model's
result is flagged noisy (noise_reason) when its p95 is over NOISY_TAIL times its p50, when the
load on the machine changed during the measurement, or when other work beside it wanted more than
the cores. torch is imported when measuring, so that
the settings' checks can use this module without it."""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.judge.settings import BENCH_DEFAULTS, MIN_LATENCY_REPEATS
from core.errors import Cancelled, ConfigError, ModelError
from core.model_io import folder_size, quiet_transformers

if TYPE_CHECKING:
    import torch

Progress = Callable[[str, float], None]  # (stage, fraction of that stage done)
CancelCheck = Callable[[], bool]

STAGE = "measuring speed"
NOISY_TAIL = 3.0  # p95 over 3x p50: something else ran during the slow forwards
# The rest of the machine's load changing by more than half a core's worth of runnable threads
# while a measurement runs (noise_reason says how that is told from the 1-minute load average).
NOISY_LOAD = 0.5
LOAD_TIME_CONSTANT_S = 60.0  # Linux's 1-minute load average: exponential, 60 s time constant
LOAD_SECONDS = 15.0  # three of its 5-second updates: shorter, what others did meanwhile is not told


@dataclass
class SpeedResult:
    name: str
    path: str
    params: int  # of the encoder that is timed (AutoModel as loaded), not of the checkpoint on disk
    size_bytes: int  # the folder on disk
    device: str
    seq_len: int
    batch_size: int
    latency_ms_p50: float  # one sequence (batch 1)
    latency_ms_p95: float
    throughput_per_s: float  # sequences per second at batch_size
    speedup_vs_first: float  # the first model's p50 latency / this one's
    throughput_speedup_vs_first: float  # this throughput / the first model's
    latency_ms_iqr: float = 0.0  # the spread: p75 - p25 of the batch-1 latencies
    threads: int = 1  # torch threads for the whole measurement
    latency_repeats: int = 0  # timed batch-1 forwards per model
    throughput_repeats: int = 0  # timed batch forwards per model
    warmup: int = 0  # untimed forwards per model and shape
    torch_version: str = ""
    cpu_model: str = ""
    load_before: float | None = None  # 1-minute load average (None where the system has none)
    load_after: float | None = None
    seconds: float = 0.0  # wall time of the whole measurement, loading included
    noisy: bool = False
    noisy_reason: str = ""  # "" when not noisy, else why: "p95 is 4.2x p50", the load change

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_average() -> float | None:
    """The 1-minute load average; None where the system keeps none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def noise_reason(p50: float, p95: float, load_before: float | None, load_after: float | None, seconds: float,
                 busy_threads: int, cores: int | None = None) -> str:
    """Why a measurement is noisy, "" when it is not: a p95 over NOISY_TAIL x the p50, or other work
    on the machine changed, or crowded it, while it ran. The 1-minute load average L moves toward
    the number n of runnable threads with a 60 s time constant: after t seconds L = L0 d + n (1 - d),
    d = exp(-t / 60). So the measurement's own busy threads raise it by at most busy (1 - d): a rise
    of more than NOISY_LOAD beyond that is other work that started. Solved for n, the same formula
    gives the other threads' average meanwhile (n - busy), which tells a fall of more than
    NOISY_LOAD that is other work stopping (others over NOISY_LOAD) from earlier work winding down,
    ours included, which does not compete; and it flags others that, beside our threads, wanted
    more than the cores (by NOISY_LOAD). Those need a few of the kernel's 5-second updates, so they
    are judged on measurements of LOAD_SECONDS or more."""
    reasons = []
    if p50 > 0 and p95 > NOISY_TAIL * p50:
        reasons.append(f"p95 is {p95 / p50:.1f}x p50")
    if load_before is None or load_after is None:
        return "; ".join(reasons)
    decay = math.exp(-max(seconds, 0.0) / LOAD_TIME_CONSTANT_S)
    own = busy_threads * (1.0 - decay)
    others = (load_after - load_before * decay) / (1.0 - decay) - busy_threads if seconds >= LOAD_SECONDS else 0.0
    if load_after - load_before - own > NOISY_LOAD:
        reasons.append(f"the load average rose from {load_before:.2f} to {load_after:.2f}, more than the "
                       f"measurement itself explains ({own:+.2f})")
    elif load_before - load_after > NOISY_LOAD and others > NOISY_LOAD:
        reasons.append(f"the load average fell from {load_before:.2f} to {load_after:.2f}: other work "
                       f"(about {others:.1f} threads) ran and stopped meanwhile")
    elif cores and others + busy_threads > cores + NOISY_LOAD:
        reasons.append(f"the machine was crowded: about {others:.1f} other threads ran beside its {busy_threads} "
                       f"on {cores} cores (load average {load_before:.2f} to {load_after:.2f})")
    return "; ".join(reasons)


def _check_options(seq_len: int, batch_size: int, latency_repeats: int, throughput_repeats: int, warmup: int,
                   threads: int) -> None:
    for option, value, least in (("seq-len", seq_len, 1), ("batch-size", batch_size, 1),
                                 ("throughput repeats", throughput_repeats, 1), ("warmup", warmup, 0),
                                 ("threads", threads, 1)):
        if value < least:
            raise ConfigError(f"{option} must be at least {least}, got {value}")
    if latency_repeats < MIN_LATENCY_REPEATS:
        raise ConfigError(f"latency repeats must be at least {MIN_LATENCY_REPEATS} (fewer batch-1 forwards give no "
                          f"real p95), got {latency_repeats}: raise them to {MIN_LATENCY_REPEATS} or more")


def load_encoder(name: str, path: Path, device: torch.device, seq_len: int, threads: int = 1):
    """The encoder of a model folder in fp32 (one precision for all PyTorch models: a fair
    comparison), in eval mode on the device; an exported folder (model.onnx, core.export) as an
    ONNX Runtime session on the CPU with `threads` intra-op threads."""
    import torch
    from transformers import AutoModel

    from core.export import OnnxEncoder
    from core.folder_kinds import is_onnx_folder

    if not path.is_dir():
        raise ModelError(f"model '{name}': no such folder {path}")
    if is_onnx_folder(path):
        if device.type != "cpu":
            raise ConfigError(f"model '{name}' is an ONNX export: it is timed on the CPU; use --device cpu")
        model = OnnxEncoder(path, threads)
        if seq_len > model.config.max_position_embeddings:
            raise ConfigError(f"seq-len {seq_len} is longer than model '{name}' accepts "
                              f"({model.config.max_position_embeddings}): lower --seq-len")
        return model
    if not any(path.glob("*.safetensors")):
        raise ModelError(f"model '{name}' ({path}) has no .safetensors weights (pickled weights are never loaded)")
    try:
        with quiet_transformers():  # a missing MLM head or pooler is expected and irrelevant here
            model = AutoModel.from_pretrained(str(path), use_safetensors=True, trust_remote_code=False,
                                              dtype=torch.float32)
    except Exception as exc:
        raise ModelError(f"cannot load model '{name}' from {path}: {exc}") from None
    longest = getattr(model.config, "max_position_embeddings", None)
    if longest is not None and seq_len > longest:
        raise ConfigError(f"seq-len {seq_len} is longer than model '{name}' accepts ({longest}): lower --seq-len")
    return model.eval().to(device)


def encoder_parameters(model) -> int:
    """Parameters of the loaded encoder, what is timed: an MLM head on disk is not, a pooler the
    checkpoint lacks is (AutoModel adds one); an ONNX graph's weights."""
    if hasattr(model, "parameter_count"):
        return model.parameter_count
    return sum(p.numel() for p in model.parameters())


def token_inputs(vocab_size: int, seq_len: int, batch_size: int, device: torch.device) -> tuple[dict, dict]:
    """(one sequence, a batch): token ids from a fixed generator, so every model sees the same."""
    import torch

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
    batch = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}
    single = {key: value[:1].clone() for key, value in batch.items()}
    return single, batch


def forward_seconds(model, inputs: dict, cuda: bool) -> float:
    """Wall seconds of one forward; on a GPU the queued work is waited for on both sides."""
    import torch

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


@dataclass
class _Setting:
    """How a measurement was taken, recorded in each result."""
    device: str
    seq_len: int
    batch_size: int
    threads: int
    latency_repeats: int
    throughput_repeats: int
    warmup: int
    load_before: float | None
    load_after: float | None
    seconds: float


def measure_speed(
    models: Sequence[tuple[str, str | Path]],
    device: str = "cpu",
    seq_len: int = BENCH_DEFAULTS["seq_len"],
    batch_size: int = BENCH_DEFAULTS["batch_size"],
    latency_repeats: int = MIN_LATENCY_REPEATS,
    throughput_repeats: int = BENCH_DEFAULTS["throughput_repeats"],
    warmup: int = BENCH_DEFAULTS["warmup"],
    threads: int = BENCH_DEFAULTS["threads"],
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> list[SpeedResult]:
    """Latency (batch 1) and throughput (batch_size) of each (name, folder), in the given
    order, with torch pinned to `threads` for the whole measurement (restored after; on a GPU
    they matter only for the CPU side); the speed-ups are relative to the first model."""
    import torch

    from core.devices import resolve_device

    models = [(name, Path(path)) for name, path in models]
    if not models:
        raise ConfigError("no models to measure: pass at least one model folder")
    _check_options(seq_len, batch_size, latency_repeats, throughput_repeats, warmup, threads)
    target = resolve_device(device)
    cuda = target.type == "cuda"
    load_before, started = load_average(), time.perf_counter()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        loaded = []
        for name, path in models:
            _check(cancel)
            loaded.append(load_encoder(name, path, target, seq_len, threads))
        params = [encoder_parameters(model) for model in loaded]
        vocab = min(int(model.config.vocab_size) for model in loaded)
        single, batch = token_inputs(vocab, seq_len, batch_size, target)
        latencies, batches = _time_models(loaded, single, batch, warmup, latency_repeats, throughput_repeats, cuda,
                                          progress, cancel)
    finally:
        torch.set_num_threads(previous_threads)
    setting = _Setting(str(target), seq_len, batch_size, threads, latency_repeats, throughput_repeats, warmup,
                       load_before, load_average(), time.perf_counter() - started)
    del loaded
    if cuda:
        torch.cuda.empty_cache()
    # On a GPU one CPU thread waits for each forward; on the CPU all the pinned threads work.
    return _results(models, params, latencies, batches, setting, busy_threads=1 if cuda else threads)


def _time_models(loaded: list, single: dict, batch: dict, warmup: int, latency_repeats: int,
                 throughput_repeats: int, cuda: bool, progress: Progress | None,
                 cancel: CancelCheck | None) -> tuple[list[list[float]], list[list[float]]]:
    """Per model, the seconds of each timed batch-1 forward and of each batch forward."""
    import torch

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
                latencies[i].append(forward_seconds(model, single, cuda))
            report(len(loaded))
        for _ in range(throughput_repeats):
            _check(cancel)
            for i, model in enumerate(loaded):
                batches[i].append(forward_seconds(model, batch, cuda))
            report(len(loaded) * batch_size)
    return latencies, batches


def _results(models: list[tuple[str, Path]], params: list[int], latencies: list[list[float]],
             batches: list[list[float]], setting: _Setting, busy_threads: int) -> list[SpeedResult]:
    import torch

    results = []
    cpu = cpu_model()
    for (name, path), count, seconds, batch_seconds in zip(models, params, latencies, batches):
        p25, p50, p75, p95 = np.percentile(np.array(seconds) * 1000.0, [25, 50, 75, 95])
        reason = noise_reason(float(p50), float(p95), setting.load_before, setting.load_after, setting.seconds,
                              busy_threads, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
        results.append(SpeedResult(
            name=name, path=str(path), params=count, size_bytes=folder_size(path), device=setting.device,
            seq_len=setting.seq_len, batch_size=setting.batch_size, latency_ms_p50=float(p50),
            latency_ms_p95=float(p95), throughput_per_s=setting.batch_size / float(np.median(batch_seconds)),
            speedup_vs_first=0.0, throughput_speedup_vs_first=0.0, latency_ms_iqr=float(p75 - p25),
            threads=setting.threads, latency_repeats=setting.latency_repeats,
            throughput_repeats=setting.throughput_repeats, warmup=setting.warmup, torch_version=torch.__version__,
            cpu_model=cpu, load_before=setting.load_before, load_after=setting.load_after,
            seconds=round(setting.seconds, 3), noisy=bool(reason), noisy_reason=reason,
        ))
    first = results[0]
    for result in results:
        result.speedup_vs_first = first.latency_ms_p50 / result.latency_ms_p50
        result.throughput_speedup_vs_first = result.throughput_per_s / first.throughput_per_s
    return results
