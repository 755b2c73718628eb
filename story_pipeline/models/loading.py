"""Loading the shipped ToyWorld models: safetensors only, local folders only, one clear error; and
whether bf16 autocast pays on this CPU."""

import functools
from pathlib import Path

import torch

from story_pipeline.errors import ConfigError

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
    try:
        model = cls.from_pretrained(str(folder), use_safetensors=True, local_files_only=True,
                                    torch_dtype=torch.float32)
    except Exception as e:  # shape mismatch, truncated safetensors, bad config: one sentence, not a traceback
        reason = str(e).split(". ")[0].split("\n")[0][:200]
        raise ConfigError(f"{what} weights in {folder} do not match its config.json or are damaged ({reason}); "
                          f"re-export the folder or retrain it with `python -m {train_module} --out {folder}`.") from None
    return model.float().eval()


@functools.cache
def cpu_bf16() -> bool:
    """True when this CPU has bf16 instructions (x86: AVX512_BF16 or AMX-BF16; Arm: BF16). The tiny
    models run under bf16 autocast only then. Elsewhere autocast emulates bf16: a video-model training
    step is ~13x slower than in float32 on an AVX2-only CPU, and 2.4x slower on an AVX-512 CPU without
    BF16, which oneDNN's own check (``_is_mkldnn_bf16_supported``) counts as bf16-capable."""
    flags = _cpu_flags()
    if flags is None:  # no /proc/cpuinfo (not Linux): oneDNN's check, else float32
        try:
            return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (x86 "flags", Arm "Features"), None where unreadable."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags or None
