"""Checkpoints of a training run (safetensors weights plus a weights-only trainer state) and the
JSON files of a run folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from core.errors import DiskFull, is_disk_full

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


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)
