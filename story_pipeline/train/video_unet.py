"""Train the ToyWorld depth-guided video diffusion model (``models/video_unet.py``).

    .venv/bin/python -m story_pipeline.train.video_unet --out data/models/toyworld_video --minutes 100

Resume an interrupted run with ``--resume`` (same --out); ``--export-only`` writes the final
weights from the checkpoint without training further. SIGINT/SIGTERM stop cleanly (checkpoint + export).

Data: ToyWorld clips rendered on the fly from ``sample_specs(120, chunk)`` for chunks 1, 2, ...
(every species x motion pair, all settings, corpus colours only: never a NOVEL_CHARACTERS identity).
From each 32-frame clip a shot is cut the way the pipeline cuts one: a random span of 20-32 frames,
16 frames spread uniformly over it (``depth.frame_indices``). Frames are area-resized to 64 px.
The conditioning depth is what the pipeline feeds at inference: the shipped depth net's
prediction on the 128-px frames, resized to 64 px and normalised per clip to [-1, 1]
(``depth.resize_depth`` + ``depth.normalise_depth``). Text: the clip's caption, or (with
``partial_caption_frac``) a short description naming some of its attributes (prompts look like
that), as frozen MiniLM token states (``TextEncoder.prompt_states``). A pool of clips gets
a new clip every 1 / ``clips_per_step`` steps.
A step is 16 frames laid out as clips x frames from ``layouts`` (default 4x4, 2x8 or 1x16 at
random), so the temporal layers see every length and a step sees up to four different clips.

Objective: v-prediction MSE weighted per pixel by ``1 + char_weight * character coverage`` (the
renderer's mask, area-resized; characters cover ~5% of a frame and an unweighted loss learned the
settings long before the characters), normalised by the mean weight; with ``hf_weight``, plus that
many times the same loss on the error's 3x3 high-pass (what a blur loses: a speckled or smeared
texture costs more than its plain MSE); cosine ("squaredcos_cap_v2") schedule with 1000 steps, AdamW, EMA
of the weights (exported). Classifier-free guidance: the text of ``text_drop`` of the clips is
the empty prompt. Structure: the depth of ``depth_drop`` of the clips is dropped (structure scale
0), so the model also generates without structure and the sampler's timestep clamping (tau) runs
a trained mode. With ``swap_frac``, that share of the shots is conditioned on the depth of the same clip
played by another species (``ShotMaker``), the case the pipeline meets when the corpus has no clip of
the character's kind doing the shot's motion; ``swap_strength`` is their structure scale (the pipeline
renders such a shot at ``render.guidance.RELAXED_STRENGTH``; neither run 7 nor run 8 beat the shipped
weights, see the model card's runs not adopted). The paper trains the base text-to-video model first and
then the structure encoder with the base frozen; here both train jointly in one run (one two-hour budget cannot
hold two runs, and the dropout keeps the structure-free mode trained).

Validation (model selection): EMA loss on fixed held-out clips of ``sample_specs(seed=0)`` at
fixed timesteps and noise, with and without depth, and with the depth of the same shot played by
another species (``val_loss_swap_depth``: how well the prompt's species wins over a retrieved actor's
silhouette). The quality gates live in
``story_pipeline.eval.video`` (run after training).
Output (<out>): config.json + diffusion_pytorch_model.safetensors (fp16 EMA) + scheduler/ +
train_log.json; <out>/checkpoint/ holds fp32 weights, EMA, the optimizer and state.json.
"""

import dataclasses
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from story_pipeline.train.common import (
    StopOnSignal, load_checkpoint, parse_config, read_checkpoint_state, save_checkpoint, warmup_cosine_lr,
)
from story_pipeline.train.frame_encoder import partial_caption
from story_pipeline.depth.structure import frame_indices, normalise_depth, resize_depth
from story_pipeline.fsutil import atomic_path, atomic_write_text
from story_pipeline.models.loading import cpu_bf16
from story_pipeline.models.depth_net import load_depth_net, predict_depth
from story_pipeline.models.frame_encoder import frames_to_tensor
from story_pipeline.models.video_unet import ToyVideoUNet, make_scheduler
from story_pipeline.models.text_encoder import PROMPT_LENGTH, get_text_encoder
from story_pipeline.toyworld import MOTIONS, SPECIES, render_clip, sample_specs

VAL_SPEC_SEED = 0
DEPTH_MODEL = Path(__file__).resolve().parents[2] / "data" / "models" / "toyworld_depth"


@dataclasses.dataclass
class TrainConfig:
    out: str = "data/models/toyworld_video"
    minutes: float = 100.0  # wall-time budget of the training loop, including earlier runs when resuming
    threads: int = 2
    size: int = 64  # frames are trained at 64x64 (pixel space)
    frames: int = 16  # a shot; a step is 16 frames (see layouts)
    layouts: str = "4x4:0.5,2x8:0.3,1x16:0.2"  # clips x frames per step : probability
    char_weight: float = 4.0  # extra loss weight on character pixels (0 = plain MSE)
    hf_weight: float = 0.0  # extra loss on the error's high frequencies (stripes, speckle); 0 = off
    lr: float = 4e-4
    warmup_steps: int = 200
    weight_decay: float = 0.01
    ema_decay: float = 0.998  # ~500-step horizon: a short run needs a short EMA
    text_drop: float = 0.1  # classifier-free guidance: empty prompt
    depth_drop: float = 0.15  # structure dropped: the model also runs without depth (tau < 1)
    swap_frac: float = 0.0  # shots whose depth comes from another species doing the same motion (see ShotMaker)
    # Structure scale of those shots: 1 = full guidance (run 7: loosened the depth everywhere);
    # render.guidance.RELAXED_STRENGTH (0.5) = the strength the pipeline renders such a shot with (run 8:
    # full guidance stayed strict, but at 0.5 the model let go of the depth instead of drawing the species).
    swap_strength: float = 1.0
    partial_caption_frac: float = 0.3
    pool_clips: int = 1200
    initial_clips: int = 300
    clips_per_step: float = 0.5  # a new shot costs ~0.25 s (render + depth net + MiniLM): one every other step
    val_clips: int = 12
    val_every_s: float = 600.0
    ckpt_every_s: float = 300.0
    log_every: int = 25
    seed: int = 0
    bf16: bool = cpu_bf16()  # autocast where the CPU runs bf16 natively (~1.5x faster than fp32; ~13x slower where emulated)
    resume: bool = False
    export_only: bool = False
    # With resume: give the structure encoder's output convolutions a default (non-zero) init again.
    # Zero convolutions (ControlNet's) protect a *pretrained* base; trained jointly from scratch they
    # stayed ~20x smaller than the U-Net's weights for 700 steps (val loss with depth = without),
    # i.e. the model ignored the structure. The first run is thus the paper's stage 1 (base text-to-
    # video); resuming with this flag starts the structure stage on top of it.
    reinit_structure_out: bool = False
    init_from: str = ""  # start (step 0 of a new schedule) from exported weights, e.g. the shipped fp16 model
    text_at_32px: bool = False  # text cross-attention at 32 px too (down block 1, up block 2); with --init-from,
    # the new layers start at zero output (the same function as the starting weights)
    export_weights: str = "ema"  # ema | raw: which weights --export-only writes (raw: the last optimizer step)


TEXT_AT_32PX = dict(  # --text-at-32px: the shipped block layout with cross-attention at 32 px as well
    down_block_types=("DownBlockMotion", "CrossAttnDownBlockMotion", "CrossAttnDownBlockMotion",
                      "CrossAttnDownBlockMotion"),
    up_block_types=("CrossAttnUpBlockMotion", "CrossAttnUpBlockMotion", "CrossAttnUpBlockMotion", "UpBlockMotion"))


# --- data ---------------------------------------------------------------------------------------
class ShotMaker:
    """ClipSpec -> (frames (16, 3, 64, 64) in [-1, 1], depth (16, 64, 64) in [-1, 1], caption, attrs,
    character coverage (16, 64, 64) in [0, 1], swap (bool)).

    With ``swap`` (drawn for ``swap_frac`` of the shots), the depth is the depth net's on the same clip
    rendered with another species as its actor (same seed: same place, camera, path and pose stream),
    while frames, caption and coverage stay the spec's: what the pipeline asks when a shot's retrieved
    actor is not the story's character, with the answer ToyWorld can render. The model learns to keep
    the depth's place, path and timing and to draw the prompt's species over it."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.depth_net = load_depth_net(DEPTH_MODEL)

    def __call__(self, spec, rng: random.Random, swap: bool | None = None):
        if swap is None:
            swap = bool(self.cfg.swap_frac) and rng.random() < self.cfg.swap_frac
        clip = render_clip(spec)
        n = len(clip.rgb)
        span = rng.randint(min(20, n), n)
        start = rng.randint(0, n - span)
        idx = frame_indices(start, start + span, self.cfg.frames)
        actor = render_clip(swapped_actor(spec, rng)) if swap else clip
        rgb = clip.rgb[idx]  # (F, 128, 128, 3)
        with torch.no_grad():
            raw = predict_depth(self.depth_net, actor.rgb[idx])  # (F, 128, 128) inverse depth
        depth = normalise_depth(resize_depth(raw, (self.cfg.size, self.cfg.size)), "clip")
        frames = frames_to_tensor(rgb, self.cfg.size) * 2 - 1  # (F, 3, S, S)
        mask = F.adaptive_avg_pool2d(torch.from_numpy(clip.mask[idx]).float()[:, None], self.cfg.size)[:, 0]
        return frames, torch.from_numpy(depth), clip.caption, clip.attributes, mask, swap


def swapped_actor(spec, rng: random.Random):
    """The same ClipSpec with another species (random) as its actor."""
    other = rng.choice([sp for sp in SPECIES if sp != spec.character.species])
    return dataclasses.replace(spec, character=dataclasses.replace(spec.character, species=other))


class Pool:
    """Ring buffer of shots: frames and depth as float16, two prompt-state rows per shot."""

    def __init__(self, cfg: TrainConfig, gen: torch.Generator):
        n, f, s = cfg.pool_clips, cfg.frames, cfg.size
        self.frames = torch.zeros(n, f, 3, s, s, dtype=torch.float16)
        self.depth = torch.zeros(n, f, s, s, dtype=torch.float16)
        self.mask = torch.zeros(n, f, s, s, dtype=torch.float16)
        self.text = torch.zeros(n, 2, PROMPT_LENGTH, 384, dtype=torch.float16)  # caption, partial
        self.swap = torch.zeros(n, dtype=torch.bool)  # depth of another species (ShotMaker's swap)
        self.n, self.filled, self.head, self.gen = n, 0, 0, gen
        self.layouts = parse_layouts(cfg.layouts, cfg.frames)  # [(clips, frame stride, probability)]
        self.layout_probs = torch.tensor([p for _, _, p in self.layouts])

    def add(self, shots: list, texts: list[tuple[str, str]]) -> None:
        states = torch.from_numpy(get_text_encoder().prompt_states([t for pair in texts for t in pair]))
        states = states.view(len(shots), 2, PROMPT_LENGTH, -1).half()
        for (frames, depth, _, _, mask, swap), st in zip(shots, states):
            self.frames[self.head], self.depth[self.head], self.text[self.head] = frames.half(), depth.half(), st
            self.mask[self.head], self.swap[self.head] = mask.half(), swap
            self.head = (self.head + 1) % self.n
            self.filled = min(self.filled + 1, self.n)

    def batch(self, cfg: TrainConfig, null_text: torch.Tensor):
        """-> x0 (B, 3, F, S, S), depth (B, 1, F, S, S), text (B, L, D), structure scale (B,),
        character coverage (B, 1, F, S, S)."""
        b, stride, _ = self.layouts[int(torch.multinomial(self.layout_probs, 1, generator=self.gen))]
        clips = torch.randperm(self.filled, generator=self.gen)[:b]
        off = int(torch.randint(0, stride, (), generator=self.gen))
        x0 = self.frames[clips, off::stride].float().permute(0, 2, 1, 3, 4)  # (B, 3, F', S, S)
        depth = self.depth[clips, off::stride].float()[:, None]  # (B, 1, F', S, S)
        mask = self.mask[clips, off::stride].float()[:, None]
        partial = (torch.rand(b, generator=self.gen) < cfg.partial_caption_frac).long()
        text = self.text[clips, partial].float()  # (B, L, D)
        drop_text = torch.rand(b, generator=self.gen) < cfg.text_drop
        text[drop_text] = null_text
        scale = (torch.rand(b, generator=self.gen) >= cfg.depth_drop).float()
        scale[self.swap[clips]] *= cfg.swap_strength
        return x0, depth, text, scale, mask


def parse_layouts(spec: str, frames: int) -> list[tuple[int, int, float]]:
    """``"4x4:0.5,2x8:0.5"`` -> [(clips, frame stride, probability)]; clips x frames must be ``frames``."""
    out = []
    for part in spec.split(","):
        shape, _, prob = part.partition(":")
        b, f = (int(x) for x in shape.split("x"))
        if b * f != frames or frames % f:
            raise ValueError(f"layout {shape!r}: clips x frames must be {frames} and frames divide {frames}")
        out.append((b, frames // f, float(prob or 1)))
    return out


def high_pass(x: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) -> x minus its 3x3 spatial mean: what a blur would lose (stripes, speckle, edges)."""
    return x - F.avg_pool3d(x, (1, 3, 3), stride=1, padding=(0, 1, 1), count_include_pad=False)


def weighted_v_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, char_weight: float,
                    hf_weight: float = 0.0):
    """MSE with per-pixel weight 1 + char_weight * coverage, normalised by the mean weight; with
    ``hf_weight``, plus that many times the same weighted MSE of the error's high-pass: a blurred
    or speckled texture costs more than its plain MSE says."""
    w = 1 + char_weight * mask
    err = pred.float() - target
    loss = (err ** 2 * w).mean() / w.mean()
    if hf_weight:
        loss = loss + hf_weight * (high_pass(err) ** 2 * w).mean() / w.mean()
    return loss


def training_specs(chunk: int) -> list:
    return sample_specs(len(MOTIONS) * 10, chunk)


# --- EMA ----------------------------------------------------------------------------------------
class EMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v.float(), 1 - d)
            else:
                self.shadow[k].copy_(v)


# --- validation ---------------------------------------------------------------------------------
class Validation:
    """Fixed held-out shots, timesteps and noise: the EMA model's v-loss with and without depth."""

    def __init__(self, cfg: TrainConfig, maker: ShotMaker, sched):
        rng = random.Random("video-val")
        specs = sample_specs(cfg.val_clips, VAL_SPEC_SEED)
        shots, swapped = [], []
        for spec in specs:  # each shot twice, over the same frames: its own depth, another species' depth
            before = rng.getstate()
            shots.append(maker(spec, rng, swap=False))
            after = rng.getstate()
            rng.setstate(before)
            swapped.append(maker(spec, rng, swap=True))
            rng.setstate(after)
        gen = torch.Generator().manual_seed(1234)
        self.x0 = torch.stack([s[0] for s in shots]).permute(0, 2, 1, 3, 4)[:, :, ::2]  # (N, 3, 8, S, S)
        self.depth = torch.stack([s[1] for s in shots])[:, None, ::2]  # (N, 1, 8, S, S)
        self.swap_depth = torch.stack([s[1] for s in swapped])[:, None, ::2]
        self.text = torch.from_numpy(get_text_encoder().prompt_states([s[2] for s in shots]))
        self.mask = torch.stack([s[4] for s in shots])[:, None, ::2]  # (N, 1, 8, S, S)
        self.t = torch.linspace(50, 950, len(shots)).long()
        self.noise = torch.randn(self.x0.shape, generator=gen)
        self.xt = sched.add_noise(self.x0, self.noise, self.t)
        self.v = sched.get_velocity(self.x0, self.noise, self.t)
        self.swap_strength = cfg.swap_strength  # the swap row runs at the scale swap shots train at

    @torch.no_grad()
    def __call__(self, model, bf16: bool) -> dict:
        out = {}
        for name, depth, scale in (("depth", self.depth, 1.0), ("no_depth", self.depth, 0.0),
                                   ("swap_depth", self.swap_depth, self.swap_strength)):
            losses, char = [], []
            for i in range(len(self.t)):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    pred = model(self.xt[i:i + 1], self.t[i:i + 1], self.text[i:i + 1], depth=depth[i:i + 1],
                                 structure_scale=scale)
                err = (pred.float() - self.v[i:i + 1]) ** 2
                losses.append(err.mean().item())
                m = self.mask[i:i + 1].expand_as(err)
                char.append(((err * m).sum() / m.sum().clamp_min(1)).item())
            out[f"val_loss_{name}"] = float(np.mean(losses))
            out[f"val_char_loss_{name}"] = float(np.mean(char))  # on character pixels only
        return out


# --- export -------------------------------------------------------------------------------------
def export(cfg: TrainConfig, state: dict) -> None:
    ckpt = Path(cfg.out) / "checkpoint"
    model = ToyVideoUNet(**state["model_config"])
    name = "model.safetensors" if cfg.export_weights == "raw" else "ema.safetensors"
    model.load_state_dict(load_file(str(ckpt / name)))
    model.half().save_pretrained(cfg.out, safe_serialization=True)
    make_scheduler().save_pretrained(Path(cfg.out) / "scheduler")
    atomic_write_text(Path(cfg.out) / "train_log.json", json.dumps(
        {k: state[k] for k in ("step", "train_seconds", "clips_seen", "history", "config", "previous") if k in state},
        indent=1))
    print(f"exported {cfg.export_weights} weights at step {state['step']} to {cfg.out}", flush=True)


# --- main ---------------------------------------------------------------------------------------
def main(argv=None) -> None:
    cfg = parse_config(TrainConfig, __doc__, argv)
    torch.set_num_threads(cfg.threads)
    out, ckpt = Path(cfg.out), Path(cfg.out) / "checkpoint"
    if cfg.export_only:
        export(cfg, read_checkpoint_state(ckpt))
        return
    torch.manual_seed(cfg.seed)
    model = ToyVideoUNet(**(TEXT_AT_32PX if cfg.text_at_32px else {}))
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.99))
    ema = EMA(model, cfg.ema_decay)
    sched = make_scheduler()
    state = {"step": 0, "train_seconds": 0.0, "chunk": 1, "spec_index": 0, "clips_seen": 0, "history": [],
             "best_val": None, "config": dataclasses.asdict(cfg), "model_config": dict(model.config),
             "params": n_params}
    if cfg.init_from and not cfg.resume:
        from story_pipeline.models.video_unet import load_adding_attention, load_video_unet

        added = load_adding_attention(model, load_video_unet(cfg.init_from).state_dict())  # [] if same layout
        ema = EMA(model, cfg.ema_decay)
        earlier = Path(cfg.init_from) / "train_log.json"
        if earlier.exists():  # the runs behind the starting weights, for the model card
            prev = json.loads(earlier.read_text())
            state["previous"] = [*prev.pop("previous", []), prev]
        state["history"].append({"step": 0, "event": f"initialised from {cfg.init_from}"})
        if added:
            state["history"].append({"step": 0, "event": f"text cross-attention added at 32 px ({len(added)} new "
                                     "weights, zero output projections)"})
        print(f"initialised from {cfg.init_from}", flush=True)
    if cfg.resume:
        state = read_checkpoint_state(ckpt)
        load_checkpoint(ckpt, model, opt, state)
        ema.shadow = {k: v.float() for k, v in load_file(str(ckpt / "ema.safetensors")).items()}
        was = state["config"].get("minutes")
        if was != cfg.minutes:  # the cosine schedule stretches (or shrinks): say so in the card
            lr = warmup_cosine_lr(cfg.lr, cfg.warmup_steps, state["step"], state["train_seconds"] / (cfg.minutes * 60))
            state["history"].append({"step": state["step"], "event": f"resumed with a {cfg.minutes:g}-min budget "
                                     f"(was {was:g}; lr back to {lr:.1e})"})
            state["config"]["minutes"] = cfg.minutes
        if cfg.reinit_structure_out:
            torch.manual_seed(cfg.seed + state["step"])
            for conv in model.structure.out:
                conv.reset_parameters()
            for k, v in model.state_dict().items():
                if k.startswith("structure.out."):
                    ema.shadow[k] = v.detach().clone().float()
                    for p in (p for n, p in model.named_parameters() if n == k):
                        opt.state.pop(p, None)  # fresh Adam moments for the re-initialised weights
            state["history"].append({"step": state["step"], "event": "structure output convs re-initialised"})
            state["config"]["reinit_structure_out_at_step"] = state["step"]
            print(f"structure encoder output convolutions re-initialised at step {state['step']}", flush=True)
    print(f"video model: {n_params / 1e6:.2f}M parameters; budget {cfg.minutes} min", flush=True)

    maker = ShotMaker(cfg)
    rng = random.Random(f"video-train-{state['step']}")
    gen = torch.Generator().manual_seed(cfg.seed + state["step"])
    pool = Pool(cfg, gen)
    null_text = torch.from_numpy(get_text_encoder().prompt_states([""]))[0]
    specs = training_specs(state["chunk"])

    def next_specs(k: int) -> list:
        got = []
        for _ in range(k):
            if state["spec_index"] >= len(specs):
                state["chunk"] += 1
                state["spec_index"] = 0
                specs[:] = training_specs(state["chunk"])
            got.append(specs[state["spec_index"]])
            state["spec_index"] += 1
        return got

    def add(k: int) -> None:
        shots = [maker(s, rng) for s in next_specs(k)]
        pool.add(shots, [(s[2], partial_caption(s[3], rng)) for s in shots])
        state["clips_seen"] += k

    t0 = time.time()
    for i in range(0, cfg.initial_clips, 20):
        add(min(20, cfg.initial_clips - i))
    print(f"pool filled with {pool.filled} shots in {time.time() - t0:.0f} s", flush=True)
    val = Validation(cfg, maker, sched)
    if cfg.init_from and state["step"] == 0:  # the starting weights' figures, for comparison
        metrics = val(model.eval(), cfg.bf16)
        model.train()
        state["history"].append({"step": 0, **metrics})
        print("val step 0: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)
    stop = StopOnSignal()
    budget = cfg.minutes * 60
    start = time.time() - state["train_seconds"]
    last_val = last_ckpt = time.time()
    losses = []
    while not stop.requested and time.time() - start < budget:
        step = state["step"]
        for g in opt.param_groups:
            g["lr"] = warmup_cosine_lr(cfg.lr, cfg.warmup_steps, step, (time.time() - start) / budget)
        if rng.random() < cfg.clips_per_step:
            add(1)
        x0, depth, text, scale, mask = pool.batch(cfg, null_text)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (x0.shape[0],), generator=gen)
        xt = sched.add_noise(x0, noise, t)
        target = sched.get_velocity(x0, noise, t)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            pred = model(xt, t, text, depth=depth, structure_scale=scale)
        loss = weighted_v_loss(pred, target, mask, cfg.char_weight, cfg.hf_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model, step)
        state["step"] = step + 1
        losses.append(loss.item())
        if state["step"] % cfg.log_every == 0:
            el = time.time() - start
            print(f"step {state['step']} loss {np.mean(losses):.4f} lr {opt.param_groups[0]['lr']:.2e} "
                  f"{el / 60:.1f}/{cfg.minutes:.0f} min ({el / max(state['step'], 1):.2f} s/step)", flush=True)
            state["history"].append({"step": state["step"], "minutes": el / 60, "loss": float(np.mean(losses))})
            losses = []
        final = stop.requested or time.time() - start >= budget
        if time.time() - last_val >= cfg.val_every_s or final:
            shadow = ToyVideoUNet(**state["model_config"])
            shadow.load_state_dict(ema.shadow)
            metrics = val(shadow.eval(), cfg.bf16)
            state["history"].append({"step": state["step"], **metrics})
            print(f"val step {state['step']}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)
            last_val = time.time()
        if time.time() - last_ckpt >= cfg.ckpt_every_s or final:
            state["train_seconds"] = time.time() - start
            save_checkpoint(ckpt, model, opt, state, best=False)
            with atomic_path(ckpt / "ema.safetensors") as tmp:
                save_file({k: v.contiguous() for k, v in ema.shadow.items()}, str(tmp))
            last_ckpt = time.time()
    state["train_seconds"] = time.time() - start
    save_checkpoint(ckpt, model, opt, state, best=False)
    with atomic_path(ckpt / "ema.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in ema.shadow.items()}, str(tmp))
    export(cfg, state)


if __name__ == "__main__":
    main()
