"""Rendering with learnt characters: TimeInv rows through the generator's per-step hook, LoRA adapters
for the duration of a ``generate`` call, on any backend with a personalization adapter.

    from story_pipeline.personalize.concepts import Concepts
    concepts = Concepts(generator).add(LearnedConcept.load("tabby.safetensors"))   # one or more characters
    shot = concepts.generate("a <tabby> jumps in the snow", depth, tau=1.0, seed=3)
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from story_pipeline.personalize.concept import LearnedConcept, bucket, lora_applied, with_phrase
from story_pipeline.personalize.train import adapter_for
from story_pipeline.story.spec import Shot, Story


class Concepts:
    """Learnt characters applied to the generator: TimeInv rows through the per-step hook, LoRA
    adapters for the duration of a ``generate`` call."""

    def __init__(self, generator):
        self.generator = generator
        self.backend = adapter_for(generator)
        self.text = self.backend.concept_text()
        self.learned: dict[str, LearnedConcept] = {}

    def add(self, *concepts: LearnedConcept) -> "Concepts":
        for c in concepts:
            self.text.add_token(c.token)
            self.learned[c.token] = c
        return self

    @property
    def digest(self) -> str:
        return concepts_digest([c.digest for c in self.learned.values()])

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
        with lora_applied(self.backend.lora_host, used):
            return self.generator.generate(None, depth, step_embeds=self.step_embeds(prompt), **kwargs)



@dataclass
class Personalization:
    """How the render prompt is conditioned when characters are personalized (TimeInv): a
    ``step_embeds(i, t)`` hook for the generator and a digest of what was learnt (cache key)."""

    step_embeds: Callable[[int, int], torch.Tensor] | None
    digest: str
    prompt: str  # the prompt as the personalized text encoder reads it
    concepts: object = None  # timeinv.Concepts: applies the characters' LoRA while generating


def concepts_digest(digests: list[str]) -> str:
    """The digest of a set of learnt concepts (``Concepts.digest``) from their own digests, in order."""
    return hashlib.sha256("".join(digests).encode()).hexdigest()[:16]


def render_prompt(story: Story, shot: Shot, phrases: dict[str, str]) -> tuple[str, list]:
    """(the prompt the personalized text encoder reads, the characters it conditions on): tokens of the
    characters the shot names that are learnt (``phrases`` maps their tokens to how their concept names
    them, "<tabby> cat") are written as that phrase, every other character's token becomes its class
    word. Shared by rendering and by ``status`` (no model loads)."""
    used = [c for c in story.characters_in(shot) if c.personalization != "none" and c.token in phrases]
    prompt = story.with_class_words(shot.prompt, [c for c in story.characters if c not in used])
    for c in used:
        prompt = with_phrase(prompt, c.token, phrases[c.token])
    return prompt, used


def personalization_identity(story: Story, shot: Shot, pointers: dict[str, dict]):
    """What a shot's render memo key needs of its personalization (``prompt``, ``digest``), from the
    learnt concepts' pointers (``character.learned_concepts``) without loading a model; None: class words."""
    from types import SimpleNamespace

    prompt, used = render_prompt(story, shot, {tok: _pointer_phrase(p) for tok, p in pointers.items()})
    if not used:
        return None
    return SimpleNamespace(prompt=prompt, digest=concepts_digest([_pointer_digest(pointers[c.token]) for c in used]))


def _pointer_digest(pointer: dict) -> str:
    if "digest" in pointer:
        return pointer["digest"]
    return LearnedConcept.load(Path(pointer["path"])).digest  # a pointer written before digests were recorded


def _pointer_phrase(pointer: dict) -> str:
    if "phrase" in pointer:
        return pointer["phrase"]
    return LearnedConcept.load(Path(pointer["path"])).prompt_phrase  # a pointer written before phrases were


def shot_personalization(story: Story, shot: Shot, generator, learned: dict[str, Path]) -> Personalization | None:
    """The render conditioning of a shot: None when it names no learnt character (class words
    are used), else the TimeInv hook + LoRA of the characters it names."""
    named = {c.token for c in story.characters_in(shot) if c.personalization != "none"}
    loaded = {tok: LearnedConcept.load(path) for tok, path in learned.items() if tok in named}
    prompt, used = render_prompt(story, shot, {tok: c.prompt_phrase for tok, c in loaded.items()})
    if not used:
        return None
    concepts = Concepts(generator).add(*(loaded[c.token] for c in used))
    return Personalization(concepts.step_embeds(prompt), concepts.digest, prompt, concepts=concepts)
