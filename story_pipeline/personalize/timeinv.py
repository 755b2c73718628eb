"""TimeInv personalization (paper step 6): a character's pseudo-word as a timestep-dependent
embedding table, optionally with LoRA on the video model's spatial attention.

    from story_pipeline.personalize.timeinv import PersonalizeConfig, personalize, Concepts
    result = personalize(images, "<tabby>", "cat", generator, PersonalizeConfig(method="timeinv_lora"))
    concepts = Concepts(generator).add(result.learned)          # one or more characters
    shot = concepts.generate("a <tabby> jumps in the snow", depth, tau=1.0, seed=3)

Text side: the pseudo-word (``<tabby>``) is added to the MiniLM tokenizer; its input embedding is
not a row of the frozen embedding matrix but a row of a table ``V`` (B buckets x 384, every row
initialised from the class word's embedding). Timestep ``t`` reads row ``b(t) = t * B // T``:
a random timestep picks its row in training, the current timestep's row at sampling (through the
generator's ``step_embeds`` hook). B = 1 is plain Textual Inversion; B = T is the paper's form;
the default B = 2 is what ``bench/table2.py`` found best at the default 100 steps (``docs/results.md``).
Model side (``*_lora`` methods): peft LoRA adapters on q/k/v of the U-Net's spatial self- and
cross-attention (not the temporal layers). Only V and the LoRA weights are trained.

Concept videos: each reference image, augmented (random scale/crop, horizontal flip: Custom
Diffusion's augmentation), repeated L frames, with its depth (the depth net on the still, per
frame) as structure guidance, so the model learns appearance and is not taught to stand still.
"""

import contextlib
import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from story_pipeline.errors import InvalidInput

METHODS = {  # name -> (TimeInv buckets or 1 for one vector, LoRA)
    "timeinv_lora": ("table", True),
    "timeinv": ("table", False),
    "textual_inversion": ("vector", False),
    "textual_inversion_lora": ("vector", True),
}
LORA_TARGETS = r".*\.attentions\.\d+\.transformer_blocks\.\d+\.attn[12]\.to_[qkv]"  # spatial attention only
NUM_TRAIN_TIMESTEPS = 1000
TEMPLATES = ("a {}", "a photo of a {}", "a picture of a {}", "a {} standing", "a close-up of a {}",
             "a {} in a scene", "a good photo of a {}", "a {} outdoors")
FORMAT_VERSION = 1


class PersonalizationError(InvalidInput):
    """A character that cannot be learnt (no usable image, a token or class word the encoder can't take)."""


@dataclass
class PersonalizeConfig:
    method: str = "timeinv_lora"
    buckets: int = 2  # TimeInv rows B; the paper's form is B = T = 1000. At 100 steps B = 10 lost ID against
    # Textual Inversion (-0.028 +- 0.006), B = 2 ties it with higher Sem: docs/results.md (bench/table2.py)
    shared_table: bool = False  # rows as V = v + R (see TokenTable): more drift, not more ID (docs/results.md)
    steps: int = 100  # ~70 s on 2 CPU cores; 50 -> 100 steps moved ID by +0.005..0.011 (bench/table2.py)
    lr_embed: float = 2e-2  # the table rows (TI on small text encoders wants a high rate)
    lr_lora: float = 2e-3
    lora_rank: int = 4
    frames: int = 4  # L: frames of each concept video (the still repeated)
    batch: int = 2  # concept videos per step
    size: int = 64  # generation resolution of the toy model
    augment: bool = True
    seed: int = 0
    sample_every: int = 0  # steps between sample GIFs logged to MLflow (0: final only; mid-run samples made the
    # demo's personalization several times slower: see the issue 5 note)
    sample_steps: int = 12  # sampler steps of the sample shots
    checkpoint_every: int = 25  # steps between resumable checkpoints (when a checkpoint path is given)
    prior_clips: int = 0  # regularisation (LoRA methods): corpus clips retrieved for the class word; 0 = off
    prior_weight: float = 1.0  # weight of their loss (one clip per step, captioned without the token)

    @property
    def num_buckets(self) -> int:
        return self.buckets if METHODS[self.method][0] == "table" else 1

    @property
    def lora(self) -> bool:
        return METHODS[self.method][1]

    @property
    def uses_prior(self) -> bool:
        """Regularisation clips apply: a LoRA method (the prior trains only the adapter) and prior_clips > 0."""
        return self.lora and self.prior_clips > 0

    def check(self) -> None:
        if self.method not in METHODS:
            raise PersonalizationError(f"personalization method must be one of {', '.join(METHODS)}, got {self.method!r}.")
        if not 1 <= self.buckets <= NUM_TRAIN_TIMESTEPS:
            raise PersonalizationError(f"buckets must be in [1, {NUM_TRAIN_TIMESTEPS}], got {self.buckets}.")
        if self.steps < 1 or self.frames < 1 or self.batch < 1 or self.lora_rank < 1:
            raise PersonalizationError("steps, frames, batch and lora_rank must be >= 1.")
        if self.prior_clips < 0 or self.prior_weight < 0:
            raise PersonalizationError("prior_clips and prior_weight must be >= 0.")


def bucket(t: int | torch.Tensor, buckets: int):
    """Row of the TimeInv table read at timestep t (0..T-1)."""
    return (t * buckets) // NUM_TRAIN_TIMESTEPS


@dataclass
class LearnedConcept:
    token: str
    class_word: str
    method: str
    table: torch.Tensor  # (B, D) input-embedding rows
    lora: dict[str, torch.Tensor] = field(default_factory=dict)  # peft state dict (empty: no LoRA)
    lora_rank: int = 0
    metrics: dict = field(default_factory=dict)

    @property
    def digest(self) -> str:
        h = hashlib.sha256(self.token.encode() + self.method.encode())
        h.update(self.table.float().numpy().tobytes())
        for k in sorted(self.lora):
            h.update(k.encode())
            h.update(self.lora[k].float().numpy().tobytes())
        return h.hexdigest()[:16]

    def save(self, path: Path) -> Path:
        """safetensors: ``table`` + ``lora.<key>`` tensors; token, class word, method, metrics in the metadata."""
        from safetensors.torch import save_file

        from story_pipeline.fsutil import atomic_path

        tensors = {"table": self.table.contiguous()} | {f"lora.{k}": v.contiguous() for k, v in self.lora.items()}
        meta = {"format": str(FORMAT_VERSION), "token": self.token, "class_word": self.class_word,
                "method": self.method, "lora_rank": str(self.lora_rank), "metrics": json.dumps(self.metrics)}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> "LearnedConcept":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        return cls(meta["token"], meta["class_word"], meta["method"], tensors.pop("table"),
                   {k[5:]: v for k, v in tensors.items()}, int(meta["lora_rank"]), json.loads(meta["metrics"]))


# --- text side ----------------------------------------------------------------------------------------
class ConceptText:
    """MiniLM with pseudo-words: prompt states where each concept token's input embedding comes
    from its table row. The shared encoder's weights are read, never changed."""

    def __init__(self, text_encoder, length: int | None = None):
        import copy

        from story_pipeline.models.text_encoder import PROMPT_LENGTH

        self.encoder = text_encoder
        self.tokenizer = copy.deepcopy(text_encoder.tokenizer)  # adding tokens must not touch the shared one
        self.model = text_encoder.model
        self.length = length or PROMPT_LENGTH
        self.token_ids: dict[str, int] = {}

    @property
    def word_embeddings(self) -> torch.Tensor:
        return self.model.embeddings.word_embeddings.weight

    def add_token(self, token: str) -> None:
        if token in self.token_ids:
            return
        if token in self.tokenizer.get_vocab():
            raise PersonalizationError(f"Token {token} is already a word of the text encoder's vocabulary; "
                                       "choose another name, e.g. <my-cat>.")
        self.tokenizer.add_tokens([token])
        self.token_ids[token] = self.tokenizer.convert_tokens_to_ids(token)

    def class_embedding(self, class_word: str) -> torch.Tensor:
        """(D,) mean input embedding of the class word's word pieces; one sentence if it has none."""
        ids = self.tokenizer(class_word, add_special_tokens=False)["input_ids"]
        unk = self.tokenizer.unk_token_id
        if not ids or unk in ids:
            raise PersonalizationError(f"Class word {class_word!r} is unknown to the text encoder (it reads as "
                                       "[UNK]); use a common English word such as 'cat' or 'robot'.")
        return self.word_embeddings[ids].detach().float().mean(0)

    def states(self, prompts: list[str], rows: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, L, D) last-layer states; ``rows[token]`` is (N, D): that token's input embedding per prompt."""
        texts = [" ".join(p.split()) for p in prompts]
        tok = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.length, return_tensors="pt")
        ids = tok["input_ids"]
        vocab = self.word_embeddings.shape[0]
        emb = self.model.embeddings.word_embeddings(ids.clamp(max=vocab - 1))  # added ids are replaced below
        for token, r in rows.items():
            mask = (ids == self.token_ids[token])[..., None]  # (N, L, 1)
            emb = torch.where(mask, r[:, None, :].to(emb.dtype), emb)
        return self.model(inputs_embeds=emb, attention_mask=tok["attention_mask"]).last_hidden_state


# --- model side -----------------------------------------------------------------------------------------
def lora_config(rank: int):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS, lora_dropout=0.0, init_lora_weights=True)


def adapter_name(token: str) -> str:
    return "c_" + hashlib.sha1(token.encode()).hexdigest()[:10]


@contextlib.contextmanager
def lora_applied(model, concepts: list[LearnedConcept]):
    """Adds the concepts' LoRA adapters to the video model for the duration of the block, then removes them."""
    from peft.utils import set_peft_model_state_dict

    names = []
    try:
        for c in concepts:
            if not c.lora:
                continue
            name = adapter_name(c.token)
            model.unet.add_adapter(lora_config(c.lora_rank), adapter_name=name)
            set_peft_model_state_dict(model.unet, c.lora, adapter_name=name)
            names.append(name)
        if names:
            model.unet.set_adapters(names)
        yield model
    finally:
        if names:
            model.unet.unload_lora()  # back to the plain layers (delete_adapters keeps the wrappers)


# --- data ---------------------------------------------------------------------------------------------
def concept_bank(images: list, depth_net, size: int, n_aug: int, augment: bool, rng: random.Random):
    """(frames (N, 3, S, S) in [-1, 1], depth (N, S, S) in [-1, 1]): augmented stills and their depth.
    ``depth_net``: a ``DepthNet`` or a depth estimator ((F, H, W, 3) uint8 -> (F, H, W) inverse depth)."""
    from PIL import Image

    from story_pipeline.depth.structure import normalise_depth
    from story_pipeline.models.depth_net import predict_depth

    frames = []
    for im in images:
        for k in range(n_aug if augment else 1):
            w, h = im.size
            side = min(w, h)
            if augment and k:  # Custom Diffusion-style: random scale and crop, flip
                s = int(side * rng.uniform(0.7, 1.0))
                x0, y0 = rng.randint(0, w - s), rng.randint(0, h - s)
                crop = im.crop((x0, y0, x0 + s, y0 + s))
                if rng.random() < 0.5:
                    crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            else:
                crop = im.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
            frames.append(np.asarray(crop.resize((size, size), Image.BOX)))
    frames = np.stack(frames)  # (N, S, S, 3) uint8
    with torch.no_grad():
        is_net = isinstance(depth_net, torch.nn.Module)
        depth = predict_depth(depth_net, frames) if is_net else depth_net(frames)  # (N, S, S)
    depth = np.stack([normalise_depth(d[None], "frame")[0] for d in depth])
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x, torch.from_numpy(depth)


@dataclass
class PriorBank:
    """Regularisation clips (Custom Diffusion's / DreamBooth's prior preservation, with retrieved corpus
    videos of the class word instead of generated images): frames, their depth and caption states."""
    x: torch.Tensor  # (N, 3, L, S, S) in [-1, 1]
    depth: torch.Tensor  # (N, 1, L, S, S) in [-1, 1]
    captions: list[str]
    ids: list[str]  # clip ids (part of the memo key: other clips, another concept)


def prior_bank(clips: list[tuple[np.ndarray, np.ndarray, str, str]], size: int) -> PriorBank:
    """``clips``: (frames (L, h, w, 3) uint8, depth (L, S, S) in [-1, 1], caption, clip id) each."""
    xs, ds = [], []
    for frames, depth, _, _ in clips:
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1
        xs.append(F.interpolate(x, size=(size, size), mode="area").permute(1, 0, 2, 3))  # (3, L, S, S)
        ds.append(torch.from_numpy(np.ascontiguousarray(depth, np.float32))[None])
    return PriorBank(torch.stack(xs), torch.stack(ds), [c[2] for c in clips], [c[3] for c in clips])


# --- training -------------------------------------------------------------------------------------------
class TokenTable(torch.nn.Module):
    """The pseudo-word's trainable input embedding: rows V (B, D), every row the class word's embedding at
    the start; ``table(rows)`` reads rows, ``table.full()`` is V. With ``shared`` (and B > 1), V = v + R:
    one vector ``v`` every step trains plus per-bucket residuals ``R`` (zero at the start) trained when
    their bucket is drawn. Same function class as a plain table; what differs is how far a row gets
    in a fixed number of steps (a plain row is drawn in ~batch/B of them)."""

    def __init__(self, init: torch.Tensor, buckets: int, shared: bool = False):
        super().__init__()
        self.shared = torch.nn.Parameter(init[None].clone()) if shared and buckets > 1 else None
        rows = torch.zeros(buckets, init.shape[-1]) if self.shared is not None else init[None].repeat(buckets, 1)
        self.rows = torch.nn.Parameter(rows)  # both are new tensors: nothing shares memory with init

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.rows[idx] if self.shared is None else self.shared[0] + self.rows[idx]

    def full(self) -> torch.Tensor:
        return self.rows if self.shared is None else self.shared + self.rows


@dataclass
class PersonalizeResult:
    learned: LearnedConcept
    losses: list[float]
    seconds: float
    step_seconds: float


def personalize(images: list, token: str, class_word: str, generator, config: PersonalizeConfig,
                log: Callable[[str, float, int], None] | None = None,
                on_sample: Callable[[int, "LearnedConcept"], None] | None = None,
                progress: Callable[[int, int], None] | None = None,
                checkpoint: Path | None = None, prior: PriorBank | None = None) -> PersonalizeResult:
    """Learn ``token`` from PIL ``images`` on the ToyWorld generator's model (frozen).
    ``log(name, value, step)`` receives the loss; ``on_sample(step, concept)`` is called every
    ``sample_every`` steps and at the end with the concept learnt so far. With ``checkpoint`` (a
    safetensors path), the state (table, LoRA, optimizer moments, noise generator, losses) is written
    there atomically every ``checkpoint_every`` steps and a run finding one resumes from it: a killed
    run continues where it was and ends with the same weights as an uninterrupted one. ``prior``
    (LoRA methods with ``prior_clips`` > 0): each step adds the loss of one class clip captioned
    without the token, so the adapter keeps the class as the base model draws it.
    On a ``DiffusersGenerator`` this runs ``generators.diffusers_personalize.personalize_diffusers``."""
    if is_diffusers(generator):
        from story_pipeline.personalize.diffusers import personalize_diffusers

        return personalize_diffusers(images, token, class_word, generator, config, log=log, progress=progress,
                                     on_sample=on_sample, checkpoint=checkpoint, prior=prior)
    from story_pipeline.models.depth_net import load_depth_net
    from story_pipeline.eval.video import MODELS

    config.check()
    usable = [im for im in images if im is not None]
    if not usable:
        raise PersonalizationError(f"Character {token} has no usable reference image; add at least one picture.")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    model = generator.model
    text = ConceptText(generator.text_encoder)
    text.add_token(token)
    init = text.class_embedding(class_word)
    table = TokenTable(init, config.num_buckets, config.shared_table)  # (B, D) rows
    params = [{"params": list(table.parameters()), "lr": config.lr_embed, "weight_decay": 0.0}]
    name = adapter_name(token)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in text.model.parameters():
        p.requires_grad_(False)
    if config.lora:
        model.unet.add_adapter(lora_config(config.lora_rank), adapter_name=name)
        model.unet.set_adapters([name])
        lora_params = [p for n, p in model.named_parameters() if f".{name}." in n]
        for p in lora_params:
            p.requires_grad_(True)
        params.append({"params": lora_params, "lr": config.lr_lora, "weight_decay": 0.0})
    opt = torch.optim.AdamW(params)
    from story_pipeline.train.video_unet import make_scheduler

    sched = make_scheduler()
    bank_x, bank_d = concept_bank(usable, load_depth_net(MODELS / "toyworld_depth"), config.size,
                                  n_aug=16, augment=config.augment, rng=rng)
    gen = torch.Generator().manual_seed(config.seed)
    losses, t_start, step_time = [], time.perf_counter(), 0.0
    first = 0
    use_prior = prior is not None and config.uses_prior and len(prior.captions) > 0
    if use_prior:
        with torch.no_grad():
            prior_states = text.states(prior.captions, {})
    try:
        if checkpoint is not None and Path(checkpoint).exists():
            first, losses = _resume(Path(checkpoint), config, table, model, name, opt, gen)
            if progress is not None:
                progress(first, config.steps)
        for step in range(first, config.steps):
            t0 = time.perf_counter()
            pick = torch.randint(0, len(bank_x), (config.batch,), generator=gen)
            x0 = bank_x[pick][:, :, None].expand(-1, -1, config.frames, -1, -1)  # (B, 3, L, S, S) still video
            depth = bank_d[pick][:, None, None].expand(-1, 1, config.frames, -1, -1)  # (B, 1, L, S, S)
            t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (config.batch,), generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            xt = sched.add_noise(x0, noise, t)
            prompts = [TEMPLATES[i].format(token) for i in torch.randint(0, len(TEMPLATES), (config.batch,), generator=gen)]
            with torch.autocast("cpu", dtype=torch.bfloat16):
                ctx = text.states(prompts, {token: table(bucket(t, config.num_buckets))})
                v = model(xt, t, ctx, depth=depth)
            loss = F.mse_loss(v.float(), sched.get_velocity(x0, noise, t))
            if use_prior:  # one class clip, its own caption and depth, the frames it has
                j = int(torch.randint(0, len(prior.captions), (), generator=gen))
                px = prior.x[j:j + 1, :, :config.frames]
                pt = torch.randint(0, NUM_TRAIN_TIMESTEPS, (1,), generator=gen)
                pn = torch.randn(px.shape, generator=gen)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    pv = model(sched.add_noise(px, pn, pt), pt, prior_states[j:j + 1],
                               depth=prior.depth[j:j + 1, :, :config.frames])
                prior_loss = F.mse_loss(pv.float(), sched.get_velocity(px, pn, pt))
                if log is not None:
                    log("prior_loss", prior_loss.item(), step)
                loss = loss + config.prior_weight * prior_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step_time += time.perf_counter() - t0
            losses.append(loss.item())
            after_step(step, config, losses, log, progress, on_sample,
                       lambda: _snapshot(model, name, token, class_word, config, table),
                       checkpoint and (lambda n: _save_checkpoint(Path(checkpoint), n, config, table, model, name,
                                                                  opt, gen, losses)))
        learned = _snapshot(model, name, token, class_word, config, table)
    finally:
        if config.lora:
            model.unet.unload_lora()
    if on_sample is not None:
        on_sample(config.steps, learned)
    total = time.perf_counter() - t_start
    return PersonalizeResult(learned, losses, total, step_time / max(config.steps - first, 1))


def after_step(step: int, config: PersonalizeConfig, losses: list[float], log, progress, on_sample,
               snapshot: Callable[[], "LearnedConcept"], save: Callable[[int], None] | None) -> None:
    """Bookkeeping after optimizer step ``step`` (both backends): the loss to ``log``, ``progress``,
    a mid-run ``on_sample(snapshot())`` every ``sample_every`` steps, ``save(step + 1)`` every
    ``checkpoint_every`` steps (neither after the last step)."""
    done = step + 1
    if log is not None:
        log("loss", losses[-1], step)
    if progress is not None:
        progress(done, config.steps)
    if done < config.steps:
        if on_sample is not None and config.sample_every and done % config.sample_every == 0:
            on_sample(done, snapshot())
        if save and config.checkpoint_every and done % config.checkpoint_every == 0:
            save(done)


def _trainable(model, name: str, table: TokenTable) -> dict[str, torch.Tensor]:
    lora = {n: p for n, p in model.named_parameters() if f".{name}." in n}
    return {f"table.{n}": p for n, p in table.named_parameters()} | {f"lora.{n}": p for n, p in sorted(lora.items())}


def _save_checkpoint(path: Path, step: int, config: PersonalizeConfig, table, model, name, opt, gen,
                     losses: list[float]) -> None:
    """One safetensors file: trainable tensors, AdamW moments, the noise generator; step + losses in metadata."""
    from safetensors.torch import save_file

    from story_pipeline.fsutil import atomic_path

    params = _trainable(model, name, table)
    tensors = {f"param.{k}": v.detach().contiguous() for k, v in params.items()}
    for k, v in params.items():
        st = opt.state.get(v, {})
        for slot in ("exp_avg", "exp_avg_sq", "step"):
            if slot in st:
                tensors[f"opt.{slot}.{k}"] = torch.as_tensor(st[slot]).detach().clone().contiguous()
    tensors["generator"] = gen.get_state()
    meta = {"step": str(step), "losses": json.dumps(losses), "config": config_digest(config)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _resume(path: Path, config: PersonalizeConfig, table, model, name, opt, gen) -> tuple[int, list[float]]:
    """Load a checkpoint written by ``_save_checkpoint`` for this config; -> (next step, losses so far)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("config") != config_digest(config):
        return 0, []  # another configuration's checkpoint: start afresh (it is overwritten later)
    with torch.no_grad():
        for k, v in _trainable(model, name, table).items():
            v.copy_(tensors[f"param.{k}"])
            if f"opt.exp_avg.{k}" in tensors:
                opt.state[v] = {slot: tensors[f"opt.{slot}.{k}"].clone() for slot in ("step", "exp_avg", "exp_avg_sq")}
    gen.set_state(tensors["generator"])
    return int(meta["step"]), json.loads(meta["losses"])


def _snapshot(model, name, token, class_word, config, table) -> LearnedConcept:
    lora = {}
    if config.lora:
        from peft.utils import get_peft_model_state_dict

        lora = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model.unet, adapter_name=name).items()}
    return LearnedConcept(token, class_word, config.method, table.full().detach().clone(), lora,
                          config.lora_rank if config.lora else 0)


# --- sampling with learnt concepts ---------------------------------------------------------------------
def is_diffusers(generator) -> bool:
    from story_pipeline.render.diffusers import DiffusersGenerator

    return isinstance(generator, DiffusersGenerator)


def concepts_for(generator) -> "Concepts":
    """``Concepts`` for the generator's backend (``DiffusersConcepts`` on the diffusers one)."""
    if is_diffusers(generator):
        from story_pipeline.personalize.diffusers import DiffusersConcepts

        return DiffusersConcepts(generator)
    return Concepts(generator)


class Concepts:
    """Learnt characters applied to the generator: TimeInv rows through the per-step hook, LoRA
    adapters for the duration of a ``generate`` call."""

    def __init__(self, generator):
        self.generator = generator
        self.text = ConceptText(generator.text_encoder)
        self.learned: dict[str, LearnedConcept] = {}

    def add(self, *concepts: LearnedConcept) -> "Concepts":
        for c in concepts:
            self.text.add_token(c.token)
            self.learned[c.token] = c
        return self

    @property
    def digest(self) -> str:
        return hashlib.sha256("".join(c.digest for c in self.learned.values()).encode()).hexdigest()[:16]

    def step_embeds(self, prompt: str) -> Callable[[int, int], torch.Tensor]:
        """The generator hook: prompt states with each token's row for the current timestep (cached per row)."""
        used = {tok: c for tok, c in self.learned.items() if tok in prompt}
        cache: dict[tuple, torch.Tensor] = {}

        def hook(i: int, t: int) -> torch.Tensor:
            key = tuple(int(bucket(int(t), len(c.table))) for c in used.values())
            if key not in cache:
                with torch.no_grad():
                    rows = {tok: c.table[b][None].float() for (tok, c), b in zip(used.items(), key)}
                    cache[key] = self.text.states([prompt], rows).float()
            return cache[key]

        return hook

    def generate(self, prompt: str, depth, **kwargs):
        used = [c for tok, c in self.learned.items() if tok in prompt]
        with lora_applied(self.generator.model, used):
            return self.generator.generate(None, depth, step_embeds=self.step_embeds(prompt), **kwargs)


def class_prompt(prompt: str, concepts: dict[str, LearnedConcept]) -> str:
    """The prompt with each concept token replaced by its class word (what Sem is measured against)."""
    for tok, c in concepts.items():
        prompt = prompt.replace(tok, c.class_word)
    return prompt


def config_digest(config: PersonalizeConfig) -> str:
    return hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:16]

