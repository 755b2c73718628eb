"""TimeInv / Textual Inversion (+ LoRA) on the diffusers backend (paper steps 6-7): the same method
as ``timeinv.py`` with CLIP for the text side and AnimateDiff + depth ControlNet for the model.

    from story_pipeline.personalize.timeinv import PersonalizeConfig, personalize, concepts_for
    gen = load_generator("diffusers", "~/models/sd15", device="cuda")
    result = personalize(images, "<tabby>", "cat", gen, PersonalizeConfig(method="timeinv_lora"))
    shot = concepts_for(gen).add(result.learned).generate("a <tabby> jumps in the snow", depth, tau=1.0)

(``timeinv.personalize`` / ``timeinv.concepts_for`` route here for a ``DiffusersGenerator``.)

- Text: the pseudo-word is added to a copy of the pipeline's CLIP tokenizer. Its input embedding is
  a row of the table ``V`` (B x d, every row the mean embedding of the class word's tokens),
  substituted for the token's lookup by a forward hook on CLIP's token embedding. The shared
  tokenizer and text encoder are never changed.
- Concept videos: each augmented reference still repeated ``config.frames`` frames at the
  generator's resolution, VAE-encoded to latents (B, C, F, h, w); its depth (per frame) goes to
  the ControlNet as the grey image the sampler would give it.
- Loss: noise at a random timestep t, row ``bucket(t)`` in the prompt, MSE against the scheduler's
  target (epsilon or v). Trained: V and (``*_lora``) peft LoRA on q/k/v of the UNet's spatial self-
  and cross-attention (``timeinv.LORA_TARGETS``: not the motion modules). The adapter is unloaded
  at the end, so the pipeline is bit-identical to before.
"""

import copy
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from story_pipeline.personalize.timeinv import (NUM_TRAIN_TIMESTEPS, TEMPLATES, Concepts, LearnedConcept, PersonalizationError,
                       PersonalizeConfig, PersonalizeResult, PriorBank, TokenTable, _resume, _save_checkpoint, _snapshot,
                       adapter_name, after_step, bucket, concept_bank, lora_applied, lora_config)

N_AUG = 16  # augmented copies of each reference still (as on the ToyWorld backend)


# --- text side ----------------------------------------------------------------------------------------
class ClipConceptText:
    """CLIP with pseudo-words: prompt states where each concept token's input embedding comes
    from its table row. The pipeline's tokenizer is copied; its text encoder is read, never changed."""

    def __init__(self, pipe):
        self.tokenizer = copy.deepcopy(pipe.tokenizer)  # adding tokens must not touch the shared one
        self.text_encoder = pipe.text_encoder
        self.token_ids: dict[str, int] = {}

    @property
    def token_embedding(self) -> torch.nn.Embedding:
        return self.text_encoder.get_input_embeddings()

    def add_token(self, token: str) -> None:
        if token in self.token_ids:
            return
        vocab = self.tokenizer.get_vocab()
        if token in vocab or f"{token}</w>" in vocab or self.tokenizer.add_tokens([token]) != 1:
            raise PersonalizationError(f"Token {token} is already a word of the CLIP tokenizer's vocabulary; "
                                       "choose another name such as <my-cat>.")
        self.token_ids[token] = self.tokenizer.convert_tokens_to_ids(token)

    def class_embedding(self, class_word: str) -> torch.Tensor:
        """(D,) mean input embedding of the class word's tokens (float32, CPU)."""
        ids = self.tokenizer(class_word, add_special_tokens=False)["input_ids"]
        if not ids or self.tokenizer.unk_token_id in ids:
            raise PersonalizationError(f"Class word {class_word!r} is unknown to the CLIP tokenizer; use a common "
                                       "English word such as 'cat' or 'robot'.")
        return self.token_embedding.weight[ids].detach().float().mean(0).cpu()

    def states(self, prompts: list[str], rows: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, L, D) CLIP last hidden states; ``rows[token]`` is (N, D): that token's input embedding per prompt."""
        tok = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        ids = tok.input_ids.to(self.text_encoder.device)  # (N, L)
        masks = {t: (ids == self.token_ids[t])[..., None] for t in rows}  # (N, L, 1) each
        pseudo = torch.isin(ids, torch.tensor(list(self.token_ids.values()), dtype=ids.dtype, device=ids.device))

        def swap(module, args, out):  # (N, L, D) lookups -> the table rows at the pseudo-word positions
            for t, r in rows.items():
                out = torch.where(masks[t], r[:, None, :].to(out.device, out.dtype), out)
            return out

        # an added id may lie past the embedding matrix: look up id 0 there instead (replaced by the hook);
        # 0 is never CLIP's end token, so the pooled output's end-token search is unaffected
        hook = self.token_embedding.register_forward_hook(swap)
        try:
            return self.text_encoder(ids.masked_fill(pseudo, 0))[0]  # SD reads the last hidden state
        finally:
            hook.remove()


# --- training -------------------------------------------------------------------------------------------
def depth_images(depth: torch.Tensor) -> torch.Tensor:
    """(N, H, W) depth in [-1, 1] -> (N, 3, H, W) in [0, 1]: what ``depth_conditioning`` + the
    pipeline's control processor give the ControlNet (grey, near = bright, 8-bit)."""
    grey = ((depth.float() + 1) * 127.5).round().clamp(0, 255) / 255
    return grey[:, None].expand(-1, 3, -1, -1)


@torch.no_grad()
def encode_latents(vae, x: torch.Tensor, batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) frames in [-1, 1] -> the VAE posterior's (mean, std), (N, C, h, w) each, scaled."""
    dists = [vae.encode(x[i:i + batch].to(vae.device, vae.dtype)).latent_dist for i in range(0, len(x), batch)]
    s = vae.config.scaling_factor
    return torch.cat([d.mean for d in dists]) * s, torch.cat([d.std for d in dists]) * s


def denoise_loss(pipe, sched, z0, cond, states, t, noise) -> torch.Tensor:
    """MSE of UNet (+ ControlNet on depth) against the scheduler's target for a batch of videos:
    z0, noise (B, C, F, h, w) latents; cond (B * F, 3, H, W) depth images; states (B, L, D); t (B,)."""
    b, c, f, h, w = z0.shape
    zt = sched.add_noise(z0, noise, t)
    ehs = states.to(pipe.unet.dtype).repeat_interleave(f, dim=0)  # (B * F, L, D): per frame, as the pipeline does
    down, mid = pipe.controlnet(zt.transpose(1, 2).reshape(b * f, c, h, w), t.repeat_interleave(f),  # (B * F, C, h, w)
                                encoder_hidden_states=ehs, controlnet_cond=cond.to(pipe.controlnet.dtype),
                                conditioning_scale=1.0, return_dict=False)
    pred = pipe.unet(zt, t, encoder_hidden_states=ehs, down_block_additional_residuals=down,
                     mid_block_additional_residual=mid).sample  # (B, C, F, h, w)
    target = noise if sched.config.prediction_type == "epsilon" else sched.get_velocity(z0, noise, t)
    return F.mse_loss(pred.float(), target.float())


def personalize_diffusers(images: list, token: str, class_word: str, generator, config: PersonalizeConfig,
                          log: Callable[[str, float, int], None] | None = None,
                          progress: Callable[[int, int], None] | None = None,
                          on_sample: Callable[[int, LearnedConcept], None] | None = None,
                          estimator: Callable[[np.ndarray], np.ndarray] | None = None,
                          checkpoint: Path | None = None, prior: PriorBank | None = None) -> PersonalizeResult:
    """Learn ``token`` from PIL ``images`` on a ``DiffusersGenerator``'s pipeline (frozen).

    ``estimator``: (F, H, W, 3) uint8 -> (F, H, W) inverse depth (default: the ToyWorld depth net).
    ``log``, ``progress``, ``on_sample``, ``checkpoint`` and ``prior`` as in ``timeinv.personalize``."""
    from diffusers import DDPMScheduler

    from story_pipeline.models.depth_net import load_depth_net
    from story_pipeline.eval.video import MODELS

    # 1. Check inputs
    config.check()
    usable = [im for im in images if im is not None]
    if not usable:
        raise PersonalizationError(f"Character {token} has no usable reference image; add at least one picture.")
    if config.frames > generator.max_frames:
        raise PersonalizationError(f"frames ({config.frames}) is more than the motion adapter's "
                                   f"{generator.max_frames}; personalize with fewer frames.")
    sched = DDPMScheduler.from_config(generator.scheduler_config)  # the training noise schedule of the model
    if sched.config.prediction_type not in ("epsilon", "v_prediction"):
        raise PersonalizationError(f"The scheduler's prediction_type {sched.config.prediction_type!r} is not "
                                   "supported; personalization trains epsilon or v_prediction models.")
    pipe, device = generator.pipe, generator.device
    torch.manual_seed(config.seed)  # the LoRA init
    rng = random.Random(config.seed)

    # 2. The pseudo-word and its table (every row the class word's embedding)
    text = ClipConceptText(pipe)
    text.add_token(token)
    init = text.class_embedding(class_word)
    table = TokenTable(init, config.num_buckets, config.shared_table)  # (B, D) rows, float32 on the CPU
    params = [{"params": list(table.parameters()), "lr": config.lr_embed, "weight_decay": 0.0}]

    # 3. Freeze the pipeline; a LoRA adapter on the spatial attention (LoRA methods)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.controlnet):
        m.requires_grad_(False)
    name = adapter_name(token)
    if config.lora:
        pipe.unet.add_adapter(lora_config(config.lora_rank), adapter_name=name)
        pipe.unet.set_adapters([name])
        lora_params = [p for n, p in pipe.unet.named_parameters() if f".{name}." in n]
        for p in lora_params:
            p.data = p.data.float()  # trained in float32 on a float16 model too (peft casts the inputs)
            p.requires_grad_(True)
        params.append({"params": lora_params, "lr": config.lr_lora, "weight_decay": 0.0})
    opt = torch.optim.AdamW(params)

    try:
        # 4. Concept videos: augmented stills at the generator's resolution, their latents and depth
        size = generator.default_size[0]
        depth_fn = estimator or load_depth_net(MODELS / "toyworld_depth")
        x, d = concept_bank(usable, depth_fn, size, N_AUG, config.augment, rng)  # (N, 3, S, S), (N, S, S)
        mean, std = encode_latents(pipe.vae, x)  # (N, C, h, w) each
        cond = depth_images(d)  # (N, 3, S, S)
        use_prior = prior is not None and config.uses_prior and len(prior.captions) > 0
        if use_prior:
            with torch.no_grad():
                prior_states = text.states(prior.captions, {})  # (P, L, D)

        # 5. Train
        gen = torch.Generator().manual_seed(config.seed)  # every random draw on the CPU: same run on any device
        losses, t_start, step_time, first = [], time.perf_counter(), 0.0, 0
        if checkpoint is not None and Path(checkpoint).exists():
            first, losses = _resume(Path(checkpoint), config, table, pipe.unet, name, opt, gen)
            for p, st in opt.state.items():  # the moments are read onto the CPU
                st.update({k: st[k].to(p.device) for k in ("exp_avg", "exp_avg_sq")})
            if progress is not None:
                progress(first, config.steps)
        for step in range(first, config.steps):
            t0 = time.perf_counter()
            pick = torch.randint(0, len(mean), (config.batch,), generator=gen)
            z = mean[pick] + std[pick] * torch.randn(mean[pick].shape, generator=gen).to(device, mean.dtype)
            z0 = z[:, :, None].expand(-1, -1, config.frames, -1, -1)  # (B, C, L, h, w) still video
            c = cond[pick].repeat_interleave(config.frames, dim=0).to(device)  # (B * L, 3, S, S)
            t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (config.batch,), generator=gen)
            noise = torch.randn(z0.shape, generator=gen).to(device, z0.dtype)
            picks = torch.randint(0, len(TEMPLATES), (config.batch,), generator=gen)
            prompts = [TEMPLATES[i].format(token) for i in picks]
            states = text.states(prompts, {token: table(bucket(t, config.num_buckets))})  # (B, L, D)
            loss = denoise_loss(pipe, sched, z0, c, states, t.to(device), noise)
            if use_prior:  # one class clip, its own caption and depth, the frames it has
                j = int(torch.randint(0, len(prior.captions), (), generator=gen))
                pz, pc = _prior_clip(pipe.vae, prior, j, config.frames, size, gen)
                pt = torch.randint(0, NUM_TRAIN_TIMESTEPS, (1,), generator=gen)
                pn = torch.randn(pz.shape, generator=gen).to(device, pz.dtype)
                prior_loss = denoise_loss(pipe, sched, pz, pc, prior_states[j:j + 1], pt.to(device), pn)
                if log is not None:
                    log("prior_loss", prior_loss.item(), step)
                loss = loss + config.prior_weight * prior_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step_time += time.perf_counter() - t0
            losses.append(loss.item())
            after_step(step, config, losses, log, progress, on_sample,
                       lambda: _learned(pipe, name, token, class_word, config, table),
                       checkpoint and (lambda n: _save_checkpoint(Path(checkpoint), n, config, table, pipe.unet,
                                                                  name, opt, gen, losses)))
        learned = _learned(pipe, name, token, class_word, config, table)
    finally:
        if config.lora:
            pipe.unet.unload_lora()  # back to the plain layers, weights untouched

    # 6. The final sample
    if on_sample is not None:
        on_sample(config.steps, learned)
    total = time.perf_counter() - t_start
    return PersonalizeResult(learned, losses, total, step_time / max(config.steps - first, 1))


def _prior_clip(vae, prior: PriorBank, j: int, frames: int, size: int, gen: torch.Generator):
    """Clip ``j`` of the regularisation bank at the generator's resolution: latents (1, C, L, h, w)
    and depth images (L, 3, S, S)."""
    x = prior.x[j, :, :frames].transpose(0, 1)  # (L, 3, s, s)
    d = prior.depth[j, :, :frames].transpose(0, 1)  # (L, 1, s, s)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    d = F.interpolate(d, size=(size, size), mode="bilinear", align_corners=False)[:, 0]  # (L, S, S)
    mean, std = encode_latents(vae, x)  # (L, C, h, w)
    z = mean + std * torch.randn(mean.shape, generator=gen).to(mean.device, mean.dtype)
    return z.transpose(0, 1)[None], depth_images(d).to(vae.device)


def _learned(pipe, name, token, class_word, config, table) -> LearnedConcept:
    """The concept learnt so far, on the CPU (as ``LearnedConcept.save`` and ``digest`` want it)."""
    c = _snapshot(pipe, name, token, class_word, config, table)
    c.lora = {k: v.float().cpu() for k, v in c.lora.items()}
    return c


# --- sampling with learnt concepts ---------------------------------------------------------------------
class DiffusersConcepts(Concepts):
    """Learnt characters on the diffusers generator: TimeInv rows through ``step_embeds`` (CLIP
    states cached per row), LoRA adapters on the pipeline's UNet for the duration of ``generate``."""

    def __init__(self, generator):
        self.generator = generator
        self.text = ClipConceptText(generator.pipe)
        self.learned: dict[str, LearnedConcept] = {}

    def generate(self, prompt: str, depth, **kwargs):
        used = [c for tok, c in self.learned.items() if tok in prompt]
        with lora_applied(self.generator.pipe, used):
            return self.generator.generate(None, depth, step_embeds=self.step_embeds(prompt), **kwargs)
