"""The ``toyworld`` generator: the shipped pixel-space ToyWorld video model on the CPU.

    from story_pipeline.render.generator import load_generator
    gen = load_generator("toyworld")                      # data/models/toyworld_video
    shot = gen.generate("a teal cat walks to the left in the snow", depth, tau=0.5, seed=7)

The model (``models/video_unet.py``) denoises 64x64 RGB frames directly (no VAE); its structure
encoder's features are computed once per shot and added to the U-Net's features for the first
``structure_steps`` steps (the paper's timestep clamping). Prompts are read by MiniLM
(``models/text_encoder.py``). bf16 autocast on a CPU that runs bf16 natively (``models.loading.cpu_bf16``),
float32 elsewhere.
"""

import json
import time
from pathlib import Path

import numpy as np
import torch

from story_pipeline.config import get_settings
from story_pipeline.fsutil import content_digest
from story_pipeline.render.generator import GenerationError, Generator, Request, make_sampler



def default_folder() -> Path:
    """The shipped weights (``<models_dir>/toyworld_video``, STORY_MODELS_DIR)."""
    return get_settings().models_dir / "toyworld_video"


class ToyWorldGenerator(Generator):
    """The shipped pixel-space ToyWorld video model (``models/video_unet.py``) on the CPU."""

    name = "toyworld"
    default_steps = 20  # DPM-Solver++; DDIM wants ~50 (bench/generate.py compares them)
    default_guidance = 2.0  # the toy model over-saturates colours above ~3
    default_sampler = "dpmpp"

    def __init__(self, model, scheduler_config: dict, model_id: str, text_encoder=None, bf16: bool = False):
        from story_pipeline.models.text_encoder import get_text_encoder

        super().__init__()
        self.model, self.scheduler_config, self.model_id = model, dict(scheduler_config), model_id
        self.text_encoder = text_encoder or get_text_encoder()
        self.text_model_id = self.text_encoder.model_id
        self.bf16 = bf16

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        if not isinstance(prompt, str):
            raise GenerationError(f"prompt must be a string, got {type(prompt).__name__}.")
        return torch.from_numpy(self.text_encoder.prompt_states([prompt]))  # (1, L, D)

    def sample(self, r: Request) -> tuple[np.ndarray, dict]:
        # 1. Structure features (timestep-independent: computed once)
        model = self.model
        cfg = r.guidance != 1.0
        feats = None
        if r.structure_steps:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                feats = model.structure_features(r.depth[None, None])  # each (F, C, h, w)
            feats = [torch.cat([x, x]) for x in feats] if cfg else feats

        # 2. Denoise
        sched = make_sampler(r.sampler, self.scheduler_config)
        sched.set_timesteps(r.steps)
        gen = torch.Generator().manual_seed(r.seed)
        x = torch.randn((1, 3, r.frames, r.height, r.width), generator=gen) * sched.init_noise_sigma  # (1, 3, F, H, W)
        null = self.null_embeds()
        unet_s = 0.0
        for i, t in enumerate(sched.timesteps):
            cond = r.embeds(i, int(t))
            ctx = torch.cat([null, cond]) if cfg else cond
            xin = sched.scale_model_input(x, t)
            xin = torch.cat([xin, xin]) if cfg else xin
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                v = model(xin, t, ctx, structure=feats if i < r.structure_steps else None, structure_scale=r.strength)
            unet_s += time.perf_counter() - t0
            v = v.float()
            if cfg:
                v_uncond, v_cond = v.chunk(2)
                v = v_uncond + r.guidance * (v_cond - v_uncond)
            x = sched.step(v, t, x).prev_sample
            if r.progress is not None:
                r.progress(i + 1, r.steps)
        out = ((x[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()  # (F, H, W, 3)
        return out, {"unet_seconds": unet_s}


def weight_files(folder: Path) -> list[Path]:
    """The files that identify the model (its ``model_id`` is their content digest)."""
    from story_pipeline.models.loading import CONFIG_NAME, WEIGHTS_NAME

    return [Path(folder) / CONFIG_NAME, Path(folder) / WEIGHTS_NAME]


def load(folder: Path, device: str = "cpu", bf16: bool | None = None) -> ToyWorldGenerator:
    """bf16 None: bf16 autocast where the CPU runs it natively (``cpu_bf16``), float32 elsewhere."""
    from story_pipeline.models.loading import cpu_bf16
    from story_pipeline.models.video_unet import load_video_unet, make_scheduler

    bf16 = cpu_bf16() if bf16 is None else bf16

    # channels_last convolution weights: oneDNN's CPU kernels run the model's float32 shots 1.25x and its
    # personalization steps 1.22x faster than on the default layout (bench/generate.py, bench/timeinv.py),
    # outputs equal to float rounding
    model = load_video_unet(folder).to(device, memory_format=torch.channels_last)
    sched_file = Path(folder) / "scheduler" / "scheduler_config.json"
    config = json.loads(sched_file.read_text()) if sched_file.is_file() else dict(make_scheduler().config)
    return ToyWorldGenerator(model, config, content_digest(weight_files(folder)), bf16=bf16)


def identity(folder: Path, bf16: bool | None = None) -> tuple[str, str]:
    """(model_id, text model id) without loading the model."""
    from story_pipeline.models.text_encoder import model_id as text_model_id

    return content_digest(weight_files(folder)), text_model_id()


GENERATOR = ToyWorldGenerator
