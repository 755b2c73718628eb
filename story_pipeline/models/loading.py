"""Loading the shipped ToyWorld models: safetensors only, local folders only, one clear error."""

from pathlib import Path

import torch

from ..errors import ConfigError

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"  # what diffusers' save_pretrained writes
CONFIG_NAME = "config.json"


def load_pretrained(cls, folder: str | Path, what: str, train_module: str):
    """``cls.from_pretrained(folder)`` in fp32 eval mode; a missing file is one sentence naming the
    folder, the file and the command that trains it."""
    folder = Path(folder)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise ConfigError(f"{what} weights folder {folder} has no {name}; train it with "
                              f"`python -m {train_module} --out {folder}` or point to another folder.")
    model = cls.from_pretrained(str(folder), use_safetensors=True, local_files_only=True, torch_dtype=torch.float32)
    return model.float().eval()
