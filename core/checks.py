"""The checks every setting goes through, and the bounds of what a run may ask for. Each check
raises a ConfigError that names the option and the accepted range in one line, so the CLI and the
pages show it as it is. Torch-free.

The bounds are generous (far above any run this tool is for) and exist so that a mistyped number
is refused when the run is created, not hours later as an OverflowError, a division by zero or a
machine out of memory. What a run may ask for within them is then bounded by memory
(core.memory, worker.resources)."""

from __future__ import annotations

import math
import re

from core.errors import ConfigError

# The most a run may ask for: whole-number settings.
MOST_STEPS = 10_000_000  # optimizer steps, and every step-counted setting (eval, checkpoints, logs, warmup)
MOST_BATCH = 65_536  # sequences per batch (training, fine-tuning, benchmarks)
MOST_GRAD_ACCUM = 1_024  # micro-batches per optimizer step
MOST_SEED = 2**63 - 1  # what the store's integers and torch's generators hold (derived seeds are large)
MOST_EPOCHS = 10_000
MOST_REPEATS = 100_000  # forwards per speed measurement
MOST_THREADS = 1_024
MOST_TOKENS_ADDED = 1_000_000  # tokens an incremental vocabulary may add (BERT's whole vocabulary is 30,522)
MOST_MIN_FREQUENCY = 1_000_000_000
# ... and of a model's shape: the student's, and any config.json read from a folder.
SHAPE_BOUNDS = {"layers": 128, "hidden": 16_384, "heads": 256, "intermediate": 65_536,
                "vocab_size": 2_000_000, "positions": 131_072, "token_types": 1_024}
MOST_LR = 1.0  # a larger peak learning rate only diverges
MOST_WEIGHT_DECAY = 1.0
MOST_GRAD_NORM = 1e6
MOST_LOSS_WEIGHT = 1e3

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DEVICE_HELP = "auto, cpu, mps, cuda or cuda:N"
SEQUENCE_TOKENS = (8, 8192)  # the least and most tokens per sequence a run may ask for
PRECISIONS = ("auto", "bf16", "fp32")


def shown(value) -> str:
    """A number as an error message quotes it: short even when it is absurdly long."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**12:
        return f"{value:.3g}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def check_whole(name: str, value, least: int = 1, most: int | None = None, hint: str = "") -> None:
    """A whole number from `least` to `most`, else a ConfigError naming the option (`hint` says
    what to do instead when that is not obvious)."""
    whole = isinstance(value, int) and not isinstance(value, bool)
    if not whole or value < least or (most is not None and value > most):
        bound = f"from {shown(least)} to {shown(most)}" if most is not None else f"of at least {shown(least)}"
        raise ConfigError(f"{name} must be a whole number {bound}, got {shown(value)}{hint}")


def check_number(name: str, value: float, least: float = 0.0, above: bool = False, most: float | None = None,
                 hint: str = "") -> None:
    """A finite number >= `least` (> `least` with `above`) and at most `most`, else a ConfigError
    naming the option (`hint` says what the number is)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
            or value < least or (above and value == least) or (most is not None and value > most):
        bound = "a positive number" if above and least == 0 else f"a number {'>' if above else '>='} {least:g}"
        if most is not None:
            bound += f" and at most {most:g}"
        raise ConfigError(f"{name} must be {bound}{hint}, got {shown(value)}")


def check_steps_or_fraction(name: str, value: float) -> None:
    """Warm-ups: a fraction of the steps when < 1, else a number of steps within MOST_STEPS."""
    check_number(name, value, most=MOST_STEPS, hint=" (a fraction of the steps, or steps)")


def check_seed(value: int) -> None:
    check_whole("seed", value, 0, MOST_SEED)


def check_heldout_fraction(value: float) -> None:
    """The share of blocks held out, for every stage: more than none, at most half."""
    if not isinstance(value, (int, float)) or not 0 < value <= 0.5:
        raise ConfigError(f"heldout-fraction must be more than 0 and at most 0.5, got {value}")


def check_device(name: str) -> str:
    """The device name, stripped, or a ConfigError naming the accepted ones. The one check used by
    the configs, the CLI and the dashboard."""
    name = (name or "auto").strip()
    if not _DEVICE.match(name):
        raise ConfigError(f"device must be {DEVICE_HELP}, got '{name}'")
    return name


def check_sequence(name: str, value: int) -> None:
    """Tokens per sequence: within SEQUENCE_TOKENS."""
    least, most = SEQUENCE_TOKENS
    if not isinstance(value, int) or not least <= value <= most:
        raise ConfigError(f"{name} must be between {least} and {most}, got {shown(value)}")


def check_precision(value: str) -> None:
    if value not in PRECISIONS:
        raise ConfigError(f"precision must be auto, bf16 or fp32, got '{value}'")


def check_shape(shape: dict, what: str) -> None:
    """A model's dimensions (a student's, or a config.json's) within SHAPE_BOUNDS."""
    for name, most in SHAPE_BOUNDS.items():
        if name in shape:
            check_whole(f"the {what}'s {name.replace('_', ' ')}", shape[name], 1, most)


CONFIG_FIELDS = {"vocab_size": "vocab_size", "num_hidden_layers": "layers", "hidden_size": "hidden",
                 "num_attention_heads": "heads", "intermediate_size": "intermediate",
                 "max_position_embeddings": "positions", "type_vocab_size": "token_types"}


def check_config_dimensions(config: dict, where: str) -> None:
    """A model's config.json read from a folder: each dimension it gives within SHAPE_BOUNDS, so a
    config that asks for 10^9 positions is refused before anything is allocated."""
    for field, name in CONFIG_FIELDS.items():
        value = config.get(field)
        if value is None:
            continue
        most = SHAPE_BOUNDS[name]
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
            raise ConfigError(f"{where} gives {field} = {shown(value)}, outside what this tool loads (1 to "
                              f"{most:,}): fix the config or pick another model")
