"""Which device a run uses and the autocast type it trains in."""

from __future__ import annotations

import torch

from core.errors import ConfigError


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
