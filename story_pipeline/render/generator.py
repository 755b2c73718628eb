"""Text + motion structure (depth) -> frames: the generator interface and the ToyWorld backend.

    from story_pipeline.render.generator import load_generator
    gen = load_generator("toyworld")                      # data/models/toyworld_video
    shot = gen.generate("a teal cat walks to the left in the snow", depth, tau=0.5, seed=7)
    shot.frames                                           # (F, H, W, 3) uint8
    shot.metadata                                         # every parameter, the seed, timings

``depth``: (F, H, W) float in [-1, 1] (larger = nearer), what ``depth.motion_structure`` makes;
F, H, W set the shot's length and size (H, W multiples of 8). ``None`` renders without structure.

The paper's adjustable structure guidance: ``tau`` is the fraction of sampling steps, counted
from the noisy end, that receive the depth features ("timestep clamping": tau=1 every step,
tau=0.2 the first 20%); ``strength`` multiplies the features while they are applied.
``step_embeds(i, t) -> (1, L, D)`` replaces the prompt's embeddings at step ``i`` (timestep
``t``): TimeInv's per-timestep token embeddings come in through it.

Backends (``GENERATOR_BACKENDS``): ``toyworld`` (the shipped pixel-space video model, CPU) and
``diffusers`` (Stable Diffusion 1.5-class UNet + AnimateDiff motion adapter + depth ControlNet
from local folders; ``story_pipeline.render.diffusers``).
"""

import functools
import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from story_pipeline.errors import ConfigError, InvalidInput

GENERATOR_BACKENDS = ("toyworld", "diffusers")
SAMPLERS = ("ddim", "dpmpp")  # DDIM; DPM-Solver++ (2nd-order multistep): the fast one
MODELS_DIR = Path(__file__).resolve().parents[2] / "data" / "models"
TOYWORLD_VIDEO_DIR = MODELS_DIR / "toyworld_video"
MAX_STEPS = 1000

StepEmbeds = Callable[[int, int], torch.Tensor]  # (step index, timestep) -> (1, L, D) prompt embeddings


class GenerationError(InvalidInput):
    """A generation request that cannot run (bad depth, parameters out of range)."""


@dataclass
class GeneratedShot:
    frames: np.ndarray  # (F, H, W, 3) uint8
    metadata: dict = field(default_factory=dict)  # parameters, seed, model id, timings


class Generator(Protocol):
    name: str  # backend name, one of GENERATOR_BACKENDS
    model_id: str  # identifies the weights: part of every render cache key
    default_steps: int
    default_guidance: float
    default_sampler: str

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """(1, L, D) conditioning of a prompt."""
        ...

    def generate(self, prompt: str | None = None, depth: np.ndarray | None = None, *,
                 prompt_embeds: torch.Tensor | None = None, step_embeds: StepEmbeds | None = None,
                 tau: float = 1.0, strength: float = 1.0, steps: int | None = None,
                 guidance: float | None = None, seed: int = 0, sampler: str | None = None,
                 frames: int | None = None, size: tuple[int, int] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> GeneratedShot:
        ...


# --- checks shared by the backends ----------------------------------------------------------
def check_depth(depth, multiple: int = 8) -> torch.Tensor:
    """(F, H, W) array-like in [-1, 1] -> float32 tensor; one sentence when it is not."""
    try:
        d = torch.as_tensor(np.asarray(depth, dtype=np.float32))
    except (TypeError, ValueError):
        raise GenerationError(f"depth must be a numeric (frames, height, width) array, got {type(depth).__name__}.") from None
    if d.ndim != 3:
        raise GenerationError(f"depth must be (frames, height, width), got shape {tuple(d.shape)}.")
    f, h, w = d.shape
    if f < 1 or h % multiple or w % multiple or h < multiple or w < multiple:
        raise GenerationError(f"depth of shape {tuple(d.shape)} needs >= 1 frame and a height and width that are "
                              f"multiples of {multiple}; resize it (depth.motion_structure does).")
    if not torch.isfinite(d).all():
        raise GenerationError("depth contains NaN or infinite values; re-extract it.")
    lo, hi = float(d.min()), float(d.max())
    if lo < -1.001 or hi > 1.001:
        raise GenerationError(f"depth values must lie in [-1, 1] (normalised), got [{lo:.3g}, {hi:.3g}]; "
                              "normalise it with depth.normalise_depth.")
    return d.clamp(-1, 1)


def check_params(tau: float, strength: float, steps: int, guidance: float, sampler: str) -> None:
    if not 0.0 <= float(tau) <= 1.0:
        raise GenerationError(f"tau must be in [0, 1] (the fraction of steps that get depth), got {tau!r}.")
    if not 0.0 <= float(strength) <= 10.0:
        raise GenerationError(f"strength must be in [0, 10] (a multiplier on the depth features), got {strength!r}.")
    if not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise GenerationError(f"steps must be an integer in [1, {MAX_STEPS}], got {steps!r}.")
    if not 0.0 <= float(guidance) <= 50.0:
        raise GenerationError(f"guidance must be in [0, 50], got {guidance!r}.")
    if sampler not in SAMPLERS:
        raise GenerationError(f"sampler must be one of {SAMPLERS}, got {sampler!r}.")


def resolve_request(gen, depth, tau, strength, steps, guidance, sampler, frames, size,
                    default_frames: int, default_size: tuple[int, int]):
    """The checked request both backends run: (steps, guidance, sampler, depth tensor or None, F, H, W).
    With depth, frames/size follow it; without, they default to ``default_frames``/``default_size``."""
    steps = gen.default_steps if steps is None else steps
    guidance = gen.default_guidance if guidance is None else guidance
    sampler = sampler or gen.default_sampler
    check_params(tau, strength, steps, guidance, sampler)
    if depth is not None:
        d = check_depth(depth)
        f, h, w = d.shape
        if (frames is not None and frames != f) or (size is not None and tuple(size) != (h, w)):
            raise GenerationError(f"depth has {f} frames of {h}x{w} but {frames} frames of {size} were asked "
                                  "for; leave frames/size out to follow the depth.")
        return steps, guidance, sampler, d, f, h, w
    f = frames or default_frames
    h, w = size or default_size
    if h % 8 or w % 8 or h < 8 or w < 8:
        raise GenerationError(f"size {h}x{w} must be multiples of 8.")
    return steps, guidance, sampler, None, f, h, w


def structure_steps(tau: float, steps: int) -> int:
    """How many of ``steps`` (from the noisy end) get depth: tau * steps, rounded half up."""
    return min(steps, int(math.floor(tau * steps + 0.5)))


def make_sampler(sampler: str, config: dict):
    """A diffusers scheduler for sampling, built from the training scheduler's config."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if sampler == "ddim":
        return DDIMScheduler.from_config(config, timestep_spacing="trailing", clip_sample=False)
    return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2,
                                                   timestep_spacing="trailing")


def weights_digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(hashlib.sha256(Path(f).read_bytes()).digest())
    return h.hexdigest()[:16]


# --- ToyWorld backend -------------------------------------------------------------------------
class ToyWorldGenerator:
    """The shipped pixel-space ToyWorld video model (``models/video_unet.py``) on the CPU."""

    name = "toyworld"
    default_steps = 20  # DPM-Solver++; DDIM wants ~50 (bench/generate.py compares them)
    default_guidance = 2.0  # the toy model over-saturates colours above ~3
    default_sampler = "dpmpp"

    def __init__(self, model, scheduler_config: dict, model_id: str, text_encoder=None, bf16: bool = True):
        from story_pipeline.models.text_encoder import get_text_encoder

        self.model, self.scheduler_config, self.model_id = model, dict(scheduler_config), model_id
        self.text_encoder = text_encoder or get_text_encoder()
        self.bf16 = bf16
        self.calls = 0  # generate() calls: tests count renders with it
        self._null = None

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        if not isinstance(prompt, str):
            raise GenerationError(f"prompt must be a string, got {type(prompt).__name__}.")
        return torch.from_numpy(self.text_encoder.prompt_states([prompt]))  # (1, L, D)

    def null_embeds(self) -> torch.Tensor:
        if self._null is None:
            self._null = self.encode_prompt("")
        return self._null

    @torch.no_grad()
    def generate(self, prompt: str | None = None, depth: np.ndarray | None = None, *,
                 prompt_embeds: torch.Tensor | None = None, step_embeds: StepEmbeds | None = None,
                 tau: float = 1.0, strength: float = 1.0, steps: int | None = None,
                 guidance: float | None = None, seed: int = 0, sampler: str | None = None,
                 frames: int | None = None, size: tuple[int, int] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> GeneratedShot:
        # 1. Check inputs
        steps, guidance, sampler, d, f, h, w = resolve_request(
            self, depth, tau, strength, steps, guidance, sampler, frames, size, 16, (64, 64))
        if prompt_embeds is None:
            if prompt is None and step_embeds is None:
                raise GenerationError("give a prompt, prompt_embeds or step_embeds.")
            prompt_embeds = self.encode_prompt(prompt) if prompt is not None else None
        t_start = time.perf_counter()

        # 2. Structure features (timestep-independent: computed once)
        n_struct = structure_steps(tau, steps) if d is not None and strength > 0 else 0
        model = self.model
        cfg = guidance != 1.0
        feats = None
        if n_struct:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                feats = model.structure_features(d[None, None])  # each (F, C, h, w)
            feats = [torch.cat([x, x]) for x in feats] if cfg else feats

        # 3. Denoise
        sched = make_sampler(sampler, self.scheduler_config)
        sched.set_timesteps(steps)
        gen = torch.Generator().manual_seed(int(seed))
        x = torch.randn((1, 3, f, h, w), generator=gen) * sched.init_noise_sigma
        null = self.null_embeds()
        unet_s = 0.0
        for i, t in enumerate(sched.timesteps):
            cond = step_embeds(i, int(t)) if step_embeds is not None else prompt_embeds
            ctx = torch.cat([null, cond]) if cfg else cond
            xin = sched.scale_model_input(x, t)
            xin = torch.cat([xin, xin]) if cfg else xin
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                v = model(xin, t, ctx, structure=feats if i < n_struct else None, structure_scale=strength)
            unet_s += time.perf_counter() - t0
            v = v.float()
            if cfg:
                v_uncond, v_cond = v.chunk(2)
                v = v_uncond + guidance * (v_cond - v_uncond)
            x = sched.step(v, t, x).prev_sample
            if progress is not None:
                progress(i + 1, steps)
        out = ((x[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()  # (F, H, W, 3)
        self.calls += 1
        meta = {"backend": self.name, "model_id": self.model_id, "prompt": prompt, "seed": int(seed),
                "tau": float(tau), "strength": float(strength), "steps": steps, "structure_steps": n_struct,
                "guidance": float(guidance), "sampler": sampler, "frames": f, "height": h, "width": w,
                "depth": d is not None, "per_step_embeddings": step_embeds is not None,
                "seconds": time.perf_counter() - t_start, "unet_seconds": unet_s}
        return GeneratedShot(out, meta)


def _load_toyworld(folder: Path, device: str = "cpu", **options) -> ToyWorldGenerator:
    import json

    from story_pipeline.models.loading import WEIGHTS_NAME
    from story_pipeline.models.video_unet import load_video_unet

    model = load_video_unet(folder).to(device)
    sched_file = folder / "scheduler" / "scheduler_config.json"
    if sched_file.is_file():
        config = json.loads(sched_file.read_text())
    else:
        from story_pipeline.train.video_unet import make_scheduler

        config = dict(make_scheduler().config)
    return ToyWorldGenerator(model, config, weights_digest([folder / "config.json", folder / WEIGHTS_NAME]),
                             bf16=options.get("bf16", True))


@functools.lru_cache(maxsize=4)
def _cached(backend: str, folder: str, device: str, options: tuple) -> Generator:
    options = dict(options)
    steps = options.pop("default_steps", None)
    if backend == "toyworld":
        gen = _load_toyworld(Path(folder), device, **options)
    else:
        from story_pipeline.render.diffusers import load_diffusers_generator

        gen = load_diffusers_generator(Path(folder), device=device, **options)
    if steps is not None:  # an instance of its own (the cache key holds the option)
        gen.default_steps = steps
    return gen


def load_generator(backend: str = "toyworld", folder: str | Path | None = None, device: str = "cpu",
                   **options) -> Generator:
    """The generator of ``backend`` from a local folder (loaded once per process and folder).

    toyworld: ``folder`` defaults to data/models/toyworld_video. diffusers: ``folder`` is the
    Stable Diffusion 1.5-class pipeline folder; ``motion_adapter`` and ``controlnet`` options name
    the AnimateDiff motion adapter and depth ControlNet folders. ``default_steps`` replaces the
    backend's default number of sampling steps (what a shot without ``steps`` gets)."""
    if backend not in GENERATOR_BACKENDS:
        raise ConfigError(f"Unknown generator backend {backend!r}; choose one of {', '.join(GENERATOR_BACKENDS)}.")
    if folder is None:
        if backend != "toyworld":
            raise ConfigError(f"The {backend} generator needs a weights folder; set STORY_GENERATOR_FOLDER "
                              "(or the generator resource's `folder`) to your local pipeline folder.")
        folder = TOYWORLD_VIDEO_DIR
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(f"Generator weights folder {folder} does not exist; point the {backend} generator "
                          "at a local folder with its weights.")
    steps = options.get("default_steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS):
        raise ConfigError(f"The generator's default steps (STORY_RENDER_STEPS or the generator resource's `steps`) "
                          f"must be an integer in [1, {MAX_STEPS}], got {steps!r}.")
    return _cached(backend, str(folder), device, tuple(sorted(options.items())))
