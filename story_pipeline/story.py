"""Story files (YAML): characters with reference images + shots, validated with line numbers.

    python -m story_pipeline.story check examples/tabby_adventure/story.yaml
    python -m story_pipeline.story schema examples/story.schema.json

    from story_pipeline.story import load_story, shot_content_hash
    story = load_story("examples/tabby_adventure/story.yaml")
    for shot in story.shots:
        story.shot_query(shot), story.resolved(shot).tau, shot_content_hash(story, shot)

Step 1 of the paper ("story -> shots"): each shot carries a *prompt* for generation
("a <tabby> leaps into the air") and a *query* for retrieval; the query defaults to the prompt
with every character token replaced by that character's class word ("a cat leaps into the air").
Per-shot render settings (frames, fps, resolution, tau, strength, seed, guidance) are written on
the shot itself and override the story's ``defaults:``. See docs/story_format.md.

Everything in a story file is untrusted: a problem is a ``StoryError`` whose message is one
sentence ``file:line field: problem; fix.`` Reference images are checked from their header
(size, pixel count, format, animation) before anything is decoded. Loading writes nothing.
"""

import difflib
import errno
import json
import os
import re
import typing
import warnings
from hashlib import sha256
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import yaml
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError, WithJsonSchema

from story_pipeline.errors import StoryPipelineError
from story_pipeline.fsutil import atomic_write_text, file_sha256

HASH_VERSION = 1  # bump when the meaning of a shot or character hash changes (forces reruns)

# Ids become Dagster partition keys "<story>.<shot>": lowercase, digits, '.', '_', '-'. A story id
# has no '.', so a key splits unambiguously at its first dot.
SHOT_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
STORY_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
TOKEN_PATTERN = r"^<[a-z0-9][a-z0-9._-]{0,31}>$"  # the name inside <> is the character id
CLIP_ID_PATTERN = r"^\S{1,200}$"
TOKEN_IN_TEXT = re.compile(r"<[^<>\s]{1,64}>")  # anything that looks like a token, valid or not

PERSONALIZATION_METHODS = ("timeinv_lora", "timeinv", "textual_inversion", "none")


class StoryError(StoryPipelineError):
    """A story file (or one of its reference images) is unusable: ``file:line field: problem; fix.``"""

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 field: str | None = None, problem: str | None = None, more: int = 0):
        super().__init__(message)
        self.file, self.line, self.field, self.problem, self.more = file, line, field, problem, more


class StoryLimits(BaseModel):
    """Limits on untrusted story input, checked before anything is decoded or rendered.

    Not wired into config.Settings yet: pass ``load_story(path, limits=...)`` to change them."""

    max_story_bytes: int = Field(1024**2, description="story files are text; 1 MiB is thousands of shots")
    max_shots: int = Field(500, description="each shot is a render; more belongs in several stories")
    max_characters: int = Field(32, description="each character is one personalization run")
    max_prompt_chars: int = Field(1000, description="text encoders read ~77 tokens; more is a mistake")
    min_frames: int = Field(2, description="one frame is an image, not a shot")
    max_frames: int = Field(64, description="memory grows with frames; a longer event is several shots")
    max_fps: int = Field(60, description="rendered frames per second")
    min_side: int = Field(32, description="smallest width/height in pixels")
    max_side: int = Field(1024, description="largest width/height; SD-1.5-class models are trained at 512")
    side_multiple: int = Field(8, description="latent diffusion works on a 1/8 grid (VAE downsampling)")
    max_images: int = Field(50, description="personalization uses a few; more is a mistake")
    max_image_bytes: int = Field(50 * 1024**2, description="reject larger reference files before opening")
    max_image_pixels: int = Field(50_000_000, description="width*height from the header; a 48 MP photo passes")
    min_image_side: int = Field(32, description="smaller images carry no identity")
    image_formats: tuple[str, ...] = Field(("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"),
                                           description="Pillow format names accepted")


DEFAULT_LIMITS = StoryLimits()


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
}


class RenderSettings(BaseModel):
    """The story's ``defaults:`` block, and the resolved settings of one shot."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frames: int = Field(16, ge=1, description=DESCRIPTIONS["frames"])  # 16 = one AnimateDiff context window
    fps: int = Field(8, ge=1, description=DESCRIPTIONS["fps"])  # 16/8 = 2 s, shorter than every ToyWorld clip
    resolution: Resolution = Field((64, 64), description=DESCRIPTIONS["resolution"])  # the toy models' size
    tau: float = Field(1.0, ge=0.0, le=1.0, description=DESCRIPTIONS["tau"])  # paper default: full guidance
    strength: float = Field(1.0, ge=0.0, le=10.0, description=DESCRIPTIONS["strength"])
    seed: int = Field(0, ge=0, le=2**32 - 1, description=DESCRIPTIONS["seed"])
    guidance: float | None = Field(None, ge=0.0, le=50.0, description=DESCRIPTIONS["guidance"])
    steps: int | None = Field(None, ge=1, le=200, description=DESCRIPTIONS["steps"])

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
        """The token without its brackets ('<tabby>' -> 'tabby'); valid as a partition key."""
        return self.token[1:-1]


class Shot(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=SHOT_ID_PATTERN, description="stable shot id ([a-z0-9._-]); keep it when editing")
    prompt: str = Field(min_length=1, description="what is rendered, using character tokens")
    query: str | None = Field(None, min_length=1, description="retrieval text; default: the prompt with "
                                                                "tokens replaced by class words")
    clip: str | None = Field(None, pattern=CLIP_ID_PATTERN, description="pin a corpus clip id (skips retrieval)")
    frames: int | None = Field(None, ge=1, description=DESCRIPTIONS["frames"])
    fps: int | None = Field(None, ge=1, description=DESCRIPTIONS["fps"])
    resolution: Resolution | None = Field(None, description=DESCRIPTIONS["resolution"])
    tau: float | None = Field(None, ge=0.0, le=1.0, description=DESCRIPTIONS["tau"])
    strength: float | None = Field(None, ge=0.0, le=10.0, description=DESCRIPTIONS["strength"])
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description=DESCRIPTIONS["seed"])
    guidance: float | None = Field(None, ge=0.0, le=50.0, description=DESCRIPTIONS["guidance"])
    steps: int | None = Field(None, ge=1, le=200, description=DESCRIPTIONS["steps"])

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

    def shot_key(self, shot: Shot) -> str:
        """'<story>.<shot>': the shot's Dagster partition key."""
        return f"{self.id}.{shot.id}"


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


# --- 3. YAML with line numbers ------------------------------------------------------------------
class _Problem(Exception):
    """A problem at a line, before the field path is known."""

    def __init__(self, line: int, field: str | None, problem: str):
        super().__init__(problem)
        self.line, self.field, self.problem = line, field, problem


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (a billion-laughs file would expand exponentially)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Problem(event.start_mark.line + 1, None,
                           f"YAML aliases (*{event.anchor}) are not supported; write the value out")
        return super().compose_node(parent, index)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except ValueError:  # int() of a 5000-digit number, a date such as 2024-13-45
            kind = node.tag.rsplit(":", 1)[-1]
            value = node.value if isinstance(node.value, str) else ""
            what = f"a number of {len(value)} digits" if kind == "int" and len(value) > 100 else _short(value)
            raise _Problem(node.start_mark.line + 1, None,
                           f"{what} cannot be read as {kind}; write a reasonable value, or quote it if it is text") from None


STR_TAG = "tag:yaml.org,2002:str"


def _record_lines(node, path: tuple, lines: dict) -> None:
    """Map each field path (('shots', 2, 'prompt')) to the 1-based line of its key or list item."""
    if isinstance(node, yaml.MappingNode):
        seen = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag != STR_TAG or not isinstance(key_node.value, str):
                raise _Problem(line, _field(path), f"key {key_node.value!r} is not text to YAML "
                                                   f"(it reads as {key_node.tag.rsplit(':', 1)[-1]}); quote it")
            key = key_node.value
            if key in seen:
                raise _Problem(line, _field(path + (key,)),
                               f"key '{key}' appears twice (first on line {seen[key]}); keep one")
            seen[key] = line
            lines[path + (key,)] = line
            _record_lines(value_node, path + (key,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _record_lines(item, path + (i,), lines)


def _parse_yaml(text: str) -> tuple[object, dict]:
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines = {(): node.start_mark.line + 1}
        _record_lines(node, (), lines)
        return loader.construct_document(node), lines
    finally:
        loader.dispose()


def _field(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(lines: dict, path) -> int:
    """Line of the deepest prefix of path found in the file (a missing key -> its parent)."""
    path = tuple(p for p in path if isinstance(p, (str, int)))
    for n in range(len(path), -1, -1):
        if path[:n] in lines:
            return lines[path[:n]]
    return 1


# --- 4. Turning pydantic errors into one sentence -----------------------------------------------
ALIAS_HINTS = {  # keys people write for another key
    "τ": "tau", "class": "class_word", "classword": "class_word", "name": "token", "image": "images",
    "refs": "images", "references": "images", "reference_images": "images", "clip_id": "clip",
    "steps_tau": "tau", "cfg": "guidance", "guidance_scale": "guidance", "num_frames": "frames",
    "size": "resolution", "text": "prompt", "retrieval_query": "query", "method": "personalization",
}
PATTERN_HINTS = {
    "token": "write it as <name> with a lowercase name, e.g. '<tabby>'",
    "class_word": "use a plain word or two, e.g. 'cat'",
    "clip": "use the clip id as listed by `story search`, without spaces",
}


def _model_at(path) -> type[BaseModel] | None:
    """The model class that holds the last key of ``path`` (for listing allowed keys)."""
    model = Story
    for part in path[:-1]:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        model = _inner_model(model.model_fields[part].annotation)
    return model


def _inner_model(annotation):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if (found := _inner_model(arg)) is not None:
            return found
    return None


def _guess(path) -> str | None:
    """The allowed key an unknown key was probably meant to be (alias table, then difflib)."""
    model = _model_at(path)
    allowed = list(model.model_fields) if model else []
    name = str(path[-1])
    guess = ALIAS_HINTS.get(name.lower()) or next(iter(difflib.get_close_matches(name, allowed, 1, 0.6)), None)
    return guess if guess in allowed else None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(err: dict, path: tuple) -> str:
    """One pydantic error -> 'problem; fix' (no location)."""
    kind, name = err["type"], path[-1] if path else ""
    if kind == "extra_forbidden":
        model = _model_at(path)
        allowed = list(model.model_fields) if model else []
        if name == "overrides":
            return ("unknown key 'overrides'; write per-shot settings (" + ", ".join(SETTING_KEYS)
                    + ") directly on the shot")
        if (guess := _guess(path)) is not None:
            return f"unknown key '{name}'; did you mean '{guess}'?"
        return f"unknown key '{name}'; allowed keys here are {', '.join(allowed)}"
    if kind == "missing":
        return f"required key '{name}' is missing; add it"
    if kind == "too_short" and path == ("shots",):
        return "the story has no shots; add at least one shot (an id and a prompt) under shots:"
    if kind == "too_short" and name == "images":
        return "the character has no reference images; list at least one image path"
    if kind == "string_pattern_mismatch" and name == "id":
        allowed = "a-z0-9_-" if path == ("id",) else "a-z0-9._-"  # a story id has no '.'
        slug = re.sub(f"[^{allowed}]+", "-", str(err["input"]).lower()).strip("-._")[:64] or "shot-1"
        return (f"{_short(err['input'])} is not a valid id; use only [{allowed}] (ids become Dagster partition "
                f"keys), e.g. '{slug}'")
    if kind == "string_pattern_mismatch":
        return f"{_short(err['input'])} is not valid; {PATTERN_HINTS.get(name, 'see docs/story_format.md')}"
    if kind == "literal_error":
        return f"{_short(err['input'])} is not one of {', '.join(PERSONALIZATION_METHODS)}; pick one"
    if kind == "string_type":
        return f"must be text, got {_short(err['input'])}; put it in quotes"
    if kind == "model_type":
        return f"must be a mapping of keys (key: value lines), got {type(err['input']).__name__}"
    if kind == "list_type":
        return f"must be a list (lines starting with '- '), got {_short(err['input'])}"
    if kind == "value_error":
        return err["msg"].removeprefix("Value error, ")
    msg = err["msg"].replace("Input should be", "must be")
    msg = f"{msg[:1].lower()}{msg[1:]}"
    return msg if ", got" in msg else f"{msg}, got {_short(err['input'])}"


def _pydantic_problems(e: ValidationError, lines: dict) -> list[_Problem]:
    errors = []
    for err in e.errors(include_url=False):
        path = tuple(p for p in err["loc"] if isinstance(p, (str, int)))
        # tuple members add their own loc parts (resolution.0); report the field itself
        while len(path) >= 2 and isinstance(path[-1], int) and path[-2] == "resolution":
            path = path[:-1]
        errors.append((err, path))
    # 'promt: ...' gives an unknown key and a missing 'prompt'; the first says it all
    typos = {(path[:-1], _guess(path)) for err, path in errors if err["type"] == "extra_forbidden"}
    return [_Problem(_line_of(lines, path), _field(path), _describe(err, path)) for err, path in errors
            if not (err["type"] == "missing" and (path[:-1], path[-1]) in typos)]


# --- 5. Reference images ------------------------------------------------------------------------
def _size(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB" if n >= 1024**2 else f"{n} bytes"


def _image_problem(path: Path, limits: StoryLimits) -> str | None:
    """Why the file can't be a reference image, or None. Header checks come before any decoding."""
    try:
        size = path.stat().st_size
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if size == 0:
        return "is an empty file; re-export the image"
    if size > limits.max_image_bytes:
        return f"is {_size(size)}, above the {_size(limits.max_image_bytes)} limit for reference images; downscale it"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)  # reads the header only
    except Image.DecompressionBombError:
        return (f"claims more than {limits.max_image_pixels / 1e6:.0f} MP (a decompression bomb or a huge "
                "image); downscale it")
    except UnidentifiedImageError:
        return "is not an image Pillow can read; save it as PNG or JPEG"
    except OSError as e:
        return f"cannot be read ({e}); re-export it as PNG or JPEG"
    with im:
        w, h = im.size
        if im.format not in limits.image_formats:
            return f"is a {im.format} file; save it as one of {', '.join(limits.image_formats)}"
        if w * h > limits.max_image_pixels:
            return (f"is {w}x{h} pixels ({w * h / 1e6:.0f} MP), above the {limits.max_image_pixels / 1e6:.0f} MP "
                    "limit; downscale it (512-1024 px per side is plenty)")
        if min(w, h) < limits.min_image_side:
            return f"is only {w}x{h} pixels; use at least {limits.min_image_side} px per side"
        if getattr(im, "is_animated", False):
            return "is animated (more than one frame); save the frame that shows the character as PNG"
        try:
            im.verify()  # checksums and structure, without decoding pixels
        except Exception as e:  # Pillow raises many types here (SyntaxError, struct.error, OSError...)
            return f"is corrupt ({e or type(e).__name__}); re-export it"
    try:
        with Image.open(path) as im:
            im.load()  # bounded by the pixel limit above; catches truncated JPEG data verify() skips
    except Exception as e:
        return f"is corrupt or truncated ({e or type(e).__name__}); re-export it"
    return None


def load_reference_image(path: str | os.PathLike, limits: StoryLimits = DEFAULT_LIMITS) -> Image.Image:
    """Check and open a reference image as 8-bit RGB (EXIF rotation applied).

    Palette, grey, CMYK and 16-bit images are converted; transparency is composited on white;
    animated images (GIF, APNG, WebP) are rejected, not reduced to a frame."""
    path = Path(path)
    if (problem := _image_problem(path, limits)) is not None:
        raise StoryError(f"{path}: {problem}.", file=str(path), problem=problem)
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode.startswith("I") or im.mode == "F":  # 16/32-bit grey: rescale instead of clipping
            a = np.asarray(im, dtype=np.float64)
            if im.mode == "F":
                a = a * 255 if a.max() <= 1.0 else a
            elif im.mode.startswith("I;16") or a.max() > 255:
                a = a / 257
            return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
        if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return im.convert("RGB")


# --- 6. Loading ---------------------------------------------------------------------------------
def _default_story_id(path: Path) -> str:
    return path.parent.name if path.stem == "story" else path.stem


def _semantic_problems(story: Story, lines: dict, limits: StoryLimits, check_images: bool) -> list[_Problem]:
    """Checks that need the whole story or the configurable limits."""
    out = []

    def add(path, problem):
        out.append(_Problem(_line_of(lines, path), _field(path), problem))

    if len(story.shots) > limits.max_shots:
        add(("shots",), f"{len(story.shots)} shots is above the limit of {limits.max_shots}; split the story")
    if len(story.characters) > limits.max_characters:
        add(("characters",), f"{len(story.characters)} characters is above the limit of {limits.max_characters}")

    def check_settings(path, values: dict):
        if (f := values.get("frames")) is not None and not limits.min_frames <= f <= limits.max_frames:
            add(path + ("frames",), f"{f} frames is outside the allowed {limits.min_frames}-{limits.max_frames}; "
                                    "split a long event into several shots")
        if (fps := values.get("fps")) is not None and fps > limits.max_fps:
            add(path + ("fps",), f"{fps} fps is above the limit of {limits.max_fps}")
        if (res := values.get("resolution")) is not None:
            w, h = res
            if not (limits.min_side <= w <= limits.max_side and limits.min_side <= h <= limits.max_side):
                add(path + ("resolution",), f"{w}x{h} is outside the allowed {limits.min_side}-{limits.max_side} "
                                            "pixels per side; pick a size inside it")
            elif w % limits.side_multiple or h % limits.side_multiple:
                m = limits.side_multiple
                add(path + ("resolution",), f"{w}x{h} is not a multiple of {m} per side; use e.g. "
                                            f"{w // m * m or m}x{h // m * m or m}")

    check_settings(("defaults",), story.defaults.model_dump())
    tokens = {}
    for i, c in enumerate(story.characters):
        if c.token in tokens:
            add(("characters", i, "token"), f"token {c.token} is already used by characters[{tokens[c.token]}]; "
                                            "give each character its own token")
        tokens.setdefault(c.token, i)
        if len(c.images) > limits.max_images:
            add(("characters", i, "images"), f"{len(c.images)} images is above the limit of {limits.max_images}")
        out.extend(_path_problems(story, i, c, lines, limits, check_images))
    ids = {}
    known = f"use one of: {', '.join(tokens)}" if tokens else "no characters are defined yet"
    for i, shot in enumerate(story.shots):
        if shot.id in ids:
            first = ids[shot.id]
            add(("shots", i, "id"), f"shot id '{shot.id}' is already used by shots[{first}] "
                                    f"(line {_line_of(lines, ('shots', first, 'id'))}); give each shot its own id")
        ids.setdefault(shot.id, i)
        for key in ("prompt", "query"):
            text = getattr(shot, key)
            if text is None:
                continue
            if len(text) > limits.max_prompt_chars:
                add(("shots", i, key), f"is {len(text)} characters, above the limit of {limits.max_prompt_chars}; "
                                       "shorten it")
            for t in TOKEN_IN_TEXT.findall(text):
                if t not in tokens:
                    add(("shots", i, key), f"uses {t} but no character has that token; define it under "
                                           f"characters: ({known})")
                    break
        check_settings(("shots", i), shot.overrides())
    return out


def _path_problems(story: Story, i: int, c: Character, lines: dict, limits: StoryLimits,
                   check_images: bool) -> list[_Problem]:
    out, seen = [], set()
    root = story.folder.resolve()
    for j, raw in enumerate(c.images):
        path = ("characters", i, "images", j)
        where = (_line_of(lines, path), _field(path))
        p = story.folder / raw
        if "\x00" in raw:
            out.append(_Problem(*where, "the path contains a NUL byte; fix the path"))
            continue
        try:
            real = p.resolve()  # a symlink loop raises RuntimeError (Python 3.11), not OSError
        except (OSError, RuntimeError) as e:
            out.append(_Problem(*where, f"'{raw}' cannot be resolved ({_path_reason(e)}); fix the path"))
            continue
        if not real.is_relative_to(root):
            lexical = Path(os.path.normpath(os.path.abspath(p)))
            how = (f"is a symlink to {real}, outside the story folder {root}" if lexical.is_relative_to(root)
                   else f"points outside the story folder {root}")
            out.append(_Problem(*where, f"'{raw}' {how}; keep reference images inside the folder of the story file"))
            continue
        if real in seen:
            out.append(_Problem(*where, f"'{raw}' is listed twice for {c.token}; list each image once"))
            continue
        seen.add(real)
        try:
            exists, is_file = real.exists(), real.is_file()
        except OSError as e:  # e.g. a name longer than the file system allows
            out.append(_Problem(*where, f"'{_short_path(raw)}' cannot be checked ({_path_reason(e)}); fix the path"))
            continue
        if not exists:
            out.append(_Problem(*where, f"'{raw}' does not exist (looked for {p}); fix the path, which is "
                                        "relative to the story file's folder"))
            continue
        if not is_file:
            out.append(_Problem(*where, f"'{raw}' is not a file; list image files"))
            continue
        if check_images and (problem := _image_problem(real, limits)) is not None:
            out.append(_Problem(*where, f"'{raw}' {problem}"))
    return out


def _path_reason(e: Exception) -> str:
    if isinstance(e, RuntimeError) or getattr(e, "errno", None) == errno.ELOOP:
        return "a symlink loop"
    return getattr(e, "strerror", None) or type(e).__name__


def _short_path(raw: str) -> str:
    return raw if len(raw) <= 80 else raw[:77] + "..."


def _error(file: str, problems: list[_Problem]) -> StoryError:
    """The first problem (by line) as one sentence; the count of the others is appended."""
    problems = sorted(problems, key=lambda p: p.line)
    first = problems[0]
    where = f"{file}:{first.line}" + (f" {first.field}" if first.field else "")
    message = f"{where}: {first.problem}" + ("" if first.problem.endswith((".", "?")) else ".")
    if len(problems) > 1:
        message += f" ({len(problems) - 1} more problem{'s' if len(problems) > 2 else ''} after this one.)"
    return StoryError(message, file=file, line=first.line, field=first.field, problem=first.problem,
                      more=len(problems) - 1)


def load_story(path: str | os.PathLike, limits: StoryLimits | None = None, check_images: bool = True) -> Story:
    """Read and validate a story file; raise StoryError ("file:line field: problem; fix.") on any problem.

    ``check_images=False`` skips opening the reference images (paths are still checked); the
    content hashes read the image bytes either way."""
    limits = limits or DEFAULT_LIMITS
    file = str(path)
    path = Path(os.path.abspath(path))
    # 1. The file itself
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise StoryError(f"{file}: the story file does not exist; check the path.", file=file) from None
    except OSError as e:
        raise StoryError(f"{file}: the story file cannot be read ({e.strerror}).", file=file) from None
    if not path.is_file():
        raise StoryError(f"{file}: is not a file; pass the story's .yaml file.", file=file)
    if size > limits.max_story_bytes:
        raise StoryError(f"{file}: the story file is {size} bytes, above the {limits.max_story_bytes} byte limit; "
                         "split it into several stories.", file=file)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise _error(file, [_Problem(line, None, "the file is not UTF-8 text; save it as UTF-8")]) from None
    # 2. YAML -> data + a line for every field
    try:
        data, lines = _parse_yaml(text)
    except _Problem as p:
        raise _error(file, [p]) from None
    except yaml.constructor.ConstructorError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else 1
        raise _error(file, [_Problem(line, None, f"unsupported YAML tag ({e.problem}); remove the tag")]) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        problem = (f"not valid YAML ({e.problem or e.context}); check the indentation and quote text "
                   "containing ': ' or ' #'")
        raise _error(file, [_Problem(line, None, problem)]) from None
    except yaml.reader.ReaderError as e:  # a control character (NUL, BEL, ...) anywhere in the text
        line = text[: e.position].count("\n") + 1
        code = ord(e.character) if isinstance(e.character, str) else e.character
        raise _error(file, [_Problem(line, None, f"the control character #x{code:04x} is not allowed in YAML; "
                                                 "remove it")]) from None
    except yaml.YAMLError as e:
        raise _error(file, [_Problem(1, None, f"not valid YAML ({' '.join(str(e).split())})")]) from None
    except RecursionError:
        raise _error(file, [_Problem(1, None, "the YAML is nested too deeply to be a story")]) from None
    if data is None:
        raise _error(file, [_Problem(1, None, "the file is empty; a story needs characters: and shots:")])
    if not isinstance(data, dict):
        problem = (f"the file holds a {type(data).__name__}, not a mapping; start with keys such as title:, "
                   "characters: and shots:")
        raise _error(file, [_Problem(1, None, problem)])
    # 3. The story id: the id: field, else the file (or folder) name
    if data.get("id") is None:
        derived = _default_story_id(path)
        if not re.match(STORY_ID_PATTERN, derived):
            slug = re.sub(r"[^a-z0-9_-]+", "-", derived.lower()).strip("-_") or "my-story"
            problem = (f"the story id '{derived}' taken from the file name is not valid ([a-z0-9_-]); "
                       f"add a line 'id: {slug}'")
            raise _error(file, [_Problem(1, None, problem)])
        data = {**data, "id": derived}
    # 4. Types, required keys, unknown keys
    try:
        story = Story.model_validate(data)
    except ValidationError as e:
        raise _error(file, _pydantic_problems(e, lines)) from None
    story._source = path
    # 5. Cross-field checks, limits, reference images
    if problems := _semantic_problems(story, lines, limits, check_images):
        raise _error(file, problems)
    return story


# --- 7. JSON Schema for editors -----------------------------------------------------------------
def story_json_schema() -> dict:
    """JSON Schema (2020-12) of a story file, for editor completion and validation."""
    schema = Story.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def write_json_schema(path: str | os.PathLike) -> Path:
    """Write story_json_schema() to path (atomically)."""
    return atomic_write_text(path, json.dumps(story_json_schema(), indent=2, ensure_ascii=False) + "\n")


def _main(argv=None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m story_pipeline.story", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    check = sub.add_parser("check", help="validate story files and print their shots")
    check.add_argument("paths", nargs="+")
    schema = sub.add_parser("schema", help="write the JSON Schema of story files")
    schema.add_argument("out")
    args = parser.parse_args(argv)
    if args.cmd == "schema":
        print(write_json_schema(args.out))
        return 0
    status = 0
    for p in args.paths:
        try:
            story = load_story(p)
        except StoryError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 2
            continue
        print(f"{p}: story '{story.id}', {len(story.characters)} characters, {len(story.shots)} shots")
        for shot in story.shots:
            s = story.resolved(shot)
            print(f"  {story.shot_key(shot)}  {shot_content_hash(story, shot)[:12]}  "
                  f"{s.frames}f@{s.fps} tau={s.tau}  query: {story.shot_query(shot)}")
    return status


if __name__ == "__main__":
    raise SystemExit(_main())
