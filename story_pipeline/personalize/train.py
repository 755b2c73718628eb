"""Learning a character (paper steps 6-7): one training loop for every generator backend.

    from story_pipeline.personalize.train import personalize
    result = personalize(images, "<tabby>", "cat", generator, PersonalizeConfig(method="timeinv_lora"))
    result.learned.save("tabby.safetensors")     # the TimeInv table (+ LoRA), see concept.LearnedConcept

The loop is the same on every backend: the pseudo-word's ``TokenTable`` (every row the class word's
embedding) and, for ``*_lora`` methods, a LoRA adapter on the model's spatial attention are trained
on static concept videos; each step draws concept videos, a timestep t per video, noise and a
caption template, puts row ``bucket(t)`` in the prompt and regresses the model's target. What
differs per backend sits in a small adapter registered in ``ADAPTERS`` (``personalize/toyworld.py``,
``personalize/diffusers.py``): the text side, the concept videos' form (pixels or VAE latents), the
model call and its training target.
"""

import dataclasses
import importlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from story_pipeline.fsutil import atomic_path
from story_pipeline.personalize.config import NUM_TRAIN_TIMESTEPS, PersonalizationError, PersonalizeConfig, config_digest
from story_pipeline.personalize.concept import (LearnedConcept, TokenTable, adapter_name, bucket, concept_phrase,
                                                lora_config)
from story_pipeline.personalize.data import TEMPLATES, PriorBank

ADAPTERS = {  # generator backend -> module with ``Adapter(generator)``
    "toyworld": "story_pipeline.personalize.toyworld",
    "diffusers": "story_pipeline.personalize.diffusers",
}


def register_adapter(backend: str, module: str) -> None:
    """Personalize on generators of ``backend`` with ``module.Adapter``."""
    ADAPTERS[backend] = module


def adapter_for(generator):
    """The personalization adapter of the generator's backend."""
    if generator.name not in ADAPTERS:
        raise PersonalizationError(f"The {generator.name!r} generator has no personalization adapter; characters "
                                   f"can be learnt on {', '.join(ADAPTERS)}.")
    return importlib.import_module(ADAPTERS[generator.name]).Adapter(generator)


EVAL_TIMESTEPS = (150, 500, 850)  # the fixed probe: each of these noise levels on each of a few stills,
EVAL_FRAMES = 2  # as 2-frame videos (~6 training steps' compute per probe at the default 4 stills)


@dataclass
class PersonalizeResult:
    learned: LearnedConcept
    losses: list[float]
    seconds: float
    step_seconds: float
    eval_losses: dict[int, float]  # step -> loss on the fixed probe (what shows convergence)


def personalize(images: list, token: str, class_word: str, generator, config: PersonalizeConfig,
                log: Callable[[str, float, int], None] | None = None,
                on_sample: Callable[[int, LearnedConcept], None] | None = None,
                progress: Callable[[int, int], None] | None = None,
                checkpoint: Path | None = None, prior: PriorBank | None = None,
                estimator: Callable | None = None) -> PersonalizeResult:
    """Learn ``token`` from PIL ``images`` on ``generator``'s model (frozen).

    ``log(name, value, step)`` receives the loss, and every ``eval_every`` steps ``eval_loss``: the loss on a
    fixed probe (the plain stills, fixed timesteps and noise), which falls as the concept is learnt while
    the per-step loss swings with the timestep drawn; ``on_sample(step, concept)`` is called every
    ``sample_every`` steps and at the end with the concept learnt so far. With ``checkpoint`` (a
    safetensors path), the state (table, LoRA, optimizer moments, noise generator, losses) is written
    there atomically every ``checkpoint_every`` steps and a run finding one resumes from it: a killed
    run continues where it was and ends with the same weights as an uninterrupted one. ``prior``
    (LoRA methods with ``prior_clips`` > 0): each step adds the loss of one class clip captioned
    without the token, so the adapter keeps the class as the base model draws it. ``estimator``:
    (F, H, W, 3) uint8 -> (F, H, W) inverse depth of the concept videos (default: the ToyWorld depth net)."""
    # 1. Check inputs
    config.check()
    usable = [im for im in images if im is not None]
    if not usable:
        raise PersonalizationError(f"Character {token} has no usable reference image; add at least one picture.")
    backend = adapter_for(generator)
    backend.check(config)
    torch.manual_seed(config.seed)  # the LoRA init
    rng = random.Random(config.seed)

    # 2. The pseudo-word and its table (every row the class word's embedding); captions say ``phrase``
    phrase = concept_phrase(token, class_word, config.class_in_prompt)
    text = backend.concept_text()
    text.add_token(token)
    table = TokenTable(text.class_embedding(class_word), config.num_buckets, config.shared_table)  # (B, D) rows
    params = [{"params": list(table.parameters()), "lr": config.lr_embed, "weight_decay": 0.0}]

    # 3. Freeze the model; a LoRA adapter on its spatial attention (LoRA methods)
    backend.freeze(text)
    name = adapter_name(token)
    unet, root = backend.lora_host.unet, backend.param_root
    if config.lora:
        unet.add_adapter(lora_config(config.lora_rank), adapter_name=name)
        unet.set_adapters([name])
        lora_params = [p for n, p in root.named_parameters() if f".{name}." in n]
        for p in lora_params:
            p.data = p.data.float()  # trained in float32 on a float16 model too (peft casts the inputs)
            p.requires_grad_(True)
        params.append({"params": lora_params, "lr": config.lr_lora, "weight_decay": 0.0})
    opt = torch.optim.AdamW(params)

    def snapshot() -> LearnedConcept:
        """The concept learnt so far, on the CPU (as ``LearnedConcept.save`` and ``digest`` want it)."""
        lora = {}
        if config.lora:
            from peft.utils import get_peft_model_state_dict

            lora = {k: v.detach().float().cpu().clone()
                    for k, v in get_peft_model_state_dict(unet, adapter_name=name).items()}
        return LearnedConcept(token, class_word, config.method, table.full().detach().clone(), lora,
                              config.lora_rank if config.lora else 0, phrase=phrase)

    try:
        # 4. Concept videos (and the regularisation clips' captions)
        backend.concept_videos(usable, config, rng, estimator)
        use_prior = prior is not None and config.uses_prior and len(prior.captions) > 0
        if use_prior:
            with torch.no_grad():
                prior_states = text.states(prior.captions, {})  # (P, L, D)

        # 5. Train
        device = backend.device
        gen = torch.Generator().manual_seed(config.seed)  # every random draw on the CPU: same run on any device
        losses, evals, t_start, step_time, first = [], {}, time.perf_counter(), 0.0, 0
        if checkpoint is not None and Path(checkpoint).exists():
            first, losses, evals = _resume(Path(checkpoint), config, table, root, name, opt, gen)
            if progress is not None:
                progress(first, config.steps)
        probe = Probe(backend, config, text, token, phrase, table)
        if config.eval_every and first == 0:  # where the curve starts (a resumed run has it from its checkpoint)
            evals[0] = probe.loss()
            if log is not None:
                log("eval_loss", evals[0], -1)  # logged at step 0
        for step in range(first, config.steps):
            t0 = time.perf_counter()
            pick = torch.randint(0, backend.bank_size, (config.batch,), generator=gen)
            x0, cond = backend.concept_batch(pick, config, gen)  # (B, C, L, h, w) still videos, their depth
            t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (config.batch,), generator=gen)
            noise = torch.randn(x0.shape, generator=gen).to(device, x0.dtype)
            picks = torch.randint(0, len(TEMPLATES), (config.batch,), generator=gen)
            prompts = [TEMPLATES[i].format(phrase) for i in picks]
            with backend.autocast():
                states = text.states(prompts, {token: table(bucket(t, config.num_buckets))})  # (B, L, D)
                pred, target = backend.predict(x0, cond, states, t.to(device), noise)
            loss = F.mse_loss(pred.float(), target.float())
            if use_prior:  # one class clip, its own caption and depth, the frames it has
                j = int(torch.randint(0, len(prior.captions), (), generator=gen))
                px, pc = backend.prior_batch(prior, j, config, gen)
                pt = torch.randint(0, NUM_TRAIN_TIMESTEPS, (1,), generator=gen)
                pn = torch.randn(px.shape, generator=gen).to(device, px.dtype)
                with backend.autocast():
                    pred, target = backend.predict(px, pc, prior_states[j:j + 1], pt.to(device), pn)
                prior_loss = F.mse_loss(pred.float(), target.float())
                if log is not None:
                    log("prior_loss", prior_loss.item(), step)
                loss = loss + config.prior_weight * prior_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step_time += time.perf_counter() - t0
            losses.append(loss.item())
            if config.eval_every and ((step + 1) % config.eval_every == 0 or step + 1 == config.steps):
                evals[step + 1] = probe.loss()
                if log is not None:
                    log("eval_loss", evals[step + 1], step)
            after_step(step, config, losses, log, progress, on_sample, snapshot,
                       checkpoint and (lambda n: _save_checkpoint(Path(checkpoint), n, config, table, root, name,
                                                                  opt, gen, losses, evals)))
        learned = snapshot()
    finally:
        if config.lora:
            unet.unload_lora()  # back to the plain layers, weights untouched

    # 6. The final sample
    if on_sample is not None:
        on_sample(config.steps, learned)
    total = time.perf_counter() - t_start
    return PersonalizeResult(learned, losses, total, step_time / max(config.steps - first, 1), evals)


class Probe:
    """The loss on a fixed batch: each plain still (the bank's unaugmented copies, up to 4) at every
    ``EVAL_TIMESTEPS``, with noise and captions drawn once from their own generator (training's draws are
    untouched, so a resumed run still ends with the same weights)."""

    def __init__(self, backend, config: PersonalizeConfig, text, token: str, phrase: str, table: TokenTable):
        g = torch.Generator().manual_seed(1234)
        stills = torch.arange(0, backend.bank_size, max(1, backend.bank_size // 4))[:4]
        self.pick = stills.repeat_interleave(len(EVAL_TIMESTEPS))
        self.t = torch.tensor(EVAL_TIMESTEPS).repeat(len(stills))
        self.x0, self.cond = backend.concept_batch(self.pick, dataclasses.replace(config, frames=EVAL_FRAMES), g)
        self.noise = torch.randn(self.x0.shape, generator=g).to(self.x0.device, self.x0.dtype)
        self.prompts = [TEMPLATES[0].format(phrase)] * len(self.pick)
        self.backend, self.text, self.token, self.table, self.buckets = backend, text, token, table, config.num_buckets

    @torch.no_grad()
    def loss(self) -> float:
        with self.backend.autocast():
            states = self.text.states(self.prompts, {self.token: self.table(bucket(self.t, self.buckets))})
            pred, target = self.backend.predict(self.x0, self.cond, states, self.t.to(self.backend.device), self.noise)
        return F.mse_loss(pred.float(), target.float()).item()


def after_step(step: int, config: PersonalizeConfig, losses: list[float], log, progress, on_sample,
               snapshot: Callable[[], LearnedConcept], save: Callable[[int], None] | None) -> None:
    """Bookkeeping after optimizer step ``step``: the loss to ``log``, ``progress``, a mid-run
    ``on_sample(snapshot())`` every ``sample_every`` steps, ``save(step + 1)`` every
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


# --- checkpoints --------------------------------------------------------------------------------------
def _trainable(root, name: str, table: TokenTable) -> dict[str, torch.Tensor]:
    lora = {n: p for n, p in root.named_parameters() if f".{name}." in n}
    return {f"table.{n}": p for n, p in table.named_parameters()} | {f"lora.{n}": p for n, p in sorted(lora.items())}


def _save_checkpoint(path: Path, step: int, config: PersonalizeConfig, table, root, name, opt, gen,
                     losses: list[float], evals: dict[int, float]) -> None:
    """One safetensors file: trainable tensors, AdamW moments, the noise generator; step, losses and probe
    losses in the metadata."""
    from safetensors.torch import save_file

    params = _trainable(root, name, table)
    tensors = {f"param.{k}": v.detach().contiguous().cpu() for k, v in params.items()}
    for k, v in params.items():
        st = opt.state.get(v, {})
        for slot in ("exp_avg", "exp_avg_sq", "step"):
            if slot in st:
                tensors[f"opt.{slot}.{k}"] = torch.as_tensor(st[slot]).detach().clone().contiguous().cpu()
    tensors["generator"] = gen.get_state()
    meta = {"step": str(step), "losses": json.dumps(losses), "evals": json.dumps(evals),
            "config": config_digest(config)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _resume(path: Path, config: PersonalizeConfig, table, root, name, opt, gen) -> tuple[int, list[float], dict]:
    """Load a checkpoint written by ``_save_checkpoint`` for this config; -> (next step, losses so far, probe
    losses so far)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("config") != config_digest(config):
        return 0, [], {}  # another configuration's checkpoint: start afresh (it is overwritten later)
    with torch.no_grad():
        for k, v in _trainable(root, name, table).items():
            v.copy_(tensors[f"param.{k}"])
            if f"opt.exp_avg.{k}" in tensors:
                opt.state[v] = {slot: tensors[f"opt.{slot}.{k}"].clone() for slot in ("step", "exp_avg", "exp_avg_sq")}
                opt.state[v].update({s: opt.state[v][s].to(v.device) for s in ("exp_avg", "exp_avg_sq")})
    gen.set_state(tensors["generator"])
    evals = {int(k): v for k, v in json.loads(meta.get("evals", "{}")).items()}
    return int(meta["step"]), json.loads(meta["losses"]), evals
