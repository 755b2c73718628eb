"""Loading a story file: the file checks (exists, size, UTF-8), then its YAML validated by
``story.validation.story_from_yaml`` (a story script, ``.txt``, is planned first: ``story_pipeline.plan``),
and the JSON Schema for editors. It sits above both ``story/`` and ``plan/``, which it dispatches to."""


import json
import os
from pathlib import Path

from story_pipeline.fsutil import atomic_write_text
from story_pipeline.config import StoryLimits, get_settings
from story_pipeline.story.spec import Story, StoryError
from story_pipeline.story.validation import Problem, story_error, story_from_yaml


def load_story(path: str | os.PathLike, limits: StoryLimits | None = None, check_images: bool = True) -> Story:
    """Read and validate a story file; raise StoryError ("file:line field: problem; fix.") on any problem.

    ``check_images=False`` skips opening the reference images (paths are still checked); the
    content hashes read the image bytes either way."""
    limits = limits or get_settings().story_limits  # STORY_STORY_LIMITS__*
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
        raise story_error(file, [Problem(line, None, "the file is not UTF-8 text; save it as UTF-8")]) from None
    if path.suffix.lower() == ".txt":  # a story script (prose): planned in memory, docs/story_format.md
        from story_pipeline.plan import story_from_script

        return story_from_script(text, path, file, limits, check_images)
    return story_from_yaml(text, file, path, limits, check_images)


# --- JSON Schema for editors -----------------------------------------------------------------
def story_json_schema() -> dict:
    """JSON Schema (2020-12) of a story file, for editor completion and validation."""
    schema = Story.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def write_json_schema(path: str | os.PathLike) -> Path:
    """Write story_json_schema() to path (atomically)."""
    return atomic_write_text(path, json.dumps(story_json_schema(), indent=2, ensure_ascii=False) + "\n")


