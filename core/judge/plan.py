"""The largest student that answers within a latency budget, measured rather than guessed.

A student's speed depends on its shape, not on its weights, so candidate shapes are built with
random weights and timed the way the speed benchmark times models (core.judge.speed): torch
pinned to the serving threads, warm-up forwards, at least MIN_LATENCY_REPEATS batch-1 forwards,
the same token ids for every model, percentiles of the latencies. Candidates keep the teacher's
head width and FFN ratio and its vocabulary (a distilled student shares it); they differ in layers
and hidden width. For each number of layers a binary search finds the widest shape within the
budget (latency grows with width), so a 12 x 768 teacher needs about 50 measurements, not 144.

The answer is the candidate with the most parameters in its layers (the embeddings left out: a
wide one-layer student would otherwise win on its vocabulary's embeddings alone) among those within
the budget, with the candidates measured nearest to it by that measure and the teacher's own figure
beside them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from core.errors import ConfigError
from core.judge.settings import MIN_LATENCY_REPEATS
from core.judge.speed import cpu_model, forward_seconds, token_inputs

PERCENTILES = (50, 90, 95, 99)
WARMUP = 3


@dataclass
class Measured:
    """One shape and its batch-1 latency in milliseconds."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    parameters: int  # of the encoder that is timed
    layer_parameters: int  # the same less the embeddings: what the depth and width buy, the pick's measure
    latency_ms_p50: float
    latency_ms_p95: float
    latency_ms: float  # at the percentile the budget is about
    meets: bool

    @property
    def name(self) -> str:
        return f"L{self.layers}-H{self.hidden}"

    def to_dict(self) -> dict:
        return {"shape": self.name, **asdict(self)}


def layer_parameters(model) -> int:
    """Parameters of the encoder's layers (and pooler), its embeddings left out: a 30k vocabulary's
    embeddings would make a wide one-layer student look larger than a deeper one that computes more."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("embeddings."))


def check_budget(latency_ms: float, percentile: int) -> None:
    if not 0 < latency_ms <= 60_000:
        raise ConfigError(f"--latency-ms must be above 0 and at most 60,000 ms, got {latency_ms:g}")
    if percentile not in PERCENTILES:
        raise ConfigError(f"--percentile must be one of {', '.join(map(str, PERCENTILES))}, got {percentile}")


def candidate_widths(hidden: int, heads: int) -> list[int]:
    """Hidden widths from one head to the teacher's, in steps of one head (the head width kept)."""
    head = hidden // heads
    return [head * k for k in range(1, heads + 1)]


def _config(teacher: dict, layers: int, hidden: int):
    from transformers import BertConfig

    head = teacher["hidden"] // teacher["heads"]
    ratio = teacher["intermediate"] / teacher["hidden"]
    return BertConfig(vocab_size=teacher["vocab_size"], hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=hidden // head, intermediate_size=int(round(hidden * ratio)),
                      max_position_embeddings=teacher.get("positions") or 512)


def time_model(model, seq_len: int, vocab_size: int, device, repeats: int) -> list[float]:
    """Milliseconds of each of `repeats` batch-1 forwards after WARMUP untimed ones."""
    import torch

    single, _ = token_inputs(vocab_size, seq_len, 1, device)
    cuda = device.type == "cuda"
    with torch.inference_mode():
        for _ in range(WARMUP):
            model(**single)
        return [1000.0 * forward_seconds(model, single, cuda) for _ in range(repeats)]


def search_shapes(most_layers: int, widths: list[int], meets: Callable[[int, int], bool],
                  progress: Callable[[str, float], None] | None = None) -> dict[int, int | None]:
    """For each number of layers, the widest of `widths` (ascending) that meets the budget (None when
    not even the narrowest does), by bisection: latency grows with width at a given depth."""
    widest: dict[int, int | None] = {}
    for layers in range(1, most_layers + 1):
        if progress:
            progress("measuring shapes", (layers - 1) / most_layers)
        if not meets(layers, widths[0]):
            widest[layers] = None
            continue
        low, high = 0, len(widths) - 1
        while low < high:
            middle = (low + high + 1) // 2
            if meets(layers, widths[middle]):
                low = middle
            else:
                high = middle - 1
        widest[layers] = widths[low]
    if progress:
        progress("measuring shapes", 1.0)
    return widest


def plan_student(teacher: dict, teacher_path, budget_ms: float, percentile: int = 95, device: str = "cpu",
                 threads: int = 1, seq_len: int = 128, repeats: int = MIN_LATENCY_REPEATS,
                 progress: Callable[[str, float], None] | None = None) -> dict:
    """Measure the teacher and candidate students on this machine; {"pick": the largest candidate
    within the budget or None, "around": its neighbours by parameters, "teacher": the teacher's
    figure, "candidates": every shape measured, "setting": how}. teacher: its shape (layers, hidden,
    heads, intermediate, vocab_size, positions)."""
    import torch
    from transformers import BertModel

    from core.devices import resolve_device
    from core.judge.speed import encoder_parameters, load_average, load_encoder

    check_budget(budget_ms, percentile)
    if repeats < MIN_LATENCY_REPEATS:
        raise ConfigError(f"repeats must be at least {MIN_LATENCY_REPEATS}, got {repeats}")
    target = resolve_device(device)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    started, load_before = time.perf_counter(), load_average()
    measured: dict[tuple[int, int], Measured] = {}

    def figure(model, layers: int, hidden: int) -> Measured:
        times = time_model(model, seq_len, teacher["vocab_size"], target, repeats)
        p50, p95, at = np.percentile(times, [50, 95, percentile])
        config = model.config
        return Measured(layers, hidden, config.num_attention_heads, config.intermediate_size,
                        encoder_parameters(model), layer_parameters(model), float(p50), float(p95), float(at),
                        float(at) <= budget_ms)

    def measure(layers: int, hidden: int) -> Measured:
        if (layers, hidden) not in measured:
            torch.manual_seed(0)
            model = BertModel(_config(teacher, layers, hidden), add_pooling_layer=False).eval().to(target)
            measured[layers, hidden] = figure(model, layers, hidden)
            del model
        return measured[layers, hidden]

    widths = candidate_widths(teacher["hidden"], teacher["heads"])
    try:
        model = load_encoder("teacher", teacher_path, target, seq_len)
        teacher_figure = figure(model, teacher["layers"], teacher["hidden"])
        del model
        search_shapes(teacher["layers"], widths, lambda layers, hidden: measure(layers, hidden).meets, progress)
    finally:
        torch.set_num_threads(previous)
    candidates = sorted(measured.values(), key=lambda m: (m.layer_parameters, m.layers))
    within = [m for m in candidates if m.meets]
    pick = max(within, key=lambda m: (m.layer_parameters, -m.latency_ms)) if within else None
    around = []
    if pick is not None:
        index = candidates.index(pick)
        around = candidates[max(0, index - 2):index] + candidates[index + 1:index + 3]
    return {"budget_ms": budget_ms, "percentile": percentile, "pick": pick, "around": around,
            "teacher": teacher_figure, "candidates": candidates,
            "setting": {"device": str(target), "threads": threads, "seq_len": seq_len, "repeats": repeats,
                        "warmup": WARMUP, "torch_version": torch.__version__, "cpu_model": cpu_model(),
                        "load_before": load_before, "load_after": load_average(),
                        "seconds": time.perf_counter() - started}}
