"""Personalization on the ``diffusers`` generator (paper steps 6-7): CLIP with pseudo-words for the text
side, concept videos as VAE latents, AnimateDiff + depth ControlNet for the model (``train.personalize``
runs the loop; ``concepts.Concepts`` renders with what it learnt).

    from story_pipeline.personalize.train import personalize
    from story_pipeline.personalize.concepts import Concepts
    gen = load_generator("diffusers", "~/models/sd15", device="cuda")
    result = personalize(images, "<tabby>", "cat", gen, PersonalizeConfig(method="timeinv_lora"))
    shot = Concepts(gen).add(result.learned).generate("a <tabby> jumps in the snow", depth, tau=1.0)

- Text: the pseudo-word is added to a copy of the pipeline's CLIP tokenizer. Its input embedding is
  a row of the table ``V`` (B x d, every row the mean embedding of the class word's tokens),
  substituted for the token's lookup by a forward hook on CLIP's token embedding. The shared
  tokenizer and text encoder are never changed.
- Concept videos: each augmented reference still repeated ``config.frames`` frames at the
  generator's resolution, VAE-encoded to latents (B, C, F, h, w); its depth (per frame) goes to
  the ControlNet as the grey image the sampler would give it.
- Loss: noise at a random timestep t, row ``bucket(t)`` in the prompt, MSE against the scheduler's
  target (epsilon or v). Trained: V and (``*_lora``) peft LoRA on q/k/v of the UNet's spatial self-
  and cross-attention (``concept.LORA_TARGETS``: not the motion modules). The adapter is unloaded
  at the end, so the pipeline is bit-identical to before.
"""

import contextlib
import copy

import torch
import torch.nn.functional as F

from story_pipeline.config import get_settings
from story_pipeline.personalize.config import PersonalizationError
from story_pipeline.personalize.data import PriorBank, concept_bank

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


# --- concept videos and the loss -------------------------------------------------------------------------------------------
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


def denoise(pipe, sched, z0, cond, states, t, noise) -> tuple[torch.Tensor, torch.Tensor]:
    """(UNet + ControlNet on depth prediction, the scheduler's target) for a batch of videos:
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
    return pred, target


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


# --- the adapter the training loop uses ---------------------------------------------------------------
class Adapter:
    """What the training loop needs from a ``DiffusersGenerator``."""

    def __init__(self, generator):
        self.generator = generator
        self.pipe = generator.pipe
        self.lora_host = generator.pipe  # LoRA adapters go on lora_host.unet
        self.param_root = generator.pipe.unet  # checkpoints name the LoRA weights from here
        self.device = generator.device

    def concept_text(self) -> ClipConceptText:
        return ClipConceptText(self.pipe)

    def check(self, config) -> None:
        from diffusers import DDPMScheduler

        if config.frames > self.generator.max_frames:
            raise PersonalizationError(f"frames ({config.frames}) is more than the motion adapter's "
                                       f"{self.generator.max_frames}; personalize with fewer frames.")
        self.sched = DDPMScheduler.from_config(self.generator.scheduler_config)  # the model's training noise schedule
        if self.sched.config.prediction_type not in ("epsilon", "v_prediction"):
            raise PersonalizationError(f"The scheduler's prediction_type {self.sched.config.prediction_type!r} is not "
                                       "supported; personalization trains epsilon or v_prediction models.")

    def freeze(self, text) -> None:
        for m in (self.pipe.unet, self.pipe.vae, self.pipe.text_encoder, self.pipe.controlnet):
            m.requires_grad_(False)
        # Recompute the blocks' activations in the backward pass instead of keeping them: at 512 px a step
        # of 2 x 4 frames would keep ~13 GB in float16 (extrapolated by bench/real_size.py). It acts only
        # while gradients are on, so sampling (under no_grad) is unchanged.
        for m in (self.pipe.unet, self.pipe.controlnet):
            m.enable_gradient_checkpointing()

    def autocast(self):
        return contextlib.nullcontext()

    def concept_videos(self, images: list, config, rng, estimator=None) -> None:
        """Augmented stills at the generator's resolution, their latents and depth images."""
        from story_pipeline.models.depth_net import load_depth_net

        self.size = self.generator.default_size[0]
        depth_fn = estimator or load_depth_net(get_settings().models_dir / "toyworld_depth")
        x, d = concept_bank(images, depth_fn, self.size, N_AUG, config.augment, rng)  # (N, 3, S, S), (N, S, S)
        self.mean, self.std = encode_latents(self.pipe.vae, x)  # (N, C, h, w) each
        self.cond = depth_images(d)  # (N, 3, S, S)

    @property
    def bank_size(self) -> int:
        return len(self.mean)

    def concept_batch(self, pick: torch.Tensor, config, gen: torch.Generator):
        mean, std = self.mean[pick], self.std[pick]
        z = mean + std * torch.randn(mean.shape, generator=gen).to(self.device, mean.dtype)  # a posterior sample
        z0 = z[:, :, None].expand(-1, -1, config.frames, -1, -1)  # (B, C, L, h, w) still video
        return z0, self.cond[pick].repeat_interleave(config.frames, dim=0).to(self.device)  # (B * L, 3, S, S)

    def prior_batch(self, prior: PriorBank, j: int, config, gen: torch.Generator):
        return _prior_clip(self.pipe.vae, prior, j, config.frames, self.size, gen)

    def predict(self, z0, cond, states, t, noise):
        return denoise(self.pipe, self.sched, z0, cond, states, t, noise)
