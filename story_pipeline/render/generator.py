"""Text + motion structure (depth) -> frames: the generator interface every backend shares.

    from story_pipeline.render.generator import load_generator
    gen = load_generator("toyworld")                      # data/models/toyworld_video
    shot = gen.generate("a teal cat walks to the left in the snow", depth, tau=0.5, seed=7)
    shot.frames                                           # (F, H, W, 3) uint8
    shot.metadata                                         # every parameter, the seed, timings

``depth``: (F, H, W) float in [-1, 1] (larger = nearer), what ``depth.structure.motion_structure``
makes; F, H, W set the shot's length and size (H, W multiples of 8). ``None`` renders without structure.

The paper's adjustable structure guidance: ``tau`` is the fraction of sampling steps, counted
from the noisy end, that receive the depth features ("timestep clamping": tau=1 every step,
tau=0.2 the first 20%); ``strength`` multiplies the features while they are applied.
``step_embeds(i, t) -> (1, L, D)`` replaces the prompt's embeddings at step ``i`` (timestep
``t``): TimeInv's per-timestep token embeddings come in through it.

Backends are registered by name (``GENERATOR_BACKENDS``: backend -> module with ``load(folder,
device, **options)`` and, if it ships weights, ``default_folder()``): ``toyworld`` (``render/toyworld.py``, the shipped
pixel-space video model, CPU) and ``diffusers`` (``render/diffusers.py``, Stable Diffusion
1.5-class UNet + AnimateDiff motion adapter + depth ControlNet from local folders). A backend
subclasses ``Generator`` and implements ``encode_prompt`` and ``sample``; ``generate`` (checks,
prompt, metadata) is written once, here.
"""

import functools
import importlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from story_pipeline.errors import ConfigError, InvalidInput

GENERATOR_BACKENDS = {  # name -> module implementing it (imported when first loaded)
    "toyworld": "story_pipeline.render.toyworld",
    "diffusers": "story_pipeline.render.diffusers",
}
SAMPLERS = ("ddim", "dpmpp")  # DDIM; DPM-Solver++ (2nd-order multistep): the fast one
MAX_STEPS = 1000

StepEmbeds = Callable[[int, int], torch.Tensor]  # (step index, timestep) -> (1, L, D) prompt embeddings


def register_backend(name: str, module: str) -> None:
    """Make ``load_generator(name, ...)`` load ``module`` (a module with ``load`` and optionally ``default_folder``)."""
    GENERATOR_BACKENDS[name] = module


class GenerationError(InvalidInput):
    """A generation request that cannot run (bad depth, parameters out of range)."""


@dataclass
class GeneratedShot:
    frames: np.ndarray  # (F, H, W, 3) uint8
    metadata: dict = field(default_factory=dict)  # parameters, seed, model id, timings


@dataclass
class Request:
    """A checked generation request, what ``Generator.sample`` receives."""
    prompt_embeds: torch.Tensor | None  # (1, L, D), or None when step_embeds gives every step's
    step_embeds: StepEmbeds | None
    depth: torch.Tensor | None  # (F, H, W) in [-1, 1], or None: no structure
    structure_steps: int  # how many steps (from the noisy end) get the depth
    tau: float
    strength: float
    steps: int
    guidance: float
    seed: int
    sampler: str
    frames: int
    height: int
    width: int
    progress: Callable[[int, int], None] | None = None

    def embeds(self, i: int, t: int) -> torch.Tensor:
        """The prompt embeddings of step ``i`` (timestep ``t``)."""
        return self.step_embeds(i, t) if self.step_embeds is not None else self.prompt_embeds


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


@dataclass(frozen=True)
class GeneratorIdentity:
    """What decides a generator's output besides the request, known without loading it: the weights'
    content digest, the text encoder's (where it is not part of the weights) and the defaults a shot
    without its own settings gets. Memo keys read it (``render.shot``, ``personalize.character``)."""
    backend: str
    model_id: str
    text_model_id: str
    default_steps: int
    default_guidance: float
    default_sampler: str


class Generator:
    """A depth-guided text-to-video generator. Subclasses set the class attributes and implement
    ``encode_prompt`` and ``sample``; ``generate`` checks the request and records the metadata."""

    name: str = ""  # backend name, a key of GENERATOR_BACKENDS
    model_id: str = ""  # identifies the weights: part of every render cache key
    text_model_id: str = ""  # identifies the text encoder when it is not part of model_id
    default_steps: int = 20
    default_guidance: float = 2.0
    default_sampler: str = "dpmpp"
    default_frames: int = 16
    default_size: tuple[int, int] = (64, 64)
    max_frames: int = 1024
    max_frames_of: str = "model"  # what limits the frames (named in the error)

    def __init__(self):
        self.calls = 0  # generate() calls: tests count renders with it
        self._null = None

    @property
    def identity(self) -> GeneratorIdentity:
        return GeneratorIdentity(self.name, self.model_id, self.text_model_id, self.default_steps,
                                 self.default_guidance, self.default_sampler)

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """(1, L, D) conditioning of a prompt."""
        raise NotImplementedError

    def null_embeds(self) -> torch.Tensor:
        """The empty prompt's embeddings (the unconditional branch of classifier-free guidance)."""
        if self._null is None:
            self._null = self.encode_prompt("")
        return self._null

    def sample(self, request: Request) -> tuple[np.ndarray, dict]:
        """Denoise ``request`` -> ((F, H, W, 3) uint8 frames, backend-specific metadata)."""
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, prompt: str | None = None, depth: np.ndarray | None = None, *,
                 prompt_embeds: torch.Tensor | None = None, step_embeds: StepEmbeds | None = None,
                 tau: float = 1.0, strength: float = 1.0, steps: int | None = None,
                 guidance: float | None = None, seed: int = 0, sampler: str | None = None,
                 frames: int | None = None, size: tuple[int, int] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> GeneratedShot:
        # 1. Check inputs
        steps, guidance, sampler, d, f, h, w = resolve_request(
            self, depth, tau, strength, steps, guidance, sampler, frames, size, min(self.default_frames, self.max_frames),
            self.default_size)
        if f > self.max_frames:
            raise GenerationError(f"{f} frames is more than the {self.max_frames_of}'s {self.max_frames}; render at most "
                                  f"{self.max_frames} frames per shot.")
        # 2. Encode prompt
        if prompt_embeds is None:
            if prompt is None and step_embeds is None:
                raise GenerationError("give a prompt, prompt_embeds or step_embeds.")
            prompt_embeds = self.encode_prompt(prompt) if prompt is not None else None
        # 3. Denoise (the backend)
        n_struct = structure_steps(tau, steps) if d is not None and strength > 0 else 0
        t_start = time.perf_counter()
        out, extra = self.sample(Request(prompt_embeds, step_embeds, d, n_struct, float(tau), float(strength), steps,
                                         float(guidance), int(seed), sampler, f, h, w, progress))
        self.calls += 1
        meta = {"backend": self.name, "model_id": self.model_id, "prompt": prompt, "seed": int(seed),
                "tau": float(tau), "strength": float(strength), "steps": steps, "structure_steps": n_struct,
                "guidance": float(guidance), "sampler": sampler, "frames": f, "height": h, "width": w,
                "depth": d is not None, "per_step_embeddings": step_embeds is not None, **extra,
                "seconds": time.perf_counter() - t_start}
        return GeneratedShot(out, meta)


def check_default_steps(steps) -> None:
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS):
        raise ConfigError(f"The generator's default steps (STORY_RENDER_STEPS or the generator resource's `steps`) "
                          f"must be an integer in [1, {MAX_STEPS}], got {steps!r}.")


def _backend(backend: str):
    if backend not in GENERATOR_BACKENDS:
        raise ConfigError(f"Unknown generator backend {backend!r}; choose one of {', '.join(GENERATOR_BACKENDS)}.")
    return importlib.import_module(GENERATOR_BACKENDS[backend])


@functools.lru_cache(maxsize=4)
def _cached(backend: str, folder: str, device: str, options: tuple) -> Generator:
    options = dict(options)
    steps = options.pop("default_steps", None)
    gen = _backend(backend).load(Path(folder), device=device, **options)
    if steps is not None:  # an instance of its own (the cache key holds the option)
        gen.default_steps = steps
    return gen


def _folder(module, backend: str, folder) -> Path:
    if folder is None:
        folder = module.default_folder() if hasattr(module, "default_folder") else None
        if folder is None:
            raise ConfigError(f"The {backend} generator needs a weights folder; set STORY_GENERATOR_FOLDER "
                              "(or the generator resource's `folder`) to your local pipeline folder.")
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(f"Generator weights folder {folder} does not exist; point the {backend} generator "
                          "at a local folder with its weights.")
    return folder


def load_generator(backend: str = "toyworld", folder: str | Path | None = None, device: str = "cpu",
                   **options) -> Generator:
    """The generator of ``backend`` from a local folder (loaded once per process and folder).

    toyworld: ``folder`` defaults to data/models/toyworld_video. diffusers: ``folder`` is the
    Stable Diffusion 1.5-class pipeline folder; ``motion_adapter`` and ``controlnet`` options name
    the AnimateDiff motion adapter and depth ControlNet folders. ``default_steps`` replaces the
    backend's default number of sampling steps (what a shot without ``steps`` gets)."""
    module = _backend(backend)
    folder = _folder(module, backend, folder)
    check_default_steps(options.get("default_steps"))
    return _cached(backend, str(folder), device, tuple(sorted(options.items())))


def generator_identity(backend: str = "toyworld", folder: str | Path | None = None, **options) -> GeneratorIdentity:
    """``load_generator(backend, folder, **options).identity`` from the weight files alone (nothing is loaded)."""
    module = _backend(backend)
    folder = _folder(module, backend, folder)
    steps = options.pop("default_steps", None)
    check_default_steps(steps)
    options.pop("device", None)
    model_id, text_id = module.identity(folder, **options)
    cls = module.GENERATOR
    return GeneratorIdentity(backend, model_id, text_id, steps or cls.default_steps, cls.default_guidance,
                             cls.default_sampler)
