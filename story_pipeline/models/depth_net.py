"""ToyWorld depth net: a small U-Net, RGB frame -> relative inverse depth (the MiDaS of ToyWorld).

    from story_pipeline.models.depth_net import load_depth_net, predict_depth
    net = load_depth_net("data/models/toyworld_depth")     # config.json + diffusion_pytorch_model.safetensors
    inv_depth = predict_depth(net, clip.rgb)               # (F, H, W) uint8x3 -> (F, H, W) float32, larger = nearer

Trained by ``python -m story_pipeline.train.depth_net`` on ToyWorld renders (see the model card
in the weights folder). Like MiDaS, the output is *inverse* depth (disparity), not depth:
- inverse depth is bounded (the sky at 40 m is ~0.025, the nearest ground ~0.6 per metre) while
  depth spans 1.6-40 m and its far end (sky, horizon) is where the error would pile up;
- the ground plane is a straight ramp in inverse depth (1/z grows linearly with the image row
  below the horizon), so a CNN fits it with a constant gradient and spends capacity on objects;
- it is what the paper's MiDaS gives, so the structure-guidance code downstream (normalise per
  clip to [-1, 1], nearer = larger) treats this net and MiDaS alike.
The net is trained with a scale-and-shift-invariant loss plus a weak absolute term, so its output
is roughly inverse metres in ToyWorld and stays steady from frame to frame (per-clip
normalisation does not flicker); callers should still treat it as *relative* inverse depth.

The metric (``si_rmse``), used for training, the model card and the tests: per frame, ground truth
inverse depth min-max normalised to [0, 1]; the prediction aligned to it by least squares (one
scale >= 0, one shift); the RMSE of the aligned prediction; averaged over frames. So 0.05 means "off
by 5% of the frame's near-far range, after the best affine fit", the same units as the [-1, 1]
structure map (up to a factor 2). The baseline it is compared with (``ground_plane_baseline``)
is the ToyWorld ground plane alone: inverse depth rising linearly below the horizon, constant
above (the best per-frame linear ramp once least-squares aligned).
"""

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
class DepthNetConfig:
    input_size: int = 64  # frames are resized to 64x64: the generation resolution; 128 costs 4x per step
    in_channels: int = 3  # RGB in [0, 1]; the net adds a row-coordinate channel itself
    channels: tuple = (16, 32, 64, 128)  # per U-Net level (64, 32, 16, 8 px): 0.9M params, 1.8 MB in fp16, 0.36 s/step
    layers_per_level: int = 1  # residual blocks per level and side; depth is mostly layout, not texture
    groups: int = 8  # GroupNorm groups; batch-size independent (batches are small on CPU)


# --- model ------------------------------------------------------------------------------------
class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(min(groups, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class DepthNet(ModelMixin, ConfigMixin):
    """U-Net: (B, 3, S, S) RGB in [0, 1] -> (B, 1, S, S) relative inverse depth (larger = nearer).
    S must be divisible by 2 ** (len(channels) - 1). Defaults come from DepthNetConfig."""

    @register_to_config
    def __init__(self, input_size: int = DepthNetConfig.input_size, in_channels: int = DepthNetConfig.in_channels,
                 channels: tuple = DepthNetConfig.channels, layers_per_level: int = DepthNetConfig.layers_per_level,
                 groups: int = DepthNetConfig.groups):
        super().__init__()
        ch = list(channels)
        # Row coordinate as an extra input channel: with a fixed level camera the ground's inverse
        # depth is a function of the row, and convolutions alone are translation-invariant.
        self.stem = nn.Conv2d(in_channels + 1, ch[0], 3, padding=1)
        self.down_blocks, self.downsamplers = nn.ModuleList(), nn.ModuleList()
        for i, c in enumerate(ch):
            cin = ch[max(i - 1, 0)]
            self.down_blocks.append(nn.Sequential(*[ResBlock(cin if j == 0 else c, c, groups)
                                                    for j in range(layers_per_level)]))
            if i < len(ch) - 1:
                self.downsamplers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = ResBlock(ch[-1], ch[-1], groups)
        self.up_blocks, self.upsamplers = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(ch) - 1)):
            self.upsamplers.append(nn.Conv2d(ch[i + 1], ch[i], 3, padding=1))
            self.up_blocks.append(nn.Sequential(*[ResBlock(2 * ch[i] if j == 0 else ch[i], ch[i], groups)
                                                  for j in range(layers_per_level)]))
        self.norm_out = nn.GroupNorm(min(groups, ch[0]), ch[0])
        self.conv_out = nn.Conv2d(ch[0], 1, 3, padding=1)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        B, _, H, W = rgb.shape
        rows = torch.linspace(-1, 1, H, device=rgb.device, dtype=rgb.dtype).view(1, 1, H, 1).expand(B, 1, H, W)
        h = self.stem(torch.cat([rgb * 2 - 1, rows], dim=1))  # (B, C0, H, W)
        skips = []
        for i, block in enumerate(self.down_blocks):
            h = block(h)
            if i < len(self.downsamplers):
                skips.append(h)
                h = self.downsamplers[i](h)  # (B, Ci, H / 2^(i+1), W / 2^(i+1))
        h = self.mid(h)
        for up, block in zip(self.upsamplers, self.up_blocks):
            h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
            h = block(torch.cat([h, skips.pop()], dim=1))  # (B, Ci, ...)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, 1, H, W)


def build_depth_net(config: DepthNetConfig | None = None) -> DepthNet:
    """A randomly initialised DepthNet from a DepthNetConfig."""
    return DepthNet(**asdict(config or DepthNetConfig()))


def load_depth_net(folder: str | Path) -> DepthNet:
    """Load a DepthNet saved with ``save_pretrained`` (config.json + safetensors weights), in fp32, eval mode."""
    return load_pretrained(DepthNet, folder, "Depth net", "story_pipeline.train.depth_net")


@torch.no_grad()
def predict_depth(model: DepthNet, frames: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """(F, H, W, 3) uint8 RGB -> (F, H, W) float32 relative inverse depth (larger = nearer).

    Frames are area-resized to the net's input size and the prediction bilinearly resized back."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"predict_depth expects (F, H, W, 3) uint8 frames, got {frames.dtype} {frames.shape}.")
    n, H, W, _ = frames.shape
    size = model.config.input_size
    dtype = next(model.parameters()).dtype
    out = np.empty((n, H, W), np.float32)
    for i in range(0, n, batch_size):
        x = torch.from_numpy(frames[i:i + batch_size]).permute(0, 3, 1, 2).float() / 255  # (B, 3, H, W)
        x = F.interpolate(x, size=(size, size), mode="area") if (H, W) != (size, size) else x
        y = model(x.to(dtype)).float()  # (B, 1, size, size)
        if (H, W) != (size, size):
            y = F.interpolate(y, size=(H, W), mode="bilinear", align_corners=False)
        out[i:i + batch_size] = y[:, 0].numpy()
    return out


# --- metric and baseline ------------------------------------------------------------------------
def inverse_depth_target(depth: np.ndarray) -> np.ndarray:
    """(F, H, W) metric depth -> per-frame min-max normalised inverse depth in [0, 1] (1 = nearest)."""
    inv = 1.0 / np.asarray(depth, np.float64)
    lo = inv.min(axis=(1, 2), keepdims=True)
    hi = inv.max(axis=(1, 2), keepdims=True)
    return (inv - lo) / np.maximum(hi - lo, 1e-12)


def align_scale_shift(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per frame, pred (F, H, W) mapped onto target (F, H, W) by the least-squares scale and shift,
    the scale clamped at 0: a prediction with near and far swapped scores like a constant one."""
    p = np.asarray(pred, np.float64).reshape(len(pred), -1)  # (F, HW)
    t = np.asarray(target, np.float64).reshape(len(target), -1)
    pm, tm = p.mean(1, keepdims=True), t.mean(1, keepdims=True)
    var = ((p - pm) ** 2).mean(1, keepdims=True)
    scale = ((p - pm) * (t - tm)).mean(1, keepdims=True) / np.maximum(var, 1e-12)  # 0 for a constant pred
    scale = np.maximum(scale, 0.0)
    return (scale * (p - pm) + tm).reshape(pred.shape)


def si_rmse_per_frame(pred_inv_depth: np.ndarray, gt_depth: np.ndarray) -> np.ndarray:
    """(F,) scale-and-shift-invariant RMSE: RMSE between the least-squares-aligned prediction and
    the min-max normalised ground-truth inverse depth (see the module docstring)."""
    if pred_inv_depth.shape != gt_depth.shape:
        raise ValueError(f"si_rmse needs equal shapes, got {pred_inv_depth.shape} and {gt_depth.shape}.")
    target = inverse_depth_target(gt_depth)
    aligned = align_scale_shift(pred_inv_depth, target)
    return np.sqrt(((aligned - target) ** 2).mean(axis=(1, 2)))


def si_rmse(pred_inv_depth: np.ndarray, gt_depth: np.ndarray) -> float:
    """Mean over frames of ``si_rmse_per_frame``; 0 = perfect up to scale and shift."""
    return float(si_rmse_per_frame(pred_inv_depth, gt_depth).mean())


def ground_plane_baseline(num_frames: int, height: int, width: int, horizon_frac: float = 0.40) -> np.ndarray:
    """(F, H, W) inverse depth of the ToyWorld ground plane alone: 0 above the horizon, rising
    linearly with the row below it (a level pinhole camera sees the ground at 1/z ~ row - horizon).
    horizon_frac is the ToyWorld camera's (scene.Camera.horizon_frac)."""
    rows = np.arange(height, dtype=np.float32) + 0.5
    inv = np.maximum(rows - horizon_frac * height, 0.0)  # (H,)
    return np.broadcast_to(inv[None, :, None], (num_frames, height, width)).astype(np.float32)


def row_ramp_baseline(num_frames: int, height: int, width: int) -> np.ndarray:
    """(F, H, W) a plain linear ramp over all rows (no horizon): the weakest 'constant gradient' guess."""
    rows = np.arange(height, dtype=np.float32)
    return np.broadcast_to(rows[None, :, None], (num_frames, height, width)).astype(np.float32)
