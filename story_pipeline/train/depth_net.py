"""Train the ToyWorld depth net (RGB frame -> relative inverse depth) on frames rendered on the fly.

    .venv/bin/python -m story_pipeline.train.depth_net --out data/models/toyworld_depth --minutes 40

Resume an interrupted run with ``--resume`` (same --out); ``--export-only`` writes the final
weights and model card from the best checkpoint without training further. SIGINT/SIGTERM stop
the run cleanly (checkpoint + export).

Data: ToyWorld clips from ``sample_specs`` (seeds 1, 2, ... one per 120 clips: every species x
motion pair and every setting), with extra camera-facing motions (approach / walk away), rendered
at 128 px and area-resized to the net's input like ``predict_depth`` does. A ring buffer of frames
gets a few new clips every step, so a frame is seen about once. Validation: a fixed set of clips
from ``sample_specs(seed=0)``, never trained on.
Loss: scale-and-shift-invariant MSE on min-max normalised inverse depth (the si-RMSE metric
squared) + gradient matching of the aligned residual at 4 scales (MiDaS) + a weak absolute term
on inverse metres that pins the output scale so it does not drift from frame to frame.
Output (<out>): config.json + diffusion_pytorch_model.safetensors (fp16) + README.md model card;
<out>/checkpoint/ holds fp32 weights, the best-validation weights, the optimizer and state.json.
"""

import dataclasses
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from story_pipeline.train.common import (
    StopOnSignal, load_checkpoint, parse_config, read_checkpoint_state, save_checkpoint, warmup_cosine_lr,
)
from story_pipeline.fsutil import atomic_write_text
from story_pipeline.models.loading import cpu_bf16
from story_pipeline.models.depth_net import (
    DepthNetConfig, build_depth_net, ground_plane_baseline, load_depth_net, predict_depth, row_ramp_baseline, si_rmse,
)
from story_pipeline.toyworld import MOTIONS, SETTINGS, render_clip, sample_specs

VAL_SPEC_SEED = 0  # sample_specs seed of the held-out clips; training uses seeds >= 1
CAMERA_MOTIONS = ("approach", "walk_away")  # depth changes most here: oversampled in training


@dataclasses.dataclass
class TrainConfig:
    out: str = "data/models/toyworld_depth"
    minutes: float = 40.0  # wall-time budget, including earlier runs when resuming
    threads: int = 1  # torch threads; the machine has 2 cores and the other one is busy
    batch_size: int = 16  # 0.36 s/step at 64 px with 1 thread and bf16
    lr: float = 2e-3  # AdamW peak; small net, GroupNorm: tolerates a high rate
    warmup_steps: int = 200  # linear warm-up, then cosine decay over the time budget to lr/20
    weight_decay: float = 1e-4
    grad_weight: float = 0.5  # gradient-matching weight (MiDaS uses 0.5)
    abs_weight: float = 0.1  # weak absolute term on inverse metres: keeps the output scale steady
    pool_frames: int = 1024  # ring buffer of training frames
    clips_per_step: int = 2  # new clips rendered per step (~25 ms each, 6-12 frames)
    camera_motion_frac: float = 0.2  # extra share of approach / walk-away clips on top of sample_specs' 2/12
    val_clips: int = 70  # 10 per setting
    val_frames_per_clip: int = 5
    val_every_s: float = 150.0
    ckpt_every_s: float = 300.0
    log_every: int = 25
    seed: int = 0
    bf16: bool = cpu_bf16()  # autocast where the CPU runs bf16 natively (~1.5x faster than fp32; ~13x slower where emulated)
    resume: bool = False
    export_only: bool = False


# --- data -------------------------------------------------------------------------------------
def heldout_specs(n: int, frames_per_clip: int = 5, size: int = 128) -> list:
    """The validation clips: sample_specs(seed=VAL_SPEC_SEED), never used for training."""
    return sample_specs(n, VAL_SPEC_SEED, size=size, num_frames=frames_per_clip)


def clip_tensors(spec, size: int) -> tuple:
    """Render a clip -> (rgb (F, 3, S, S) float in [0, 1], inverse depth (F, 1, S, S) in 1/m) at the net size."""
    clip = render_clip(spec)
    rgb = torch.from_numpy(clip.rgb).permute(0, 3, 1, 2).float() / 255  # (F, 3, H, W)
    inv = 1.0 / torch.from_numpy(clip.depth)[:, None]  # (F, 1, H, W)
    if rgb.shape[-1] != size:
        rgb = F.interpolate(rgb, size=(size, size), mode="area")
        inv = F.interpolate(inv, size=(size, size), mode="area")
    return rgb, inv


class TrainingSpecs:
    """Endless ClipSpecs: sample_specs(120, seed=chunk) for chunk = 1, 2, ..., with a random clip
    length and some motions swapped for approach / walk-away. Resumable from (chunk, index)."""

    def __init__(self, cfg: TrainConfig, chunk: int = 1, index: int = 0):
        self.cfg, self.chunk, self.index = cfg, chunk, index
        self._load()

    def _load(self):
        self.rng = random.Random(f"depth-train-{self.chunk}")
        self.specs = sample_specs(len(MOTIONS) * 10, self.chunk)  # 120: every species x motion once
        self.specs = [self._vary(s) for s in self.specs]

    def _vary(self, spec):
        motion = spec.motion
        if self.rng.random() < self.cfg.camera_motion_frac:
            motion = self.rng.choice(CAMERA_MOTIONS)
        return dataclasses.replace(spec, motion=motion, num_frames=self.rng.randint(6, 12))

    def next(self):
        if self.index >= len(self.specs):
            self.chunk, self.index = self.chunk + 1, 0
            self._load()
        self.index += 1
        return self.specs[self.index - 1]


class FramePool:
    """Ring buffer of (rgb, inverse depth) frames; batches are drawn uniformly with flips and jitter."""

    def __init__(self, n: int, size: int, gen: torch.Generator):
        self.rgb = torch.zeros(n, 3, size, size)  # (P, 3, S, S)
        self.inv = torch.ones(n, 1, size, size)  # (P, 1, S, S)
        self.n, self.filled, self.head, self.gen = n, 0, 0, gen

    def add(self, rgb, inv):
        for i in range(len(rgb)):
            self.rgb[self.head], self.inv[self.head] = rgb[i], inv[i]
            self.head = (self.head + 1) % self.n
            self.filled = min(self.filled + 1, self.n)

    def batch(self, b: int):
        idx = torch.randint(0, self.filled, (b,), generator=self.gen)
        rgb, inv = self.rgb[idx].clone(), self.inv[idx].clone()
        flip = torch.rand(b, generator=self.gen) < 0.5  # the world is left-right symmetric
        rgb[flip], inv[flip] = rgb[flip].flip(-1), inv[flip].flip(-1)
        gain = 0.85 + 0.3 * torch.rand(b, 1, 1, 1, generator=self.gen)  # exposure jitter
        noise = 0.01 * torch.randn(rgb.shape, generator=self.gen)  # codec / sensor noise
        return (rgb * gain + noise).clamp(0, 1), inv


# --- loss -------------------------------------------------------------------------------------
def minmax(x):
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-6)


def depth_loss(pred, inv, cfg: TrainConfig) -> tuple:
    """pred, inv (B, 1, S, S) float32 -> (total loss, ssi MSE). ssi MSE = si-RMSE^2 of the batch."""
    target = minmax(inv)  # (B, 1, S, S) in [0, 1]
    p = pred.flatten(1)  # (B, S*S)
    t = target.flatten(1)
    pc, tc = p - p.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    scale = (pc * tc).mean(1, keepdim=True) / pc.pow(2).mean(1, keepdim=True).clamp_min(1e-8)
    residual = (scale * pc - tc).view_as(pred)  # aligned prediction - target, (B, 1, S, S)
    ssi = residual.pow(2).mean()
    grad = 0.0
    for k in range(4):  # gradient matching at full, 1/2, 1/4, 1/8 resolution
        r = residual[..., :: 2 ** k, :: 2 ** k]
        grad = grad + (r[..., 1:, :] - r[..., :-1, :]).pow(2).mean() + (r[..., :, 1:] - r[..., :, :-1]).pow(2).mean()
    absolute = (pred - inv).pow(2).mean()
    return ssi + cfg.grad_weight * grad + cfg.abs_weight * absolute, ssi


# --- validation ---------------------------------------------------------------------------------
def load_val_set(cfg: TrainConfig, size: int) -> tuple:
    rgbs, invs = zip(*(clip_tensors(s, size) for s in heldout_specs(cfg.val_clips, cfg.val_frames_per_clip)))
    return torch.cat(rgbs), torch.cat(invs)  # (N, 3, S, S), (N, 1, S, S)


@torch.no_grad()
def validate(model, val_rgb, val_inv, bf16: bool) -> float:
    model.eval()
    preds = []
    for i in range(0, len(val_rgb), 64):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            preds.append(model(val_rgb[i:i + 64]).float())
    model.train()
    pred = torch.cat(preds)[:, 0].numpy()  # (N, S, S)
    return si_rmse(pred, 1.0 / val_inv[:, 0].double().numpy())


def final_metrics(out: Path, cfg: TrainConfig) -> dict:
    """The shipped (fp16) weights through load_depth_net + predict_depth at the renderer's 128 px,
    on the held-out clips, against ground truth; the two baselines on the same frames."""
    model = load_depth_net(out)
    specs = heldout_specs(cfg.val_clips, cfg.val_frames_per_clip)
    clips = [render_clip(s) for s in specs]
    rgb = np.concatenate([c.rgb for c in clips])  # (N, 128, 128, 3)
    depth = np.concatenate([c.depth for c in clips])  # (N, 128, 128)
    t0 = time.time()
    pred = predict_depth(model, rgb)
    per_frame_ms = 1000 * (time.time() - t0) / len(rgb)
    N, H, W = depth.shape
    # resolution floor: the ground truth itself, area-resized to the net's input and back like predict_depth
    inv = torch.from_numpy(1.0 / depth)[:, None]  # (N, 1, H, W)
    S = model.config.input_size
    gt_round_trip = F.interpolate(F.interpolate(inv, size=(S, S), mode="area"), size=(H, W), mode="bilinear",
                                  align_corners=False)[:, 0].numpy()
    m = {"frames": N, "clips": len(specs), "net": si_rmse(pred, depth), "floor": si_rmse(gt_round_trip, depth),
         "ground_plane": si_rmse(ground_plane_baseline(N, H, W), depth),
         "row_ramp": si_rmse(row_ramp_baseline(N, H, W), depth), "predict_ms_per_frame": per_frame_ms}
    motions = np.repeat([s.motion for s in specs], cfg.val_frames_per_clip)
    settings = np.repeat([s.setting for s in specs], cfg.val_frames_per_clip)
    for name, keys, values in (("motion", MOTIONS, motions), ("setting", SETTINGS, settings)):
        m[f"by_{name}"] = {k: {"net": si_rmse(pred[values == k], depth[values == k]),
                               "ground_plane": si_rmse(ground_plane_baseline(int((values == k).sum()), H, W),
                                                       depth[values == k])}
                           for k in keys if (values == k).any()}
    return m


# --- checkpoints ----------------------------------------------------------------------------------
def export(out: Path, cfg: TrainConfig, state: dict) -> dict:
    """Best-validation weights -> fp16 save_pretrained into out, then evaluate them and write the card."""
    ckpt = out / "checkpoint"
    model = build_depth_net(DepthNetConfig(**state["model_config"]))
    best = ckpt / "best.safetensors"
    model.load_state_dict(load_file(str(best if best.exists() else ckpt / "model.safetensors")))
    model.half().save_pretrained(str(out), safe_serialization=True)
    metrics = final_metrics(out, cfg)
    atomic_write_text(out / "README.md", model_card(cfg, state, metrics, model))
    return metrics


def model_card(cfg: TrainConfig, state: dict, m: dict, model) -> str:
    params = sum(p.numel() for p in model.parameters())
    size_mb = sum(f.stat().st_size for f in Path(cfg.out).glob("*.safetensors")) / 1e6
    mc = state["model_config"]
    rows = "\n".join(f"| {k} | {v['net']:.4f} | {v['ground_plane']:.4f} |" for k, v in m["by_motion"].items())
    srows = "\n".join(f"| {k} | {v['net']:.4f} | {v['ground_plane']:.4f} |" for k, v in m["by_setting"].items())
    curve = ", ".join(f"{h['step']}: {h['val']:.4f}" for h in state["history"])
    return f"""# ToyWorld depth net

RGB frame -> relative **inverse** depth (larger = nearer), the MiDaS of ToyWorld. A {params / 1e6:.2f}M-parameter
U-Net (channels {mc['channels']}, {mc['layers_per_level']} residual block per level, GroupNorm, a row-coordinate
input channel), input {mc['input_size']}x{mc['input_size']}; `predict_depth` area-resizes frames to it and resizes
the prediction back. Weights: fp16 safetensors ({size_mb:.1f} MB), loaded in fp32 by
`story_pipeline.models.depth_net.load_depth_net`.

## Training
- Command: `.venv/bin/python -m story_pipeline.train.depth_net --out {cfg.out} --minutes {cfg.minutes:g}`
- Data: ToyWorld clips rendered on the fly at 128 px (area-resized to {mc['input_size']} px), from
  `sample_specs(120, seed)` for seeds 1..{state['chunk']} (every species x motion pair, every setting, random
  corpus identities; no NOVEL_CHARACTERS), {cfg.camera_motion_frac:.0%} of clips switched to approach / walk-away,
  6-12 frames per clip; about {state['frames_rendered']:,} frames ({state['clips_rendered']:,} clips) in a
  {cfg.pool_frames}-frame ring buffer, {cfg.clips_per_step} new clips per step. Augmentation: horizontal flip,
  exposure x0.85-1.15, Gaussian noise sigma 0.01.
- Loss: scale-and-shift-invariant MSE on min-max normalised inverse depth + {cfg.grad_weight} x gradient matching
  (4 scales) + {cfg.abs_weight} x MSE on inverse metres (pins the output scale, so per-clip normalisation
  downstream does not flicker).
- {state['step']:,} steps, batch {cfg.batch_size}, AdamW lr {cfg.lr:g} (warm-up, cosine to lr/20), bf16 autocast,
  {cfg.threads} CPU thread(s); wall time {state['train_seconds'] / 60:.1f} min (training loop); weights exported
  from the best validation checkpoint (step {state['best_step']:,}).
- Validation si-RMSE (64 px, bf16) by step: {curve}

## Metric
si-RMSE: per frame, ground-truth inverse depth min-max normalised to [0, 1]; the prediction aligned to it
by least squares (scale >= 0 + shift); RMSE; mean over frames (`story_pipeline.models.depth_net.si_rmse`).
0.05 = off by 5% of the frame's near-far range after the best affine fit.

## Results (held-out clips: `sample_specs({cfg.val_clips}, seed={VAL_SPEC_SEED})`, {cfg.val_frames_per_clip} frames each,
{m['frames']} frames at 128 px, shipped fp16 weights through `predict_depth`)
| predictor | si-RMSE |
|---|---|
| **depth net** | **{m['net']:.4f}** |
| ground-plane baseline (inverse depth linear in the row below the horizon, constant above) | {m['ground_plane']:.4f} |
| row-ramp baseline (linear in the row over the whole frame) | {m['row_ramp']:.4f} |
| resolution floor: ground truth resized to {mc['input_size']} px and back (a perfect net at this size) | {m['floor']:.4f} |

The net beats the ground-plane baseline by {m['ground_plane'] / m['net']:.1f}x and the row ramp by
{m['row_ramp'] / m['net']:.1f}x; most of its remaining error at 128 px is the {mc['input_size']} px resolution itself
(the floor above: soft edges after upsampling). Inference: {m['predict_ms_per_frame']:.1f} ms per frame (CPU, incl. resizing).

| motion | net | ground plane |
|---|---|---|
{rows}

| setting | net | ground plane |
|---|---|---|
{srows}

## Trade-offs and limits
- {mc['input_size']} px input: the generation resolution, 4x cheaper per step than 128 px, so many more steps fit
  the CPU budget; thin parts (legs, antennae, tails) are a few pixels wide there and come out blurred, and
  the upsampled 128 px depth has soft edges.
- Trained only on ToyWorld's fixed level camera (height 0.8 m, horizon at 40% of the height): the row
  channel lets the net rely on that; it is not a depth estimator for real footage.
- Output is relative inverse depth (approximately 1/m in ToyWorld): normalise it (per clip) before use.
"""


# --- main -----------------------------------------------------------------------------------------
def parse_args(argv=None) -> TrainConfig:
    return parse_config(TrainConfig, __doc__, argv)


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    return warmup_cosine_lr(cfg.lr, cfg.warmup_steps, step, progress)


def main(argv=None):
    cfg = parse_args(argv)
    torch.set_num_threads(cfg.threads)
    out, ckpt = Path(cfg.out), Path(cfg.out) / "checkpoint"
    if cfg.export_only:
        state = read_checkpoint_state(ckpt)
        trained = TrainConfig(**{**state["train_config"], "out": cfg.out})  # the card describes the run
        print(json.dumps(export(out, trained, state), indent=1))
        return

    # 1. Model, optimizer, state (fresh or resumed)
    torch.manual_seed(cfg.seed)
    model_config = DepthNetConfig()
    state = {"step": 0, "train_seconds": 0.0, "chunk": 1, "index": 0, "best_val": float("inf"), "best_step": 0,
             "history": [], "frames_rendered": 0, "clips_rendered": 0,
             "model_config": dataclasses.asdict(model_config), "train_config": dataclasses.asdict(cfg)}
    if cfg.resume:
        state = read_checkpoint_state(ckpt)
        model_config = DepthNetConfig(**state["model_config"])
    model = build_depth_net(model_config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.resume:
        load_checkpoint(ckpt, model, opt, state)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"depth net: {n_params / 1e6:.3f}M params, config {model_config}", flush=True)

    # 2. Data: validation set, then a full training pool
    S = model_config.input_size
    val_rgb, val_inv = load_val_set(cfg, S)
    N = len(val_rgb)
    val_gp = si_rmse(ground_plane_baseline(N, S, S), 1.0 / val_inv[:, 0].double().numpy())
    print(f"validation: {N} frames; ground-plane baseline si-RMSE {val_gp:.4f}", flush=True)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + state["step"])
    specs = TrainingSpecs(cfg, state["chunk"], state["index"])
    pool = FramePool(cfg.pool_frames, S, gen)
    while pool.filled < pool.n:
        pool.add(*clip_tensors(specs.next(), S))

    # 3. Train until the time budget is spent or a signal arrives
    stop = StopOnSignal()
    budget = cfg.minutes * 60
    t_last, t_val, t_ckpt = time.time(), time.time(), time.time()
    log_loss, log_ssi, log_n, log_t = 0.0, 0.0, 0, time.time()
    while state["train_seconds"] < budget and not stop.requested:
        for _ in range(cfg.clips_per_step):
            rgb, inv = clip_tensors(specs.next(), S)
            pool.add(rgb, inv)
            state["frames_rendered"] += len(rgb)
            state["clips_rendered"] += 1
        x, inv = pool.batch(cfg.batch_size)  # (B, 3, S, S), (B, 1, S, S)
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, state["step"], state["train_seconds"] / budget)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            pred = model(x)
        loss, ssi = depth_loss(pred.float(), inv, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        state["step"] += 1
        now = time.time()
        state["train_seconds"] += now - t_last
        t_last = now
        state["chunk"], state["index"] = specs.chunk, specs.index
        log_loss, log_ssi, log_n = log_loss + loss.item(), log_ssi + ssi.item(), log_n + 1
        if state["step"] % cfg.log_every == 0:
            print(f"step {state['step']} loss {log_loss / log_n:.5f} train si-RMSE {math.sqrt(log_ssi / log_n):.4f} "
                  f"lr {opt.param_groups[0]['lr']:.2e} {(now - log_t) / log_n:.3f} s/step "
                  f"{state['train_seconds'] / 60:.1f} min", flush=True)
            log_loss, log_ssi, log_n, log_t = 0.0, 0.0, 0, now
        done = state["train_seconds"] >= budget or stop.requested
        if now - t_val >= cfg.val_every_s or done:
            val = validate(model, val_rgb, val_inv, cfg.bf16)
            best = val < state["best_val"]
            if best:
                state["best_val"], state["best_step"] = val, state["step"]
            state["history"].append({"step": state["step"], "val": val, "minutes": state["train_seconds"] / 60})
            print(f"step {state['step']} val si-RMSE {val:.4f} (ground plane {val_gp:.4f}, {val_gp / val:.1f}x)"
                  f"{' best' if best else ''}", flush=True)
            save_checkpoint(ckpt, model, opt, state, best)
            t_val = t_ckpt = t_last = time.time()  # validation and saving are not training time
        elif now - t_ckpt >= cfg.ckpt_every_s:
            save_checkpoint(ckpt, model, opt, state, best=False)
            t_ckpt = t_last = time.time()

    # 4. Export the best weights in fp16 with the model card
    metrics = export(out, cfg, state)
    print(f"done: {state['step']} steps, {state['train_seconds'] / 60:.1f} min; held-out si-RMSE net "
          f"{metrics['net']:.4f}, ground plane {metrics['ground_plane']:.4f}, row ramp {metrics['row_ramp']:.4f}",
          flush=True)


if __name__ == "__main__":
    main()
