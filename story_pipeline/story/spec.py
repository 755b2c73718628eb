"""Story files (YAML): characters with reference images + shots, validated with line numbers.

    story validate examples/tabby_adventure/story.yaml
    story schema examples/story.schema.json

    from story_pipeline.story_file import load_story
    from story_pipeline.story.spec import shot_content_hash
    story = load_story("examples/tabby_adventure/story.yaml")
    for shot in story.shots:
        story.shot_query(shot), story.resolved(shot).tau, shot_content_hash(story, shot)

Step 1 of the paper ("story -> shots"): each shot carries a *prompt* for generation
("a <tabby> leaps into the air") and a *query* for retrieval; the query defaults to the prompt
with every character token replaced by that character's class word ("a cat leaps into the air").
Per-shot render settings (frames, fps, resolution, tau, strength, seed, guidance, pace) are written on
the shot itself and override the story's ``defaults:``. See docs/story_format.md.

Everything in a story file is untrusted: a problem is a ``StoryError`` whose message is one
sentence ``file:line field: problem; fix.`` Reference images are checked from their header
(size, pixel count, format, animation) before anything is decoded. Loading writes nothing.
"""

import json
import os
import re
from hashlib import sha256
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationInfo, WithJsonSchema,
                      field_validator)

from story_pipeline.errors import StoryPipelineError
from story_pipeline.fsutil import file_sha256

HASH_VERSION = 1  # bump when the meaning of a shot or character hash changes (forces reruns)

# Ids name Dagster assets (<story>/shots/<shot>_<stage>) and files: lowercase, digits, '.', '_', '-'.
SHOT_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
STORY_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
TOKEN_PATTERN = r"^<[a-z0-9][a-z0-9._-]{0,31}>$"  # the name inside <> is the character id
CLIP_ID_PATTERN = r"^\S{1,200}$"
TOKEN_IN_TEXT = re.compile(r"<[^<>\s]{1,64}>")  # anything that looks like a token, valid or not

PERSONALIZATION_METHODS = ("timeinv_lora", "timeinv", "textual_inversion", "textual_inversion_lora", "none")


class StoryError(StoryPipelineError):
    """A story file (or one of its reference images) is unusable: ``file:line field: problem; fix.``"""

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 field: str | None = None, problem: str | None = None, more: int = 0):
        super().__init__(message)
        self.file, self.line, self.field, self.problem, self.more = file, line, field, problem, more



# --- 1. The models (the JSON Schema is generated from these) -----------------------------------
def _parse_resolution(value):
    """64 -> (64, 64); [96, 64] or "96x64" -> (96, 64) (width, height)."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number of pixels or [width, height], got {value!r}")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, str) and (m := re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)):
        return (int(m[1]), int(m[2]))
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return tuple(value)
    raise ValueError(f"must be one number (square), [width, height] or 'WxH', got {value!r}")


Resolution = Annotated[
    tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]],
    BeforeValidator(_parse_resolution),
    WithJsonSchema({
        "anyOf": [
            {"type": "integer", "minimum": 1},
            {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2},
            {"type": "string", "pattern": r"^\d+x\d+$"},
        ],
        "description": "pixels: one number (square), [width, height] or 'WxH'",
    }),
]

DESCRIPTIONS = {
    "frames": "frames rendered for the shot",
    "fps": "frames per second; frames/fps is the shot's duration (retrieval wants clips at least this long)",
    "resolution": "output size: one number (square), [width, height] or 'WxH'",
    "tau": "structure guidance: fraction of sampling steps, from the noisy end, that receive depth "
           "(1 = all steps; smaller lets a character keep its own shape)",
    "strength": "multiplier on the depth features while they are applied",
    "seed": "noise seed; a fixed seed makes a render reproducible",
    "guidance": "classifier-free guidance scale; empty: the generator's default (ToyWorld 2, Stable Diffusion 7.5)",
    "steps": "sampling steps; empty: the generator's default (ToyWorld 20 DPM-Solver++ steps)",
    "pace": "seconds of the retrieved clip per second of shot (1 = real time, 2 = twice as fast); a clip up to "
            "1.5x that window is used whole, a longer one gives the window where it moves most",
}


def check_limits(name: str, value, info: ValidationInfo):
    """frames / fps / resolution against the story limits (the validation context's ``limits``, else
    ``Settings().story_limits``): one wording for every value out of range."""
    if value is None:
        return value
    from story_pipeline.config import get_settings

    limits = (info.context or {}).get("limits") or get_settings().story_limits
    if name == "frames" and not limits.min_frames <= value <= limits.max_frames:
        raise ValueError(f"{value} frames is outside the allowed {limits.min_frames}-{limits.max_frames}; "
                         "split a long event into several shots")
    if name == "fps" and not 1 <= value <= limits.max_fps:
        raise ValueError(f"{value} fps is outside the allowed 1-{limits.max_fps}")
    if name == "resolution":
        w, h, m = *value, limits.side_multiple
        if not (limits.min_side <= w <= limits.max_side and limits.min_side <= h <= limits.max_side):
            raise ValueError(f"{w}x{h} is outside the allowed {limits.min_side}-{limits.max_side} pixels per side; "
                             "pick a size inside it")
        if w % m or h % m:
            raise ValueError(f"{w}x{h} is not a multiple of {m} per side; use e.g. {w // m * m or m}x{h // m * m or m}")
    return value


class RenderSettings(BaseModel):
    """The story's ``defaults:`` block, and the resolved settings of one shot."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frames: int = Field(16, description=DESCRIPTIONS["frames"], json_schema_extra={"minimum": 1})  # 16 = one AnimateDiff context window
    fps: int = Field(8, description=DESCRIPTIONS["fps"], json_schema_extra={"minimum": 1})  # 16/8 = 2 s, shorter than every ToyWorld clip
    resolution: Resolution = Field((64, 64), description=DESCRIPTIONS["resolution"])  # the toy models' size
    tau: float = Field(1.0, ge=0.0, le=1.0, description=DESCRIPTIONS["tau"])  # paper default: full guidance
    strength: float = Field(1.0, ge=0.0, le=10.0, description=DESCRIPTIONS["strength"])
    seed: int = Field(0, ge=0, le=2**32 - 1, description=DESCRIPTIONS["seed"])
    guidance: float | None = Field(None, ge=0.0, le=50.0, description=DESCRIPTIONS["guidance"])
    steps: int | None = Field(None, ge=1, le=200, description=DESCRIPTIONS["steps"])
    pace: float = Field(1.0, ge=0.25, le=8.0, description=DESCRIPTIONS["pace"])  # 1 = the motion at its real speed

    _limits = field_validator("frames", "fps", "resolution")(lambda cls, v, info: check_limits(info.field_name, v, info))

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps


SETTING_KEYS = tuple(RenderSettings.model_fields)


class Character(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    token: str = Field(pattern=TOKEN_PATTERN, description="pseudo-word used in prompts, e.g. '<tabby>'")
    class_word: str = Field(pattern=r"^[^<>\n]{1,40}$",
                            description="what the character is, e.g. 'cat'; replaces the token in queries")
    images: list[str] = Field(min_length=1, description="reference image paths, relative to the story file")
    personalization: Literal[PERSONALIZATION_METHODS] = Field(
        "timeinv_lora", description="how the character is learned: TimeInv + LoRA (the paper), TimeInv only, "
                                    "plain textual inversion, or none (the class word is used as is)")

    @property
    def name(self) -> str:
        """The token without its brackets ('<tabby>' -> 'tabby'); names the character's assets."""
        return self.token[1:-1]


class Shot(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=SHOT_ID_PATTERN, description="stable shot id ([a-z0-9._-]); keep it when editing")
    prompt: str = Field(min_length=1, description="what is rendered, using character tokens")
    query: str | None = Field(None, min_length=1, description="retrieval text; default: the prompt with "
                                                                "tokens replaced by class words")
    clip: str | None = Field(None, pattern=CLIP_ID_PATTERN, description="pin a corpus clip id (skips retrieval)")
    frames: int | None = Field(None, description=DESCRIPTIONS["frames"], json_schema_extra={"minimum": 1})
    fps: int | None = Field(None, description=DESCRIPTIONS["fps"], json_schema_extra={"minimum": 1})
    resolution: Resolution | None = Field(None, description=DESCRIPTIONS["resolution"])
    tau: float | None = Field(None, ge=0.0, le=1.0, description=DESCRIPTIONS["tau"])
    strength: float | None = Field(None, ge=0.0, le=10.0, description=DESCRIPTIONS["strength"])
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description=DESCRIPTIONS["seed"])
    guidance: float | None = Field(None, ge=0.0, le=50.0, description=DESCRIPTIONS["guidance"])
    steps: int | None = Field(None, ge=1, le=200, description=DESCRIPTIONS["steps"])
    pace: float | None = Field(None, ge=0.25, le=8.0, description=DESCRIPTIONS["pace"])

    _limits = field_validator("frames", "fps", "resolution")(lambda cls, v, info: check_limits(info.field_name, v, info))

    def overrides(self) -> dict:
        return {k: getattr(self, k) for k in SETTING_KEYS if getattr(self, k) is not None}


# Where a shot happens is painted from the prompt at render time; the retrieved clip gives only the
# motion (as depth). A place phrase in the query pulls clips of that place over clips of that
# motion: on the example stories 7 of 12 shots got the named motion with it, 12 of 12 without.
_PLACE = (r"(?:(?:in|on|at|through|across|inside|near|by|under|beside|along)\s+"
          r"(?:the|a|an|some|this|that|his|her|its|their)|among|amid)\s+")
_TIME = r"(?:at|by)\s+(?:night|dawn|dusk|noon|sunset|sunrise|daybreak)"
_TRAILING_PLACE = re.compile(rf"[\s,]+(?:{_PLACE}[\w'-]+(?:\s+[\w'-]+){{0,4}}|{_TIME})\s*[.!]?\s*$", re.I)
_LEADING_PLACE = re.compile(rf"^\s*{_PLACE}[\w'\s-]{{1,40}},\s*", re.I)


def motion_query(prompt: str) -> str:
    """A shot prompt as a motion query: trailing ("... on the beach", "... in a park at night") and
    leading ("In the desert, ...") place phrases of up to five words dropped, the rest kept."""
    text = _LEADING_PLACE.sub("", prompt, count=1)
    while (stripped := _TRAILING_PLACE.sub("", text, count=1)) != text and len(stripped.split()) >= 2:
        text = stripped
    return text.strip()


class Story(BaseModel):
    """A story file. Load it with ``load_story``; the helpers resolve defaults, queries and paths."""

    model_config = ConfigDict(extra="forbid", frozen=True,
                              json_schema_extra={"title": "Animate-A-Story story file"})

    id: str | None = Field(None, pattern=STORY_ID_PATTERN,
                           description="story id ([a-z0-9_-]); default: the file name, or the folder "
                                       "name when the file is called story.yaml")
    title: str | None = Field(None, description="human-readable title")
    defaults: RenderSettings = Field(default_factory=RenderSettings,
                                     description="render settings of every shot unless the shot sets its own")
    characters: list[Character] = Field(default_factory=list, description="who appears in the story")
    shots: list[Shot] = Field(min_length=1, description="one event each, no cut, in story order")

    _source: Path | None = PrivateAttr(None)
    _image_hashes: dict = PrivateAttr(default_factory=dict)  # read once per loaded story

    @property
    def source(self) -> Path | None:
        """The story file this was loaded from (absolute)."""
        return self._source

    @property
    def folder(self) -> Path:
        """Reference image paths are relative to this folder (the story file's)."""
        return self._source.parent if self._source is not None else Path.cwd()

    def shot(self, shot_id: str) -> Shot:
        for s in self.shots:
            if s.id == shot_id:
                return s
        raise KeyError(f"story {self.id!r} has no shot {shot_id!r}")

    def character(self, token: str) -> Character:
        for c in self.characters:
            if c.token == token:
                return c
        raise KeyError(f"story {self.id!r} has no character {token!r}")

    def characters_in(self, shot: Shot) -> list[Character]:
        """Characters whose tokens the shot's prompt uses, in order of first use."""
        by_token = {c.token: c for c in self.characters}
        seen = dict.fromkeys(t for t in TOKEN_IN_TEXT.findall(shot.prompt) if t in by_token)
        return [by_token[t] for t in seen]

    def resolved(self, shot: Shot) -> RenderSettings:
        """The story defaults with the shot's own settings on top."""
        return self.defaults.model_copy(update=shot.overrides())

    def sets(self, shot: Shot, key: str) -> bool:
        """Whether the story file writes setting ``key`` for this shot (on the shot or in ``defaults:``)."""
        return key in shot.overrides() or key in self.defaults.model_fields_set

    def shot_query(self, shot: Shot) -> str:
        """Retrieval text: the explicit query as written, else the prompt without its place phrases
        (``motion_query``); tokens become class words."""
        return self.with_class_words(shot.query if shot.query is not None else motion_query(shot.prompt))

    def with_class_words(self, text: str, characters: list[Character] | None = None) -> str:
        """``text`` with every character token (or those of ``characters``) replaced by its class
        word ("a <otter>" -> "an otter"): the render prompt of characters that are not personalized."""
        for c in self.characters if characters is None else characters:
            word = c.class_word
            article = "an" if word[:1].lower() in "aeiou" else "a"
            # "a <otter-token>" -> "an otter": fix the article in front of a token, keep its case
            text = re.sub(rf"\b([aA])n?(\s+){re.escape(c.token)}",
                          lambda m: (article.capitalize() if m[1] == "A" else article) + m[2] + word, text)
            text = text.replace(c.token, word)
        return re.sub(r"\s+", " ", text).strip()

    def shot_action(self, shot: Shot) -> str | None:
        """The motion alone, for shots without an explicit query: the motion query with the story's
        characters taken out ("a <tabby> runs in the park" -> "runs"); None when nothing is left."""
        if shot.query is not None:
            return None
        text = motion_query(shot.prompt)
        for c in self.characters:
            text = re.sub(rf"(?:\b(?:an?|the)\s+)?{re.escape(c.token)}(?:\s+and\b)?", " ", text, flags=re.I)
        text = " ".join(text.split()).strip(" ,.")
        return text if len(text.split()) >= 1 and text != " ".join(motion_query(shot.prompt).split()) else None

    def reference_images(self, character: Character) -> list[Path]:
        """Absolute paths of the character's reference images."""
        return [Path(os.path.abspath(self.folder / p)) for p in character.images]

    def image_sha256(self, path: Path) -> str:
        """sha256 of an image file, read once per loaded story (reload the story to see new bytes)."""
        if path not in self._image_hashes:
            self._image_hashes[path] = file_sha256(path)
        return self._image_hashes[path]


# --- 2. Content hashes (partial reruns) ---------------------------------------------------------
def _digest(obj) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return sha256(text.encode("utf-8")).hexdigest()


def character_content_hash(story: Story, character: Character) -> str:
    """sha256 of token, class word, personalization method and the image files' bytes.

    Image names and order don't count (the set of pictures is what is learnt from)."""
    images = sorted(story.image_sha256(p) for p in story.reference_images(character))
    return _digest({"v": HASH_VERSION, "token": character.token, "class_word": character.class_word,
                    "personalization": character.personalization, "images": images})


def shot_content_hash(story: Story, shot: Shot) -> str:
    """sha256 of everything that decides the shot's output: prompt, resolved query, pinned clip,
    resolved settings and the hashes of the characters it uses. Not the shot id, its position,
    the title, or characters it doesn't use."""
    return _digest({
        "v": HASH_VERSION,
        "prompt": shot.prompt,
        "query": story.shot_query(shot),
        "clip": shot.clip,
        "settings": story.resolved(shot).model_dump(mode="json"),
        "characters": {c.token: character_content_hash(story, c) for c in story.characters_in(shot)},
    })


