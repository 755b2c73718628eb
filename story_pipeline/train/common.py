"""Pieces every ToyWorld training script shares: CLI from a config dataclass, the learning-rate
schedule, and atomic checkpoints (safetensors weights; the optimizer state loads with
``torch.load(weights_only=True)``)."""

import argparse
import dataclasses
import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

from story_pipeline.fsutil import atomic_path, atomic_write_text


def parse_config(config_cls, doc: str, argv=None):
    """``--field-name value`` for every field of the dataclass (``--flag/--no-flag`` for bools)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    for f in dataclasses.fields(config_cls):
        if f.type is bool:
            p.add_argument(f"--{f.name.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=f.default)
        else:
            p.add_argument(f"--{f.name.replace('_', '-')}", type=f.type, default=f.default)
    return config_cls(**vars(p.parse_args(argv)))


def warmup_cosine_lr(lr: float, warmup_steps: int, step: int, progress: float) -> float:
    """Linear warm-up, then cosine from ``lr`` down to ``lr / 20`` as ``progress`` (0..1) runs out."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def save_checkpoint(ckpt: Path, model, opt, state: dict, best: bool) -> None:
    """Write model.safetensors (+ best.safetensors), optimizer.pt and state.json, each atomically."""
    ckpt.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(ckpt / "model.safetensors") as tmp:
        save_file(weights, str(tmp))
    if best:
        with atomic_path(ckpt / "best.safetensors") as tmp:
            save_file(weights, str(tmp))
    with atomic_path(ckpt / "optimizer.pt") as tmp:
        torch.save(opt.state_dict(), tmp)  # tensors and numbers only: loads with weights_only=True
    atomic_write_text(ckpt / "state.json", json.dumps(state, indent=1))
