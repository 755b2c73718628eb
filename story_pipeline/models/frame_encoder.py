"""ToyWorld frame encoder ("toy CLIP"): a small CNN mapping an RGB frame into the frozen MiniLM caption space.

    from story_pipeline.models.frame_encoder import encode_frames, load_frame_encoder
    from story_pipeline.models.text_encoder import get_text_encoder
    enc = load_frame_encoder("data/models/toyworld_frame_encoder")  # config.json + diffusion_pytorch_model.safetensors
    f = encode_frames(enc, clip.rgb)                      # (F, H, W, 3) uint8 -> (F, 384) float32, unit rows
    t = get_text_encoder().encode([clip.caption])         # (1, 384), the same space
    (f @ t.T).mean()                                      # the paper's Sem score (see story_pipeline.metrics)

Only the image side is learnt: the text side is the project's bundled all-MiniLM-L6-v2
(``story_pipeline.models.text_encoder``), frozen. So any caption, query or prompt the pipeline already
embeds can be compared with frames, and a frame-embedding column of the clip index lives in the
same 384-d space as its caption column. Trained by ``python -m story_pipeline.train.frame_encoder``
with a symmetric InfoNCE (CLIP) loss and a learnable temperature ``logit_scale``; see the model
card in the weights folder for data, steps and zero-shot accuracy.

Frames are area-resized to ``input_size`` (64 px, the generation resolution) like the depth net.
Embeddings are pooled from the last feature map by mean + max (the max keeps a small character's
colour from being averaged away by the background), then projected linearly and L2-normalised.
"""

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


from story_pipeline.models.loading import CONFIG_NAME, WEIGHTS_NAME, load_pretrained  # noqa: F401  (re-exported)


@dataclass
class FrameEncoderConfig:
    input_size: int = 64  # frames are area-resized to 64x64: the generation resolution; 128 costs 4x per step
    stem_channels: int = 32  # 4x4 stride-2 patch stem: 64 px -> 32 px at once (a full-res conv would cost 4x)
    channels: tuple = (32, 64, 128, 256)  # residual stages at 32, 16, 8, 4 px: ~0.7 s/step at batch 128, 1 thread, bf16
    blocks_per_stage: tuple = (1, 1, 2, 1)  # most capacity at 8 px, where a character's shape and parts are
    groups: int = 8  # GroupNorm groups: no batch statistics, so eval == train and tiny eval batches are fine
    embed_dim: int = 384  # all-MiniLM-L6-v2's hidden size: embeddings live in the caption space
    init_logit_scale: float = math.log(1 / 0.07)  # CLIP's initial temperature 0.07, learnt from there


# --- model ------------------------------------------------------------------------------------
class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int, stride: int = 1):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.norm2 = nn.GroupNorm(min(groups, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.AvgPool2d(stride) if stride > 1 else nn.Identity(), nn.Conv2d(cin, cout, 1))
        else:
            self.skip = nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class FrameEncoder(ModelMixin, ConfigMixin):
    """CNN: (B, 3, S, S) RGB in [0, 1] -> (B, embed_dim) unit vectors in the MiniLM caption space.

    ``logit_scale`` is the learnt inverse temperature of the contrastive loss (exp(logit_scale) =
    1 / T); it is part of the weights but not of the embedding. Defaults come from FrameEncoderConfig.
    """

    @register_to_config
    def __init__(self, input_size: int = FrameEncoderConfig.input_size,
                 stem_channels: int = FrameEncoderConfig.stem_channels,
                 channels: tuple = FrameEncoderConfig.channels,
                 blocks_per_stage: tuple = FrameEncoderConfig.blocks_per_stage,
                 groups: int = FrameEncoderConfig.groups, embed_dim: int = FrameEncoderConfig.embed_dim,
                 init_logit_scale: float = FrameEncoderConfig.init_logit_scale):
        super().__init__()
        if len(channels) != len(blocks_per_stage):
            raise ValueError(f"channels {channels} and blocks_per_stage {blocks_per_stage} need the same length.")
        self.stem = nn.Conv2d(3, stem_channels, 4, stride=2, padding=1)
        stages, cin = [], stem_channels
        for i, (c, n) in enumerate(zip(channels, blocks_per_stage)):
            stride = 1 if i == 0 else 2  # the stem already halved the input
            stages.append(nn.Sequential(*[ResBlock(cin if j == 0 else c, c, groups, stride if j == 0 else 1)
                                          for j in range(n)]))
            cin = c
        self.stages = nn.ModuleList(stages)
        self.norm_out = nn.GroupNorm(min(groups, cin), cin)
        self.proj = nn.Linear(2 * cin, embed_dim)  # [mean-pool, max-pool] -> caption space
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        h = self.stem(rgb * 2 - 1)  # (B, C0, S/2, S/2)
        for stage in self.stages:
            h = stage(h)  # (B, Ci, S / 2^(i+1), S / 2^(i+1))
        h = F.silu(self.norm_out(h))
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)  # (B, 2C)
        return F.normalize(self.proj(pooled), dim=-1)  # (B, D) unit rows


def build_frame_encoder(config: FrameEncoderConfig | None = None) -> FrameEncoder:
    """A randomly initialised FrameEncoder from a FrameEncoderConfig."""
    return FrameEncoder(**asdict(config or FrameEncoderConfig()))


def load_frame_encoder(folder: str | Path) -> FrameEncoder:
    """Load a FrameEncoder saved with ``save_pretrained`` (config.json + safetensors weights), in fp32, eval mode."""
    return load_pretrained(FrameEncoder, folder, "Frame encoder", "story_pipeline.train.frame_encoder")


def frames_to_tensor(frames: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, size, size) float32 in [0, 1], area-resized (the training resize too)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255  # (N, 3, H, W)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="area")
    return x


@torch.no_grad()
def encode_frames(model: FrameEncoder, frames: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB frames -> (N, 384) float32 L2-normalised embeddings in MiniLM caption space."""
    frames = np.asarray(frames)
    if frames.ndim == 3 and frames.shape[-1] == 3:
        frames = frames[None]  # one (H, W, 3) image
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"encode_frames expects (N, H, W, 3) uint8 frames, got {frames.dtype} {frames.shape}.")
    size = model.config.input_size
    dtype = next(model.parameters()).dtype
    out = np.empty((len(frames), model.config.embed_dim), np.float32)
    for i in range(0, len(frames), batch_size):
        x = frames_to_tensor(frames[i:i + batch_size], size)  # (B, 3, S, S)
        out[i:i + batch_size] = F.normalize(model(x.to(dtype)).float(), dim=-1).numpy()
    return out
