"""Reading a story script: prose with a header (or a sidecar) that declares the characters.

    ---
    title: Tabby's Snow Day          # optional: id, title, defaults (as in a story file)
    characters:
      Tabby:                         # the name as the prose writes it
        token: <tabby>               # optional (default: <tabby>, from the name)
        class_word: cat
        images: [refs/tabby_0.png]   # relative to the script's folder
        aliases: [the kitten]        # optional: other ways the prose names it
    ---
    Tabby walked to the right across the snowy field. Then she leaped into the air.

Without a header, the same keys are read from ``<script stem>.cast.yaml`` beside the script.
Lines starting with ``#`` in the prose are comments. Every problem is a ``StoryError`` of one
sentence naming ``file:line`` and the fix; reading writes nothing.
"""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from story_pipeline.config import StoryLimits
from story_pipeline.story.spec import StoryError

HEADER_KEYS = ("id", "title", "defaults", "characters")
CHARACTER_KEYS = ("token", "class_word", "images", "aliases", "personalization")
SCRIPT_SUFFIXES = (".txt",)


@dataclass(eq=False)  # one object per character: compared and hashed by identity
class Member:
    """A declared character: the name the prose uses, its story-file fields, and the header line."""
    name: str
    token: str
    class_word: str
    images: list
    line: int
    aliases: list = field(default_factory=list)
    personalization: str | None = None


@dataclass
class Script:
    file: str  # as the user wrote it (for messages)
    path: Path  # absolute
    header: dict  # id, title, defaults (as written)
    cast: list  # Member, in header order
    prose: str  # the text after the header, comments blanked (offsets kept)
    prose_line: int  # line number of the prose's first line
    header_source: str  # "header" or the sidecar's file name


def is_script(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in SCRIPT_SUFFIXES


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.stem + ".cast.yaml")


def fail(file: str, line: int | None, problem: str) -> StoryError:
    where = f"{file}:{line}" if line else file
    return StoryError(f"{where}: {problem}", file=file, line=line, problem=problem)


def read_script_file(path: str | os.PathLike, limits: StoryLimits) -> tuple[str, Path, str]:
    """(file as given, absolute path, text) with the story file's checks: exists, size, UTF-8."""
    file = str(path)
    path = Path(os.path.abspath(path))
    try:
        size = path.stat().st_size
    except OSError:
        raise fail(file, None, "the script does not exist; check the path.") from None
    if not path.is_file():
        raise fail(file, None, "is not a file; pass the story script (.txt).")
    if size > limits.max_story_bytes:
        raise fail(file, None, f"the script is {size} bytes, above the {limits.max_story_bytes} byte limit; "
                               "split it into several stories.")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise fail(file, data[: e.start].count(b"\n") + 1, "the file is not UTF-8 text; save it as UTF-8.") from None
    return file, path, text


def parse_script(text: str, path: Path, file: str) -> Script:
    """Split header and prose, read the cast (header, else the sidecar)."""
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise fail(file, 1, "the script is empty; write a header naming the characters, then the story in sentences.")
    lines = text.split("\n")
    header_text, header_line, prose_start = None, 1, 0
    if lines[0].strip() == "---":
        end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
        if end is None:
            raise fail(file, 1, "the header opened with '---' is never closed; end it with a line '---'.")
        header_text, header_line, prose_start = "\n".join(lines[1:end]), 2, end + 1
        source = "header"
    else:
        car = sidecar_of(path)
        if car.is_file():
            try:
                header_text = car.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                raise fail(str(car), 1, "the file is not UTF-8 text; save it as UTF-8.") from None
            file_for_header, source = str(car), car.name
        else:
            raise fail(file, 1, "the script declares no characters; start it with a header between '---' lines "
                                "(characters: Name: {token: <name>, class_word: cat, images: [refs/name.png]}) "
                                f"or write them in {car.name} beside it.")
    prose = "\n".join(re.sub(r"^\s*#.*$", lambda m: " " * len(m[0]), ln) for ln in lines[prose_start:])
    if not prose.strip():
        raise fail(file, prose_start + 1, "the script has no story text after its header; write the story in "
                                          "sentences below the header.")
    header_file = file if source == "header" else file_for_header
    header = _load_header(header_text, header_file, header_line if source == "header" else 1)
    cast = _cast(header, header_text, header_file, header_line if source == "header" else 1)
    return Script(file, path, {k: header[k] for k in ("id", "title", "defaults") if k in header}, cast, prose,
                  prose_start + 1, source)


def _load_header(text: str, file: str, first_line: int) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = first_line + (mark.line if mark else 0)
        raise fail(file, line, f"the header is not valid YAML ({e.problem or e.context}); check the indentation "
                               "and quote text containing ': '.") from None
    except yaml.YAMLError as e:
        raise fail(file, first_line, f"the header is not valid YAML ({' '.join(str(e).split())}).") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise fail(file, first_line, "the header must be key: value lines (characters:, and optionally id:, title:, "
                                     "defaults:).")
    for key in data:
        if key not in HEADER_KEYS:
            raise fail(file, _line_of_key(text, str(key), first_line),
                       f"unknown header key '{key}'; use {', '.join(HEADER_KEYS)}.")
    return data


def _line_of_key(text: str, key: str, first_line: int, indent: str = "") -> int:
    m = re.search(rf"^{indent}\s*['\"]?{re.escape(key)}['\"]?\s*:", text, re.M)
    return first_line + (text[: m.start()].count("\n") if m else 0)


def _cast(header: dict, text: str, file: str, first_line: int) -> list:
    chars = header.get("characters")
    line = _line_of_key(text, "characters", first_line)
    if not chars:
        raise fail(file, line, "the script declares no characters; list them under characters: (each name with "
                               "token, class_word and images).")
    if not isinstance(chars, dict):
        raise fail(file, line, "characters: must map each name to its token, class_word and images "
                               "(Tabby: {token: <tabby>, class_word: cat, images: [refs/tabby.png]}).")
    cast = []
    for name, spec in chars.items():
        name = str(name)
        at = _line_of_key(text, name, first_line)
        if not re.fullmatch(r"[A-Z][\w'-]*(?: [A-Z][\w'-]*)*", name):
            raise fail(file, at, f"character name '{name}' must be written as the prose writes it, with a capital "
                                 "letter (e.g. Tabby).")
        if not isinstance(spec, dict):
            raise fail(file, at, f"character {name} must have token, class_word and images (key: value lines).")
        unknown = [k for k in spec if k not in CHARACTER_KEYS]
        if unknown:
            raise fail(file, at, f"character {name} has unknown key '{unknown[0]}'; use {', '.join(CHARACTER_KEYS)}.")
        for key in ("class_word", "images"):
            if not spec.get(key):
                raise fail(file, at, f"character {name} has no {key}; add it (e.g. class_word: cat, "
                                     f"images: [refs/{name.lower()}.png]).")
        images = spec["images"] if isinstance(spec["images"], list) else [spec["images"]]
        aliases = spec.get("aliases") or []
        aliases = [aliases] if isinstance(aliases, str) else [str(a) for a in aliases]
        token = str(spec.get("token") or f"<{re.sub(r'[^a-z0-9._-]+', '-', name.lower()).strip('-._')}>")
        cast.append(Member(name, token, str(spec["class_word"]), [str(i) for i in images], at, aliases,
                           spec.get("personalization")))
    return cast
