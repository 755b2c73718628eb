"""Validating a story's YAML: a line for every field, pydantic errors turned into one sentence
(``file:line field: problem; fix.``), whole-story checks. ``story_file.load_story`` reads story files
with it; ``plan`` validates the stories it writes with it."""


import difflib
import errno
import os
import re
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from story_pipeline.config import StoryLimits
from story_pipeline.story.images import image_problem
from story_pipeline.story.spec import (PERSONALIZATION_METHODS, SETTING_KEYS, STORY_ID_PATTERN, TOKEN_IN_TEXT, Character,
                                       Story, StoryError)


# --- 3. YAML with line numbers ------------------------------------------------------------------
class Problem(Exception):
    """A problem at a line, before the field path is known."""

    def __init__(self, line: int, field: str | None, problem: str):
        super().__init__(problem)
        self.line, self.field, self.problem = line, field, problem


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (a billion-laughs file would expand exponentially)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise Problem(event.start_mark.line + 1, None,
                           f"YAML aliases (*{event.anchor}) are not supported; write the value out")
        return super().compose_node(parent, index)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except ValueError:  # int() of a 5000-digit number, a date such as 2024-13-45
            kind = node.tag.rsplit(":", 1)[-1]
            value = node.value if isinstance(node.value, str) else ""
            what = f"a number of {len(value)} digits" if kind == "int" and len(value) > 100 else _short(value)
            raise Problem(node.start_mark.line + 1, None,
                           f"{what} cannot be read as {kind}; write a reasonable value, or quote it if it is text") from None


STR_TAG = "tag:yaml.org,2002:str"


def _record_lines(node, path: tuple, lines: dict) -> None:
    """Map each field path (('shots', 2, 'prompt')) to the 1-based line of its key or list item."""
    if isinstance(node, yaml.MappingNode):
        seen = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag != STR_TAG or not isinstance(key_node.value, str):
                raise Problem(line, _field(path), f"key {key_node.value!r} is not text to YAML "
                                                   f"(it reads as {key_node.tag.rsplit(':', 1)[-1]}); quote it")
            key = key_node.value
            if key in seen:
                raise Problem(line, _field(path + (key,)),
                               f"key '{key}' appears twice (first on line {seen[key]}); keep one")
            seen[key] = line
            lines[path + (key,)] = line
            _record_lines(value_node, path + (key,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _record_lines(item, path + (i,), lines)


def parse_yaml(text: str) -> tuple[object, dict]:
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
        return (f"{_short(err['input'])} is not a valid id; use only [{allowed}] (ids name Dagster assets "
                f"and files), e.g. '{slug}'")
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


def pydantic_problems(e: ValidationError, lines: dict) -> list[Problem]:
    errors = []
    for err in e.errors(include_url=False):
        path = tuple(p for p in err["loc"] if isinstance(p, (str, int)))
        # tuple members add their own loc parts (resolution.0); report the field itself
        while len(path) >= 2 and isinstance(path[-1], int) and path[-2] == "resolution":
            path = path[:-1]
        errors.append((err, path))
    # 'promt: ...' gives an unknown key and a missing 'prompt'; the first says it all
    typos = {(path[:-1], _guess(path)) for err, path in errors if err["type"] == "extra_forbidden"}
    return [Problem(_line_of(lines, path), _field(path), _describe(err, path)) for err, path in errors
            if not (err["type"] == "missing" and (path[:-1], path[-1]) in typos)]


# --- 6. Loading ---------------------------------------------------------------------------------
def default_story_id(path: Path) -> str:
    return path.parent.name if path.stem == "story" else path.stem


def _step_name(name: str) -> str:
    return name.replace("-", "_").replace(".", "_")


def semantic_problems(story: Story, lines: dict, limits: StoryLimits, check_images: bool) -> list[Problem]:
    """Checks that need the whole story or the configurable limits."""
    out = []

    def add(path, problem):
        out.append(Problem(_line_of(lines, path), _field(path), problem))

    if len(story.shots) > limits.max_shots:
        add(("shots",), f"{len(story.shots)} shots is above the limit of {limits.max_shots}; split the story")
    if len(story.characters) > limits.max_characters:
        add(("characters",), f"{len(story.characters)} characters is above the limit of {limits.max_characters}")

    tokens, names = {}, {}
    for i, c in enumerate(story.characters):
        other = names.setdefault(_step_name(c.name), c.token)
        if other != c.token and c.token not in tokens:
            add(("characters", i, "token"), f"token {c.token} differs from {other} only in '-', '.' or '_' (they "
                                            "would be one Dagster step); rename one of them")
        if c.token in tokens:
            add(("characters", i, "token"), f"token {c.token} is already used by characters[{tokens[c.token]}]; "
                                            "give each character its own token")
        tokens.setdefault(c.token, i)
        if len(c.images) > limits.max_images:
            add(("characters", i, "images"), f"{len(c.images)} images is above the limit of {limits.max_images}")
        out.extend(_path_problems(story, i, c, lines, limits, check_images))
    ids, steps = {}, {}
    known = f"use one of: {', '.join(tokens)}" if tokens else "no characters are defined yet"
    for i, shot in enumerate(story.shots):
        if shot.id in ids:
            first = ids[shot.id]
            add(("shots", i, "id"), f"shot id '{shot.id}' is already used by shots[{first}] "
                                    f"(line {_line_of(lines, ('shots', first, 'id'))}); give each shot its own id")
        ids.setdefault(shot.id, i)
        step = _step_name(shot.id)  # Dagster step names keep only [A-Za-z0-9_]
        if step in steps and story.shots[steps[step]].id != shot.id:
            add(("shots", i, "id"), f"shot id '{shot.id}' differs from '{story.shots[steps[step]].id}' only in "
                                    "'-', '.' or '_' (they would be one Dagster step); rename one of them")
        steps.setdefault(step, i)
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
    return out


def _path_problems(story: Story, i: int, c: Character, lines: dict, limits: StoryLimits,
                   check_images: bool) -> list[Problem]:
    out, seen = [], set()
    root = story.folder.resolve()
    for j, raw in enumerate(c.images):
        path = ("characters", i, "images", j)
        where = (_line_of(lines, path), _field(path))
        p = story.folder / raw
        if "\x00" in raw:
            out.append(Problem(*where, "the path contains a NUL byte; fix the path"))
            continue
        try:
            real = p.resolve()  # a symlink loop raises RuntimeError (Python 3.11), not OSError
        except (OSError, RuntimeError) as e:
            out.append(Problem(*where, f"'{raw}' cannot be resolved ({_path_reason(e)}); fix the path"))
            continue
        if not real.is_relative_to(root):
            lexical = Path(os.path.normpath(os.path.abspath(p)))
            how = (f"is a symlink to {real}, outside the story folder {root}" if lexical.is_relative_to(root)
                   else f"points outside the story folder {root}")
            out.append(Problem(*where, f"'{raw}' {how}; keep reference images inside the folder of the story file"))
            continue
        if real in seen:
            out.append(Problem(*where, f"'{raw}' is listed twice for {c.token}; list each image once"))
            continue
        seen.add(real)
        try:
            exists, is_file = real.exists(), real.is_file()
        except OSError as e:  # e.g. a name longer than the file system allows
            out.append(Problem(*where, f"'{_short_path(raw)}' cannot be checked ({_path_reason(e)}); fix the path"))
            continue
        if not exists:
            out.append(Problem(*where, f"'{raw}' does not exist (looked for {p}); fix the path, which is "
                                        "relative to the story file's folder"))
            continue
        if not is_file:
            out.append(Problem(*where, f"'{raw}' is not a file; list image files"))
            continue
        if check_images and (problem := image_problem(real, limits)) is not None:
            out.append(Problem(*where, f"'{raw}' {problem}"))
    return out


def _path_reason(e: Exception) -> str:
    if isinstance(e, RuntimeError) or getattr(e, "errno", None) == errno.ELOOP:
        return "a symlink loop"
    return getattr(e, "strerror", None) or type(e).__name__


def _short_path(raw: str) -> str:
    return raw if len(raw) <= 80 else raw[:77] + "..."


def story_error(file: str, problems: list[Problem]) -> StoryError:
    """The first problem (by line) as one sentence; the count of the others is appended."""
    problems = sorted(problems, key=lambda p: p.line)
    first = problems[0]
    where = f"{file}:{first.line}" + (f" {first.field}" if first.field else "")
    message = f"{where}: {first.problem}" + ("" if first.problem.endswith((".", "?")) else ".")
    if len(problems) > 1:
        message += f" ({len(problems) - 1} more problem{'s' if len(problems) > 2 else ''} after this one.)"
    return StoryError(message, file=file, line=first.line, field=first.field, problem=first.problem,
                      more=len(problems) - 1)


def story_from_yaml(text: str, file: str, path: Path, limits: StoryLimits, check_images: bool) -> Story:
    """The story in YAML ``text`` read from ``file`` (``path``: its absolute path; image paths are relative
    to its folder); a ``StoryError`` of one sentence on any problem."""
    # 2. YAML -> data + a line for every field
    try:
        data, lines = parse_yaml(text)
    except Problem as p:
        raise story_error(file, [p]) from None
    except yaml.constructor.ConstructorError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else 1
        raise story_error(file, [Problem(line, None, f"unsupported YAML tag ({e.problem}); remove the tag")]) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        problem = (f"not valid YAML ({e.problem or e.context}); check the indentation and quote text "
                   "containing ': ' or ' #'")
        raise story_error(file, [Problem(line, None, problem)]) from None
    except yaml.reader.ReaderError as e:  # a control character (NUL, BEL, ...) anywhere in the text
        line = text[: e.position].count("\n") + 1
        code = ord(e.character) if isinstance(e.character, str) else e.character
        raise story_error(file, [Problem(line, None, f"the control character #x{code:04x} is not allowed in YAML; "
                                                 "remove it")]) from None
    except yaml.YAMLError as e:
        raise story_error(file, [Problem(1, None, f"not valid YAML ({' '.join(str(e).split())})")]) from None
    except RecursionError:
        raise story_error(file, [Problem(1, None, "the YAML is nested too deeply to be a story")]) from None
    if data is None:
        raise story_error(file, [Problem(1, None, "the file is empty; a story needs characters: and shots:")])
    if not isinstance(data, dict):
        problem = (f"the file holds a {type(data).__name__}, not a mapping; start with keys such as title:, "
                   "characters: and shots:")
        raise story_error(file, [Problem(1, None, problem)])
    # 3. The story id: the id: field, else the file (or folder) name
    if data.get("id") is None:
        derived = default_story_id(path)
        if not re.match(STORY_ID_PATTERN, derived):
            slug = re.sub(r"[^a-z0-9_-]+", "-", derived.lower()).strip("-_") or "my-story"
            problem = (f"the story id '{derived}' taken from the file name is not valid ([a-z0-9_-]); "
                       f"add a line 'id: {slug}'")
            raise story_error(file, [Problem(1, None, problem)])
        data = {**data, "id": derived}
    # 4. Types, required keys, unknown keys
    try:
        story = Story.model_validate(data, context={"limits": limits})  # frames/fps/resolution limits
    except ValidationError as e:
        raise story_error(file, pydantic_problems(e, lines)) from None
    story._source = path
    # 5. Cross-field checks, limits, reference images
    if problems := semantic_problems(story, lines, limits, check_images):
        raise story_error(file, problems)
    return story
