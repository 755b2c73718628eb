"""What is current for a story, decided in one place: the stage memos.

    from story_pipeline.status import story_status
    status = story_status(story, setup)           # setup: StageSetup (resources.stage_setup builds it)
    status.stale("character"), status.stale("shot"), status.video.current

A part of a story (a character, a shot, the story video) is *current* when its stored state is what its
present inputs give, so that running it would only read memos. ``story run`` launches Dagster runs for
the parts that are not; the story sensor requests runs for them; inside a run, the asset bodies call the
stage functions, whose memos (the same keys as here) decide what recomputes. Nothing here loads a model:
the generator and the depth estimator are known by their identities (content digests of their weights).
"""

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from story_pipeline.corpus.retrieve import ShotRetrieval, retrieval_dir, retrieval_memo_key
from story_pipeline.depth.stage import depth_dir, depth_memo_key
from story_pipeline.personalize.character import (
    character_current, config_for, learned_concepts, personalize_key, NotLearnedYet,
)
from story_pipeline.personalize.config import PersonalizeConfig, config_digest
from story_pipeline.personalize.concepts import personalization_identity
from story_pipeline.render.assemble import video_key, video_record
from story_pipeline.render.checks import CheckThresholds
from story_pipeline.render.guidance import structure_guidance
from story_pipeline.render.shot import render_key
from story_pipeline.render.stage import render_pointer, request_key
from story_pipeline.story.spec import Character, Shot, Story, character_content_hash, shot_content_hash


@dataclass(frozen=True)
class StageSetup:
    """Everything besides the story file that decides the stages' outputs."""
    artifacts_dir: Path
    index_version: str  # the clip index's data version (retrieval memo keys)
    depth_model_id: str  # the depth estimator's identity
    normalise: str  # depth normalisation
    generator: object  # render.generator.GeneratorIdentity (or a loaded generator)
    personalization: PersonalizeConfig
    thresholds: CheckThresholds
    attempts: int  # renders per shot when checks fail
    crossfade_frames: int  # of the story video
    prior_ids: Callable[[str, int], tuple] = lambda class_word, n: ()  # the regularisation clips the index gives now
    k: int = 5  # retrieval candidates per shot

    def fingerprint(self) -> str:
        g = self.generator
        return _digest([self.index_version, self.depth_model_id, self.normalise, g.model_id, g.text_model_id,
                        g.default_steps, g.default_guidance, g.default_sampler, config_digest(self.personalization),
                        asdict(self.thresholds), self.attempts, self.crossfade_frames, self.k])


@dataclass
class Part:
    kind: str  # "character" | "shot" | "video"
    key: str  # its partition key (character name, shot id), or the story id for the video
    current: bool
    reason: str  # why it is not current ("" when it is)
    signature: str  # the inputs it would be computed from: one run is asked per signature
    waits_for: list[str] = field(default_factory=list)  # parts that must be current first ("character:tabby")


@dataclass
class StoryStatus:
    story: Story
    characters: list[Part]
    shots: list[Part]
    video: Part

    def stale(self, kind: str) -> list[Part]:
        parts = {"character": self.characters, "shot": self.shots, "video": [self.video]}[kind]
        return [p for p in parts if not p.current]

    @property
    def current(self) -> bool:
        return all(p.current for p in self.characters + self.shots + [self.video])


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _read(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def character_part(story: Story, character: Character, setup: StageSetup) -> Part:
    config = config_for(character, setup.personalization)
    ids = lambda: setup.prior_ids(character.class_word, config.prior_clips)  # noqa: E731 (asked only if used)
    current = character_current(setup.artifacts_dir, story, character, setup.generator, setup.personalization, ids)
    signature = (personalize_key(story, character, config, setup.generator, tuple(ids()) if config.uses_prior else ())
                 if character.personalization != "none" else _digest([character_content_hash(story, character)]))
    return Part("character", character.name, current, "" if current else "its images or settings changed, or it "
                "was never learnt", signature)


def shot_part(story: Story, shot: Shot, setup: StageSetup, stale_characters: set[str]) -> Part:
    art = Path(setup.artifacts_dir)
    waits = [f"character:{c.name}" for c in story.characters_in(shot) if c.name in stale_characters]
    signature = _digest([shot_content_hash(story, shot), setup.fingerprint(), waits])

    def stale(reason: str) -> Part:
        return Part("shot", shot.id, False, reason, signature, waits)

    if waits:
        return stale("a character it shows is being learnt")
    record = _read(art / "story_shots" / story.id / f"{shot.id}.json")
    if record is None or record.get("content_hash") != shot_content_hash(story, shot):
        return stale("its text or settings changed")
    # retrieval: made for this shot text and index version
    pointer = _read(retrieval_dir(art, story.id) / f"{shot.id}.json")
    if pointer is None or pointer.get("memo_key") != retrieval_memo_key(story, shot, setup.index_version, setup.k):
        return stale("its retrieval is not for its present query or the present index")
    retrieval = ShotRetrieval(**pointer)
    # depth: the chosen clip's, with the present estimator and normalisation
    s = story.resolved(shot)
    key = depth_memo_key(retrieval, s.frames, (s.resolution[1], s.resolution[0]), setup.depth_model_id, setup.normalise)
    depth_path = depth_dir(art, story.id) / ".memo" / f"{key}.safetensors"
    current_depth = _read(depth_dir(art, story.id) / f"{shot.id}.json") or {}
    if not depth_path.exists() or Path(current_depth.get("depth", "")).stem != key:
        return stale("its depth is not the chosen clip's with the present estimator")
    # render: the present prompt, learnt characters, settings, generator and checks
    try:
        learned = learned_concepts(art, story, shot)
    except NotLearnedYet:
        return stale("a character it shows is not learnt yet")
    first = render_key(story, shot, depth_path, setup.generator, personalization_identity(story, shot, learned),
                       structure_guidance(story, shot, retrieval.chosen).overrides)[0]
    rendered = _read(render_pointer(art, story.id, shot.id))
    if rendered is None or rendered.get("request_key") != request_key(first, setup.thresholds, setup.attempts):
        return stale("its render is not for its present prompt, depth, characters or settings")
    return Part("shot", shot.id, True, "", signature)


def video_part(story: Story, setup: StageSetup, shots: list[Part]) -> Part:
    waits = [f"shot:{p.key}" for p in shots if not p.current]
    key = video_key(story, setup.artifacts_dir, setup.crossfade_frames)
    signature = _digest([key, waits])
    if waits:
        return Part("video", story.id, False, "shots are stale", signature, waits)
    record = _read(video_record(setup.artifacts_dir, story.id))
    if record is None or record.get("key") != key or not Path(record.get("video", "")).exists():
        return Part("video", story.id, False, "its shots changed since it was assembled", signature)
    return Part("video", story.id, True, "", signature)


def story_status(story: Story, setup: StageSetup) -> StoryStatus:
    """Which characters, shots and video of ``story`` are current (see the module docstring)."""
    characters = [character_part(story, c, setup) for c in story.characters]
    stale_chars = {p.key for p in characters if not p.current}
    shots = [shot_part(story, s, setup, stale_chars) for s in story.shots]
    return StoryStatus(story, characters, shots, video_part(story, setup, shots))
