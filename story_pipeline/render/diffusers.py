"""The ``diffusers`` generator: Stable Diffusion 1.5-class UNet + AnimateDiff motion adapter + depth
ControlNet from local folders, for users with a GPU and real weights.

    from story_pipeline.render.generator import load_generator
    gen = load_generator("diffusers", "~/models/sd15", device="cuda", dtype="float16")
    # sd15/ holds unet/ vae/ text_encoder/ tokenizer/ scheduler/ (a saved pipeline) and, unless
    # motion_adapter= / controlnet= name other folders, motion_adapter/ and controlnet/.
    shot = gen.generate("a teal cat walks to the left in the snow", depth, tau=0.5, seed=7)
    shot.frames                                           # (F, H, W, 3) uint8

How the generator interface maps onto ``AnimateDiffControlNetPipeline``:

- depth (F, H, W) in [-1, 1] -> F grey RGB images, (depth + 1) / 2 * 255, near = bright: the
  inverse-depth maps depth ControlNets were trained on.
- tau -> ``control_guidance_end = structure_steps(tau, steps) / steps`` (start 0): the pipeline
  keeps the ControlNet for step i while (i + 1) / steps <= end, so exactly the same first steps get
  depth as on the ToyWorld backend; strength -> ``controlnet_conditioning_scale``.
- No structure (depth=None, strength=0 or tau rounding to 0 steps) runs a plain
  ``AnimateDiffPipeline`` over the same modules. It gives the same frames as the ControlNet
  pipeline at scale 0 (the residuals it adds are exact zeros) without paying for the ControlNet.
- ``step_embeds(i, t)`` (TimeInv): step 0 gets ``step_embeds(0, t0)`` as ``prompt_embeds``; after
  step i a ``callback_on_step_end`` returns the embeddings of step i + 1 laid out the way the
  pipeline lays out its own: ``cat([negative, positive]).repeat_interleave(frames)`` with
  classifier-free guidance, ``positive.repeat_interleave(frames)`` without. The negative (the
  empty prompt) stays fixed, as on the ToyWorld backend.
- guidance <= 1 runs the conditional branch alone (diffusers' convention; ToyWorld still mixes
  in the unconditional one below 1).

Only safetensors are loaded (``use_safetensors=True``); a missing folder or file is one sentence.
"""

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from story_pipeline.errors import ConfigError
from story_pipeline.fsutil import content_digest
from story_pipeline.render.generator import GenerationError, Generator, Request, make_sampler

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"  # what diffusers' save_pretrained writes
TRANSFORMERS_WEIGHTS = "model.safetensors"  # what transformers' save_pretrained writes
PICKLE_NAMES = {DIFFUSERS_WEIGHTS: "diffusion_pytorch_model.bin", TRANSFORMERS_WEIGHTS: "pytorch_model.bin"}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PIPELINE_PARTS = "unet, vae, text_encoder, tokenizer and scheduler"
# Frames VAE-decoded at once. The pipelines' default decodes 16 at once: at 512 px in float16 that is
# ~6.8 GB of activations, more than the UNet's denoising (~1.4 GB; extrapolated by bench/real_size.py).
DECODE_FRAMES = 4


# --- files ------------------------------------------------------------------------------------
def _weights_files(part: Path, name: str) -> list[Path]:
    """The weights a from_pretrained of ``part`` reads: ``name`` or the shards its index lists."""
    if (part / name).is_file():
        return [part / name]
    index = part / f"{name}.index.json"
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    return [index] + [part / s for s in shards]


def _require_part(label: str, root: Path, sub: str, weights: str, fix: str) -> list[Path]:
    """``root/sub``'s config.json and weights, or a ConfigError naming the one that is missing."""
    part = root / sub
    rel = f"{sub}/" if sub else ""
    if not root.is_dir():
        raise ConfigError(f"{label} {root} does not exist; {fix}.")
    if not (part / "config.json").is_file():
        raise ConfigError(f"{label} {root} has no {rel}config.json; {fix}.")
    if not (part / weights).is_file() and not (part / f"{weights}.index.json").is_file():
        if (part / PICKLE_NAMES[weights]).is_file():
            raise ConfigError(f"{label} {root} has only {rel}{PICKLE_NAMES[weights]}, a pickle, which is never "
                              f"loaded; convert it to {rel}{weights} (save_pretrained(safe_serialization=True)).")
        raise ConfigError(f"{label} {root} has no {rel}{weights}; {fix}.")
    try:
        files = _weights_files(part, weights)
    except (OSError, ValueError, KeyError, AttributeError):
        raise ConfigError(f"{label} {root} has an unreadable {rel}{weights}.index.json; re-save the folder.") from None
    for f in files:
        if not f.is_file():
            raise ConfigError(f"{label} {root} is missing the shard {rel}{f.name}; re-save the folder.")
    return [part / "config.json"] + files


def _tokenizer_files(folder: Path) -> list[Path]:
    tok = folder / "tokenizer"
    if (tok / "tokenizer.json").is_file():
        names = ["tokenizer.json"]
    elif (tok / "vocab.json").is_file() and (tok / "merges.txt").is_file():
        names = ["vocab.json", "merges.txt"]
    else:
        raise ConfigError(f"Generator folder {folder} has no tokenizer/tokenizer.json (or tokenizer/vocab.json "
                          f"+ merges.txt); it must be a saved Stable Diffusion 1.5 pipeline ({PIPELINE_PARTS}).")
    names += [n for n in ("tokenizer_config.json", "special_tokens_map.json") if (tok / n).is_file()]
    return [tok / n for n in names]



def depth_conditioning(d: torch.Tensor) -> list:
    """(F, H, W) depth in [-1, 1] -> F RGB PIL images, near = bright (inverse depth, as MiDaS
    makes it and depth ControlNets were trained on)."""
    from PIL import Image

    grey = ((d.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu().numpy()  # (F, H, W)
    return [Image.fromarray(g).convert("RGB") for g in grey]


# --- the generator ----------------------------------------------------------------------------
class DiffusersGenerator(Generator):
    """AnimateDiff + depth ControlNet on a Stable Diffusion 1.5-class model (``load``)."""

    name = "diffusers"
    default_steps = 25  # DPM-Solver++ (2nd order) is converged at ~20-25 steps on SD 1.5
    default_guidance = 7.5  # Stable Diffusion's usual classifier-free guidance
    default_sampler = "dpmpp"
    max_frames_of = "motion adapter"

    def __init__(self, pipe, plain_pipe, scheduler_config: dict, model_id: str, device: str, dtype: torch.dtype):
        super().__init__()
        self.pipe = pipe  # AnimateDiffControlNetPipeline: renders with structure
        self.plain_pipe = plain_pipe  # AnimateDiffPipeline over the same modules: renders without
        self.scheduler_config, self.model_id = dict(scheduler_config), model_id
        self.device, self.dtype = torch.device(device), dtype
        self.max_frames = int(pipe.unet.config.motion_max_seq_length)  # the motion modules' positions
        self.default_size = (pipe.unet.config.sample_size * pipe.vae_scale_factor,) * 2  # 512x512 on SD 1.5

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """(1, L, D) CLIP states of ``prompt``; a prompt past the tokenizer's length is cut, with a warning.

        The few lines of the pipeline's ``encode_prompt`` that apply here (no LoRA scale, no clip
        skip), so that a long prompt gives one warning instead of three log lines."""
        if not isinstance(prompt, str):
            raise GenerationError(f"prompt must be a string, got {type(prompt).__name__}.")
        tokenizer, text_encoder = self.pipe.tokenizer, self.pipe.text_encoder
        n_max = tokenizer.model_max_length
        n_tokens = len(tokenizer.backend_tokenizer.encode(prompt).ids)  # with start/end; transformers would log too
        if n_tokens > n_max:
            warnings.warn(f"Prompt {prompt[:40]!r}... is {n_tokens} tokens long; the text encoder reads only the "
                          f"first {n_max}, so the rest is dropped.", stacklevel=2)
        ids = tokenizer(prompt, padding="max_length", max_length=n_max, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            embeds = text_encoder(ids.to(self.device))[0]  # (1, L, D): the last hidden state, as SD reads it
        return embeds.to(self.dtype)

    def _embeds(self, e, what: str) -> torch.Tensor:
        """``e`` checked against the text encoder's (1, L, D), on the pipeline's device and dtype."""
        want = tuple(self.null_embeds().shape)
        if not isinstance(e, torch.Tensor) or tuple(e.shape) != want:
            got = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
            raise GenerationError(f"{what} must be a {want} tensor like encode_prompt returns, got {got}.")
        return e.to(device=self.device, dtype=self.dtype)

    def sample(self, r: Request) -> tuple[np.ndarray, dict]:
        # 1. The first step's embeddings go in as prompt_embeds
        null = self.null_embeds()
        scheduler = make_sampler(r.sampler, self.scheduler_config)
        scheduler.set_timesteps(r.steps, device=self.device)  # the pipeline sets the same ones again
        timesteps = [int(t) for t in scheduler.timesteps]
        what = "step_embeds(0, t)" if r.step_embeds is not None else "prompt_embeds"
        first = self._embeds(r.embeds(0, timesteps[0]), what)

        # 2. Per-step callback: progress, and step i + 1's embeddings (TimeInv)
        def on_step_end(pipe, i, t, tensors):
            if r.progress is not None:
                r.progress(i + 1, r.steps)
            if r.step_embeds is None or i + 1 >= r.steps:
                return {}
            cond = self._embeds(r.step_embeds(i + 1, timesteps[i + 1]), f"step_embeds({i + 1}, t)")
            batch = torch.cat([null, cond]) if pipe.do_classifier_free_guidance else cond  # (1|2, L, D)
            batch = batch.repeat_interleave(r.frames, dim=0)  # (B * F, L, D): one copy per frame, as the pipeline does
            if batch.shape != tensors["prompt_embeds"].shape:  # guards against a diffusers layout change
                raise RuntimeError(f"diffusers passed prompt_embeds of shape {tuple(tensors['prompt_embeds'].shape)}"
                                   f" to the step callback; expected {tuple(batch.shape)}.")
            return {"prompt_embeds": batch}

        # 3. Denoise (with the ControlNet only if some step gets structure)
        pipe = self.pipe if r.structure_steps else self.plain_pipe
        pipe.scheduler = scheduler
        options = {}
        if r.structure_steps:
            options = dict(conditioning_frames=depth_conditioning(r.depth), controlnet_conditioning_scale=r.strength,
                           control_guidance_start=0.0, control_guidance_end=r.structure_steps / r.steps)
        out = pipe(prompt_embeds=first, negative_prompt_embeds=null, num_frames=r.frames, height=r.height,
                   width=r.width, num_inference_steps=r.steps, guidance_scale=r.guidance,
                   generator=torch.Generator(device=self.device).manual_seed(r.seed), output_type="np",
                   callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["prompt_embeds"],
                   decode_chunk_size=DECODE_FRAMES, **options)
        video = np.asarray(out.frames[0], dtype=np.float32)  # (F, H, W, 3) in [0, 1]
        frames_u8 = (video * 255).round().clip(0, 255).astype(np.uint8)
        return frames_u8, {"device": str(self.device), "dtype": str(self.dtype).removeprefix("torch.")}


# --- loading ----------------------------------------------------------------------------------
def load(folder: Path, device: str = "cpu", motion_adapter: str | None = None,
                             controlnet: str | None = None, dtype: str = "float32", **_) -> DiffusersGenerator:
    """The diffusers generator from local folders (safetensors only, never a download).

    ``folder``: a Stable Diffusion 1.5-class pipeline saved with ``save_pretrained``.
    ``motion_adapter`` / ``controlnet``: folders of a ``MotionAdapter`` and a depth ``ControlNetModel``;
    default ``folder/motion_adapter`` and ``folder/controlnet``."""
    from diffusers import (AnimateDiffControlNetPipeline, AnimateDiffPipeline, AutoencoderKL, ControlNetModel,
                           MotionAdapter, UNet2DConditionModel)
    from transformers import CLIPTextModel, CLIPTokenizer

    # 1. Check options and files: one sentence for the first thing missing
    folder = Path(folder).expanduser()
    files, adapter_dir, controlnet_dir, scheduler_config = _check_files(folder, motion_adapter, controlnet, dtype)
    torch_dtype = DTYPES[dtype]
    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r} is not a torch device; use e.g. 'cpu', 'cuda' or 'cuda:1'.") from None

    # 2. Load the parts (transformers 5 names the dtype argument `dtype`, diffusers `torch_dtype`)
    common = dict(local_files_only=True, use_safetensors=True, torch_dtype=torch_dtype)

    def load(what: str, where: Path, fn, fix: str = "re-save the folder with save_pretrained"):
        try:
            return fn()
        except Exception as e:  # shape mismatch, truncated safetensors, bad config: one sentence, not a traceback
            reason = str(e).split(". ")[0].split("\n")[0][:200]
            raise ConfigError(f"The {what} in {where} could not be loaded ({reason}); {fix}.") from None

    unet = load("UNet", folder / "unet",
                lambda: UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **common))
    vae = load("VAE", folder / "vae",
               lambda: AutoencoderKL.from_pretrained(folder, subfolder="vae", **common))
    text_encoder = load("text encoder", folder / "text_encoder",
                        lambda: CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=torch_dtype,
                                                              local_files_only=True, use_safetensors=True))
    tokenizer = load("tokenizer", folder / "tokenizer",
                     lambda: CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True))
    adapter = load("motion adapter", adapter_dir,
                   lambda: MotionAdapter.from_pretrained(adapter_dir, **common))
    control = load("ControlNet", controlnet_dir,
                   lambda: ControlNetModel.from_pretrained(controlnet_dir, **common))

    # 3. Check the parts fit together (otherwise a shape error deep inside the first render)
    width = text_encoder.config.hidden_size
    if unet.config.addition_embed_type is not None or unet.config.cross_attention_dim != width:  # e.g. SDXL
        raise ConfigError(f"Generator folder {folder} is not a Stable Diffusion 1.5-class pipeline (its UNet wants "
                          f"{unet.config.addition_embed_type or 'text'} conditioning of width "
                          f"{unet.config.cross_attention_dim}, its text encoder gives {width}).")
    for what, where, channels in (("Motion adapter", adapter_dir, adapter.config.block_out_channels),
                                  ("ControlNet", controlnet_dir, control.config.block_out_channels)):
        if tuple(channels) != tuple(unet.config.block_out_channels):
            raise ConfigError(f"{what} {where} does not fit the UNet of {folder} (block channels {tuple(channels)} "
                              f"vs {tuple(unet.config.block_out_channels)}); use the one made for this base model.")
    vae_down = 2 ** (len(vae.config.block_out_channels) - 1)
    control_down = 2 ** (len(control.config.conditioning_embedding_out_channels) - 1)
    if control_down != vae_down:
        raise ConfigError(f"ControlNet {controlnet_dir} does not fit the VAE of {folder} (it shrinks depth maps "
                          f"{control_down}x, the VAE shrinks frames {vae_down}x); use a ControlNet made for this "
                          "base model.")
    if control.config.cross_attention_dim != unet.config.cross_attention_dim:
        raise ConfigError(f"ControlNet {controlnet_dir} does not fit the UNet of {folder} (text width "
                          f"{control.config.cross_attention_dim} vs {unet.config.cross_attention_dim}); use a "
                          "ControlNet made for this base model.")

    # 4. The pipelines: one with the ControlNet, one without, sharing every module (UNet and adapter are
    #    already one UNetMotionModel, so the pipelines hold no second copy of the adapter)
    motion = load("motion adapter", adapter_dir, lambda: motion_unet(unet, adapter),
                  fix="use the motion adapter made for this base model")
    del unet, adapter  # their tensors now belong to the UNetMotionModel
    parts = dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, motion_adapter=None,
                 scheduler=make_sampler("dpmpp", scheduler_config))
    pipe = AnimateDiffControlNetPipeline(unet=motion, controlnet=control, **parts)
    plain = AnimateDiffPipeline(unet=motion, **parts)
    for p in (pipe, plain):
        p.to(device)
        p.set_progress_bar_config(disable=True)
    return DiffusersGenerator(pipe, plain, scheduler_config, _model_id(files, dtype), device, torch_dtype)


def motion_unet(unet, adapter):
    """UNet + motion adapter -> the UNetMotionModel AnimateDiff runs, holding the two models' own tensors.

    diffusers' pipelines merge them with ``UNetMotionModel.from_unet2d``, which builds a randomly
    initialised float32 model and copies both into it, while the pipeline keeps the adapter too: at
    Stable Diffusion 1.5 size, loading in float16 peaked at ~10 GB of RAM and kept ~7.4 GB for 3.8 GB
    of weights (bench/real_size.py). Here the model is built on the meta device and takes the loaded
    tensors over (``assign=True``): no init, no copy, in the loaded dtype."""
    from accelerate import init_empty_weights
    from diffusers import UNetMotionModel

    if adapter.config.get("conv_in_channels"):  # PIA adapters mix conv_in weights: diffusers' own merge
        return UNetMotionModel.from_unet2d(unet, adapter)
    with init_empty_weights():
        model = UNetMotionModel.from_unet2d(unet, adapter, load_weights=False)  # checks the adapter fits
    state = unet.state_dict() | adapter.state_dict()  # the same key names as the motion UNet's
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"the motion adapter's weights do not fit the UNet ({(missing or unexpected)[0]})")
    return model.eval()


def _model_id(files: dict, dtype: str) -> str:
    roles = [(f"{role}/{f.name}", f) for role, fs in files.items() for f in fs]
    return content_digest(roles, extra=f"diffusers/{dtype}")  # dtype changes the frames: part of the id


def _check_files(folder: Path, motion_adapter: str | None, controlnet: str | None, dtype: str):
    """(role -> the files from_pretrained will read, adapter folder, ControlNet folder, scheduler config);
    a ConfigError naming the first thing missing."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
    adapter_dir = Path(motion_adapter).expanduser() if motion_adapter else folder / "motion_adapter"
    controlnet_dir = Path(controlnet).expanduser() if controlnet else folder / "controlnet"
    sd_fix = f"it must be a Stable Diffusion 1.5-class pipeline saved with save_pretrained ({PIPELINE_PARTS})"
    files = {}  # role -> the files from_pretrained will read (hashed into model_id)
    for sub, weights in (("unet", DIFFUSERS_WEIGHTS), ("vae", DIFFUSERS_WEIGHTS),
                         ("text_encoder", TRANSFORMERS_WEIGHTS)):
        files[sub] = _require_part("Generator folder", folder, sub, weights, sd_fix)
    files["tokenizer"] = _tokenizer_files(folder)
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    if not scheduler_file.is_file():
        raise ConfigError(f"Generator folder {folder} has no scheduler/scheduler_config.json; {sd_fix}.")
    files["scheduler"] = [scheduler_file]
    files["motion_adapter"] = _require_part("Motion adapter folder", adapter_dir, "", DIFFUSERS_WEIGHTS,
                                            "pass motion_adapter= a folder saved with MotionAdapter.save_pretrained "
                                            "(default: <generator folder>/motion_adapter)")
    files["controlnet"] = _require_part("ControlNet folder", controlnet_dir, "", DIFFUSERS_WEIGHTS,
                                        "pass controlnet= a depth ControlNetModel folder saved with save_pretrained "
                                        "(default: <generator folder>/controlnet)")
    try:
        scheduler_config = json.loads(scheduler_file.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"Generator folder {folder} has an unreadable scheduler/scheduler_config.json ({e}); "
                          "re-save the pipeline.") from None
    return files, adapter_dir, controlnet_dir, scheduler_config


def identity(folder: Path, motion_adapter: str | None = None, controlnet: str | None = None,
             dtype: str = "float32", **_) -> tuple[str, str]:
    """(model_id, text model id) of the folders without loading them (CLIP is part of model_id)."""
    folder = Path(folder).expanduser()
    return _model_id(_check_files(folder, motion_adapter, controlnet, dtype)[0], dtype), ""


GENERATOR = DiffusersGenerator
