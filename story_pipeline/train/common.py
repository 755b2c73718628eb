"""Pieces every ToyWorld training script shares: CLI from a config dataclass, the learning-rate
schedule, and atomic checkpoints (safetensors weights; the optimizer state loads with
``torch.load(weights_only=True)``)."""

import argparse
import dataclasses
import json
import math
import signal
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

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


def read_checkpoint_state(ckpt: Path) -> dict:
    """state.json of the run in ``ckpt`` (to resume or export it); exits with one sentence if none."""
    path = Path(ckpt) / "state.json"
    if not path.is_file():
        sys.exit(f"No checkpoint to resume from: {path} does not exist; run without --resume.")
    return json.loads(path.read_text())


def load_checkpoint(ckpt: Path, model, opt, state: dict) -> None:
    """Put the weights and optimizer state saved by ``save_checkpoint`` back into model and opt."""
    model.load_state_dict(load_file(str(Path(ckpt) / "model.safetensors")))
    opt.load_state_dict(torch.load(Path(ckpt) / "optimizer.pt", weights_only=True))
    print(f"resumed at step {state['step']} ({state['train_seconds'] / 60:.1f} min done)", flush=True)


class StopOnSignal:
    """SIGTERM/SIGINT set ``requested``: the loop finishes its step, checkpoints and exports."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum, frame):
        print(f"signal {signum}: stopping after this step", flush=True)
        self.requested = True
