"""ToyWorld depth-guided video diffusion model: a diffusers ``UNetMotionModel`` (spatial resnets +
cross-attention over frozen MiniLM token states + temporal attention) and the paper's *structure
encoder*, a CNN over the depth sequence whose multi-scale features are **added** to the U-Net's
feature maps (like a T2I-Adapter).

    from story_pipeline.models.video_unet import load_video_unet
    model = load_video_unet("data/models/toyworld_video")       # config.json + diffusion_pytorch_model.safetensors
    v = model(x_t, t, text_states, depth=depth, structure_scale=1.0)
    # x_t (B, 3, F, H, W) noisy frames in [-1, 1]; t (B,) timesteps; text_states (B, L, 384);
    # depth (B, 1, F, H, W) in [-1, 1] (larger = nearer) or None; -> (B, 3, F, H, W) v-prediction

Where the structure goes in: the features of scale ``i`` are added to the hidden states *entering*
down block ``i`` (the conv_in output for the first block) and to those entering the mid block, so
both the encoder path and the skip connections see them. ``depth=None`` or ``structure_scale=0``
runs the plain text-to-video model: training drops the depth of some clips so this is a trained
mode, which is what the sampler's timestep clamping (tau) relies on. ``structure_scale`` is the
paper's strength multiplier. The output convolutions of the structure encoder start at zero
(ControlNet's zero convolutions), so an untrained encoder leaves the U-Net unchanged.

Pixel space, not latent: at 64x64 a ToyWorld frame is already small (12k values; an SD-style VAE
would give 8x8x4 latents that cannot hold a character's ears), and a VAE would be one more model
to train. Trained by ``python -m story_pipeline.train.video_unet``.
"""

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_motion_model import UNetMotionModel

from story_pipeline.models.loading import load_pretrained

TRAIN_MODULE = "story_pipeline.train.video_unet"


class StructureEncoder(nn.Module):
    """Per-frame CNN: depth (B*F, 1, H, W) -> one feature map per U-Net scale (+ one for the mid block)."""

    def __init__(self, channels: tuple, unet_channels: tuple, groups: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, channels[0], 3, padding=1), nn.SiLU(),
                                  nn.Conv2d(channels[0], channels[0], 3, padding=1), nn.SiLU())
        self.stages = nn.ModuleList()
        for i, c in enumerate(channels):
            cin = channels[max(i - 1, 0)]
            stride = 1 if i == 0 else 2
            self.stages.append(nn.Sequential(
                nn.Conv2d(cin, c, 3, stride=stride, padding=1), nn.GroupNorm(min(groups, c), c), nn.SiLU(),
                nn.Conv2d(c, c, 3, padding=1), nn.SiLU()))
        # zero convolutions into the U-Net's widths: scale i enters down block i, the last one the mid block
        outs = [unet_channels[0]] + list(unet_channels[:-1]) + [unet_channels[-1]]  # len = blocks + 1
        scales = list(range(len(unet_channels))) + [len(unet_channels) - 1]  # mid block: the coarsest scale
        self.scales = scales
        self.out = nn.ModuleList(nn.Conv2d(channels[s], o, 1) for s, o in zip(scales, outs))
        for conv in self.out:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, depth: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(depth)
        feats = []
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return [conv(feats[s]) for s, conv in zip(self.scales, self.out)]


class NoMotion(nn.Module):
    """Stands in for a motion module where the model has no temporal layer."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


class ToyVideoUNet(ModelMixin, ConfigMixin):
    """UNetMotionModel + StructureEncoder; saves and loads with save_pretrained/from_pretrained."""

    @register_to_config
    def __init__(
        self,
        sample_size: int = 64,  # trained at 64x64 (any multiple of 8 runs)
        in_channels: int = 3,  # RGB in [-1, 1], pixel space
        block_out_channels: tuple = (32, 64, 128, 128),  # 64, 32, 16, 8 px
        down_block_types: tuple = ("DownBlockMotion", "DownBlockMotion", "CrossAttnDownBlockMotion",
                                   "CrossAttnDownBlockMotion"),  # text cross-attention at 16 and 8 px only
        up_block_types: tuple = ("CrossAttnUpBlockMotion", "CrossAttnUpBlockMotion", "UpBlockMotion",
                                 "UpBlockMotion"),
        layers_per_block: int = 1,
        num_attention_heads: tuple = (1, 2, 4, 4),  # head width 32
        motion_num_attention_heads: tuple = (1, 2, 4, 4),
        motion_max_seq_length: int = 32,  # sinusoidal frame positions; shots have <= 32 frames here
        temporal_levels: tuple = (False, False, True, True),  # temporal attention at 32, 16, 8 px (+ mid);
        # at 64 px it cost half of a training step (8k length-8 sequences per clip) for little gain
        cross_attention_dim: int = 384,  # all-MiniLM-L6-v2 hidden size
        norm_num_groups: int = 8,
        structure_channels: tuple = (16, 32, 64, 96),  # structure encoder widths at 64, 32, 16, 8 px
        prediction_type: str = "v_prediction",  # what the U-Net predicts; the scheduler config says the same
    ):
        super().__init__()
        self.unet = UNetMotionModel(
            sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
            down_block_types=tuple(down_block_types), up_block_types=tuple(up_block_types),
            block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
            num_attention_heads=tuple(num_attention_heads), motion_num_attention_heads=tuple(motion_num_attention_heads),
            motion_max_seq_length=motion_max_seq_length, cross_attention_dim=cross_attention_dim,
            norm_num_groups=norm_num_groups, use_motion_mid_block=True,
        )
        for level, keep in enumerate(temporal_levels):
            if not keep:  # diffusers builds motion modules everywhere: drop those of this level
                u = self.unet
                for block in (u.down_blocks[level], u.up_blocks[len(u.up_blocks) - 1 - level]):
                    block.motion_modules = nn.ModuleList(NoMotion() for _ in block.motion_modules)
        self.structure = StructureEncoder(tuple(structure_channels), tuple(block_out_channels), norm_num_groups)

    def structure_features(self, depth: torch.Tensor) -> list[torch.Tensor]:
        """depth (B, 1, F, H, W) -> the features the forward adds (compute once per shot: they do not
        depend on the timestep), each (B*F, C_i, H_i, W_i)."""
        b, _, f, h, w = depth.shape
        return self.structure(depth.permute(0, 2, 1, 3, 4).reshape(b * f, 1, h, w).to(self.dtype))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                depth: torch.Tensor | None = None, structure_scale: float | torch.Tensor = 1.0,
                structure: list[torch.Tensor] | None = None) -> torch.Tensor:
        """sample (B, C, F, H, W); timestep () or (B,); encoder_hidden_states (B, L, D); depth
        (B, 1, F, H, W) or precomputed ``structure`` features or neither. ``structure_scale``: float,
        or (B,) per sample (0 drops a sample's structure). -> (B, C, F, H, W)."""
        u = self.unet
        b, _, f, h, w = sample.shape
        if structure is None and depth is not None:
            structure = self.structure_features(depth)
        if structure is not None:
            scale = torch.as_tensor(structure_scale, dtype=sample.dtype, device=sample.device)
            if scale.ndim == 1:  # per sample -> per frame
                scale = scale.repeat_interleave(f).view(-1, 1, 1, 1)
            structure = [s * scale for s in structure]

        # 1. time (one per clip, shared by its frames) and text (one per clip -> per frame)
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.expand(b) if t.ndim <= 1 and t.numel() in (1, b) else t
        emb = u.time_embedding(u.time_proj(t.reshape(-1).expand(b)).to(sample.dtype))  # (B, T)
        emb = emb.repeat_interleave(f, dim=0)  # (B*F, T)
        ctx = encoder_hidden_states.repeat_interleave(f, dim=0)  # (B*F, L, D)

        # 2. frames as a batch of images: (B*F, C, H, W)
        x = u.conv_in(sample.permute(0, 2, 1, 3, 4).reshape(b * f, -1, h, w))

        # 3. down: structure added to the features entering each block
        skips = (x,)
        for i, block in enumerate(u.down_blocks):
            if structure is not None:
                x = x + structure[i]
                if i == 0:
                    skips = (x,)
            if getattr(block, "has_cross_attention", False):
                x, res = block(hidden_states=x, temb=emb, encoder_hidden_states=ctx, num_frames=f)
            else:
                x, res = block(hidden_states=x, temb=emb, num_frames=f)
            skips += res

        # 4. mid
        if structure is not None:
            x = x + structure[-1]
        x = u.mid_block(x, emb, encoder_hidden_states=ctx, num_frames=f)

        # 5. up
        for block in u.up_blocks:
            res, skips = skips[-len(block.resnets):], skips[:-len(block.resnets)]
            if getattr(block, "has_cross_attention", False):
                x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, encoder_hidden_states=ctx,
                          num_frames=f)
            else:
                x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, num_frames=f)

        # 6. out: back to (B, C, F, H, W)
        x = u.conv_out(u.conv_act(u.conv_norm_out(x)))
        return x.reshape(b, f, -1, h, w).permute(0, 2, 1, 3, 4)


def load_adding_attention(model: ToyVideoUNet, state_dict: dict) -> list[str]:
    """Load the weights of a model with fewer text cross-attention levels into ``model`` (same widths,
    more ``CrossAttn*BlockMotion`` blocks): the new attention layers start with zero output projections,
    so the model computes what the smaller one did. -> the names of the new weights."""
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if unexpected or any(".attentions." not in k for k in missing):
        raise ValueError(f"not the same model with fewer attention layers: unexpected {unexpected[:3]}, "
                         f"missing {[k for k in missing if '.attentions.' not in k][:3]}")
    new = {k.removesuffix(".proj_out.weight") for k in missing if k.endswith(".proj_out.weight")}
    for name, module in model.named_modules():
        if name in new:
            nn.init.zeros_(module.proj_out.weight)
            nn.init.zeros_(module.proj_out.bias)
    return list(missing)


def load_video_unet(folder) -> ToyVideoUNet:
    """The shipped (or a user-trained) ToyWorld video model from a local folder, fp32, eval mode."""
    return load_pretrained(ToyVideoUNet, folder, "ToyWorld video model", TRAIN_MODULE)


def make_scheduler():
    """The model's training noise schedule (1000 steps, cosine betas, v-prediction)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                         prediction_type="v_prediction", clip_sample=False)
