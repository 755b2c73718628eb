"""A story character's personalization, memoised and tracked (what the ``character_timeinv``
asset runs), and the render-time conditioning of shots that name learnt characters.

    r = personalize_character_cached(story, character, generator, PersonalizeConfig(), cache_dir, tracker)
    r.path            # safetensors: the TimeInv table (+ LoRA) with metadata
    r.metrics         # final Sem / ID of sample shots, loss, timings
    r.run_url         # the MLflow run (None if MLflow was unusable: see r.local_dir)
    learn_character(...), learned_concepts(...)   # what the character_timeinv asset runs and reads
"""

import dataclasses
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from story_pipeline.errors import StoryPipelineError
from story_pipeline.fsutil import atomic_write_text
from story_pipeline.story.spec import Character, Shot, Story, character_content_hash
from story_pipeline.story.images import load_reference_image
from story_pipeline.personalize.config import PersonalizeConfig, config_digest
from story_pipeline.personalize.concept import FORMAT_VERSION, LearnedConcept, class_prompt
from story_pipeline.personalize.concepts import Concepts
from story_pipeline.personalize.data import PriorBank, prior_bank
from story_pipeline.personalize.train import personalize
from story_pipeline.video_io import write_gif

SAMPLE_PROMPTS = ("a {}", "a {} walks to the right")
LOSS_EVERY = 5  # steps per logged loss point (sqlite writes are slow; 100 steps -> 20 points)
LOSS_EMA = 0.9  # smoothing of `<name>_smoothed`: the per-step loss swings with the random timestep drawn


@dataclass
class CharacterResult:
    path: Path  # the learnt concept (safetensors)
    metrics: dict
    run_url: str | None
    run_id: str | None
    local_dir: Path | None
    cache_hit: bool
    trained: int  # 0 on a cache hit


def character_dir(artifacts_dir: Path, story_id: str) -> Path:
    """Where a story's learnt characters live: ``<name>.json`` (current) and ``.memo/<key>.*``."""
    return Path(artifacts_dir) / "character_timeinv" / story_id


def personalize_key(story: Story, character: Character, config: PersonalizeConfig, generator,
                    prior_ids: tuple[str, ...] = ()) -> str:
    text_id = generator.text_model_id  # "" where the text encoder is part of model_id (diffusers)
    payload = json.dumps([FORMAT_VERSION, character_content_hash(story, character), config_digest(config),
                          generator.model_id, text_id] + ([list(prior_ids)] if prior_ids else []))
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def class_clip_hits(index, class_word: str, n: int) -> list:
    """The ``n`` corpus clips retrieved for the class word ("a cat"): the regularisation clips."""
    from story_pipeline.corpus.search import search

    return search(index, f"a {class_word}", k=n) if n > 0 else []


def prior_clips(hits: list, estimator, frames: int, size: int) -> PriorBank:
    """Decode the hits' frames (``frames`` spread over each clip) and estimate their depth."""
    from story_pipeline.depth.structure import motion_structure

    clips = []
    for h in hits:
        ms = motion_structure(h, frames, (size, size), estimator)
        clips.append((ms.frames, ms.depth, h.caption, h.clip_id))
    return prior_bank(clips, size)


def config_for(character: Character, base: PersonalizeConfig) -> PersonalizeConfig:
    """The story's per-character method on top of the configured settings."""
    return PersonalizeConfig(**{**asdict(base), "method": character.personalization})


def sample_shots(concepts: Concepts, concept: LearnedConcept, depth: np.ndarray, steps: int, seed: int = 0):
    """Sample shots of a learnt concept: [(prompt, frames)] for the SAMPLE_PROMPTS."""
    prompts = [p.format(concept.prompt_phrase) for p in SAMPLE_PROMPTS]
    return [(p, concepts.generate(p, depth, steps=steps, seed=seed).frames) for p in prompts]


def score_samples(samples, concept: LearnedConcept, ref_images: list, judge) -> dict:
    """Sem (frames vs the prompt with the class word) and ID (frames vs the reference images)."""
    from story_pipeline.metrics import id_score, sem_score
    from story_pipeline.models.frame_encoder import encode_frames

    refs = encode_frames(judge.fe, np.stack([np.asarray(im) for im in ref_images]))
    sem, ids = [], []
    for prompt, frames in samples:
        emb = encode_frames(judge.fe, frames)
        sem.append(sem_score(emb, judge.text.encode([class_prompt(prompt, {concept.token: concept})])))
        ids.append(id_score(emb, refs))
    return {"sem": float(np.mean(sem)), "id": float(np.mean(ids))}


def personalize_character_cached(story: Story, character: Character, generator, base: PersonalizeConfig,
                                 cache_dir: Path, tracker=None, tags: dict | None = None,
                                 progress: Callable[[int, int], None] | None = None,
                                 prior: PriorBank | None = None,
                                 load_generator: Callable | None = None) -> CharacterResult:
    """Learn the character (or read the memo for its present images, method, settings, model and
    regularisation clips). ``generator``: a loaded generator, or its ``GeneratorIdentity`` with
    ``load_generator()`` to load it only when the memo misses."""
    from story_pipeline.models.judge import get_judge

    config = config_for(character, base)
    key = personalize_key(story, character, config, generator, tuple(prior.ids) if prior is not None else ())
    cache_dir = Path(cache_dir)
    path, meta_path = cache_dir / f"{key}.safetensors", cache_dir / f"{key}.json"
    if path.exists() and meta_path.exists():
        m = json.loads(meta_path.read_text())
        return CharacterResult(path, m["metrics"], m.get("run_url"), m.get("run_id"), None, True, 0)
    if load_generator is not None:
        generator = load_generator()

    images = [load_reference_image(p) for p in story.reference_images(character)]
    judge = get_judge()
    from story_pipeline.personalize.data import concept_bank

    import random

    _, bank_depth = concept_bank(images[:1], judge.dn, config.size, 1, False, random.Random(0))
    depth = bank_depth[0].numpy()[None].repeat(4, 0)  # (4, S, S): the first reference's depth, still
    params = {**asdict(config), "token": character.token, "class_word": character.class_word,
              "images": len(images), "model_id": generator.model_id, "story": story.id,
              "prior_clip_ids": ",".join(prior.ids) if prior is not None else ""}
    tracker_run = tracker.run(f"{story.id}/{character.name}/{config.method}", tags=tags, params=params) \
        if tracker is not None else None
    t0 = time.perf_counter()
    with tracker_run if tracker_run is not None else _nullrun(cache_dir / f"{key}.local") as run:
        final: dict[str, float] = {}  # the scores of the samples of the learnt concept (the last call)

        def on_sample(step: int, concept: LearnedConcept):
            if step < config.steps:  # mid-training: the live LoRA adapter is on the model already
                concept = dataclasses.replace(concept, lora={})
            c = Concepts(generator).add(concept)
            samples = sample_shots(c, concept, depth, config.sample_steps)
            scores = score_samples(samples, concept, images, judge)
            if step == config.steps:
                final.update(scores)
            run.log_metrics({f"sample_{k}": v for k, v in scores.items()}, step)
            gif = cache_dir / f"{key}.step{step:04d}.gif"
            write_gif(gif, np.concatenate([f for _, f in samples], axis=2), fps=4, scale=2)
            run.log_artifact(gif, "samples")
            gif.unlink(missing_ok=True)

        windows: dict[str, list[float]] = {}
        ema: dict[str, float] = {}

        def log(name: str, value: float, step: int):  # the window's mean, and an exponential moving average
            if name == "eval_loss":  # the fixed probe: already a steady figure
                run.log_metric(name, value, step + 1)
                return
            window = windows.setdefault(name, [])
            window.append(value)
            ema[name] = value if name not in ema else LOSS_EMA * ema[name] + (1 - LOSS_EMA) * value
            if (step + 1) % LOSS_EVERY == 0 or step + 1 == config.steps:
                run.log_metrics({name: float(np.mean(window)), f"{name}_smoothed": ema[name]}, step + 1)
                window.clear()

        ckpt = cache_dir / f"{key}.ckpt.safetensors"  # a killed run resumes from here
        result = personalize(images, character.token, character.class_word, generator, config,
                             log=log, on_sample=on_sample, progress=progress, checkpoint=ckpt, prior=prior)
        evals = result.eval_losses
        first_eval, last_eval = (evals[min(evals)], evals[max(evals)]) if evals else (None, None)
        metrics = {**final, "final_loss": float(np.mean(result.losses[-20:])), "steps": config.steps,
                   "eval_loss_start": first_eval, "eval_loss_end": last_eval,
                   "train_seconds": result.seconds, "step_seconds": result.step_seconds,
                   "total_seconds": time.perf_counter() - t0}
        run.log_metrics({f"final_{k}": v for k, v in final.items()})
        result.learned.metrics = metrics
        result.learned.save(path)
        run.log_artifact(path, "concept")
        run_url, run_id, local = run.url, run.run_id, run.local_dir
    atomic_write_text(meta_path, json.dumps({"metrics": metrics, "run_url": run_url, "run_id": run_id,
                                             "token": character.token, "method": config.method}, indent=1))
    ckpt.unlink(missing_ok=True)
    return CharacterResult(path, metrics, run_url, run_id, local, False, 1)


class _nullrun:
    """Records locally when no tracker is given (library use without MLflow)."""

    def __init__(self, local_dir: Path):
        self.local_dir, self.url, self.run_id = Path(local_dir), None, None

    def __enter__(self):
        self.local_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc):
        return False

    def log_metric(self, *a, **k):
        pass

    def log_metrics(self, *a, **k):
        pass

    def log_artifact(self, *a, **k):
        pass


# --- the character_timeinv stage: learn, point to the current concept, read it back -----------------
class NotLearnedYet(StoryPipelineError):
    """A shot names a character whose personalization has not run for its present images and settings."""


def pointer_path(artifacts_dir: Path, story: Story, character: Character) -> Path:
    """``<name>.json``: which learnt concept is the character's current one (absent: class word)."""
    return character_dir(artifacts_dir, story.id) / f"{character.name}.json"


def learn_character(artifacts_dir: Path, story: Story, character: Character, generator, base: PersonalizeConfig,
                    open_index: Callable | None = None, load_estimator: Callable | None = None, tracker=None,
                    tags: dict | None = None, progress: Callable[[int, int], None] | None = None,
                    load_generator: Callable | None = None) -> tuple[CharacterResult | None, PriorBank | None]:
    """Personalize ``character`` (or read its memo) and make it the story's current one; -> (result,
    regularisation clips used). A character with ``personalization: none`` is rendered with its class
    word: its pointer is removed and the result is None. ``open_index()`` / ``load_estimator()`` are
    called only when the config asks for regularisation clips; ``load_generator()`` (with ``generator``
    its identity) only when the memo misses."""
    pointer = pointer_path(artifacts_dir, story, character)
    if character.personalization == "none":
        pointer.unlink(missing_ok=True)
        return None, None
    prior = None
    if config_for(character, base).uses_prior:  # regularisation: class clips
        hits = class_clip_hits(open_index(), character.class_word, base.prior_clips)
        prior = prior_clips(hits, load_estimator(), base.frames, base.size)
    r = personalize_character_cached(story, character, generator, base, cache_dir=pointer.parent / ".memo",
                                     prior=prior, tracker=tracker, progress=progress, tags=tags,
                                     load_generator=load_generator)
    learned = LearnedConcept.load(r.path)
    atomic_write_text(pointer, json.dumps({"path": str(r.path), "token": character.token, "metrics": r.metrics,
                                           "run_url": r.run_url, "digest": learned.digest,
                                           "phrase": learned.prompt_phrase}, indent=1))
    return r, prior


def learned_concepts(artifacts_dir: Path, story: Story, shot: Shot) -> dict[str, dict]:
    """token -> the current concept's pointer ({"path", "digest", ...}) of the personalized characters the
    shot names; ``NotLearnedYet`` (one sentence) for one that has not been learnt."""
    out = {}
    for c in story.characters_in(shot):
        if c.personalization == "none":
            continue
        pointer = pointer_path(artifacts_dir, story, c)
        try:
            out[c.token] = json.loads(pointer.read_text())
        except (OSError, ValueError):
            raise NotLearnedYet(f"Character {c.token} of shot {shot.id!r} is not personalized yet; materialize "
                                f"{story.id}/characters/{c.name}_timeinv first (`story run` does "
                                "it).") from None
    return out


def character_current(artifacts_dir: Path, story: Story, character: Character, generator,
                      base: PersonalizeConfig, prior_ids: Callable[[], tuple] = tuple) -> bool:
    """True when the character's record and current concept are those of its present images and
    settings (a run would only read memos). ``prior_ids()``: the regularisation clips the index gives now."""
    record = Path(artifacts_dir) / "story_characters" / story.id / f"{character.name}.json"
    try:
        if json.loads(record.read_text())["content_hash"] != character_content_hash(story, character):
            return False
    except (OSError, ValueError, KeyError):
        return False
    pointer = pointer_path(artifacts_dir, story, character)
    if character.personalization == "none":
        return not pointer.exists()
    try:
        current = Path(json.loads(pointer.read_text())["path"])
    except (OSError, ValueError, KeyError):
        return False
    config = config_for(character, base)
    ids = tuple(prior_ids()) if config.uses_prior else ()
    return current.stem == personalize_key(story, character, config, generator, ids) and current.exists()
