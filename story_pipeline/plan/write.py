"""Key plots -> a story: the story-file data, the validated ``Story``, and the YAML a person edits.

Each plot becomes one shot: ``id`` from the actor and the verb ("tabby-leap"), ``prompt`` = "a
<token> <motion phrase> <place>" (the place said last, so the default retrieval query drops it and
searches the motion: "a cat leaps into the air"). The query is written only when that default would
not be the motion phrase; the YAML shows the default as a comment either way.
"""

import json
import os
import re
from pathlib import Path

import yaml

from story_pipeline.config import StoryLimits
from story_pipeline.plan.script import Script
from story_pipeline.plan.words import article
from story_pipeline.story.spec import Story
from story_pipeline.story.validation import default_story_id, pydantic_problems, semantic_problems, story_error

DEFAULTS = {"frames": 16, "fps": 8, "resolution": 64}  # 2-s shots at the toy models' size


def shot_entries(plots: list) -> list[dict]:
    """One shot dict per plot (``_line`` and ``_source`` say where it came from)."""
    shots, ids = [], {}
    for p in plots:
        who = " and ".join(f"{article(m.token[1:])} {m.token}".replace("an <", "a <") for m in p.actors)
        prompt = (f"{p.place}, {who} {p.motion}" if p.place_first and p.place
                  else " ".join(x for x in (who, p.motion, p.place) if x))
        base = re.sub(r"[^a-z0-9]+", "-", f"{p.actors[0].token[1:-1]}-{p.verb}").strip("-")[:60] or "shot"
        ids[base] = ids.get(base, 0) + 1
        sid = base if ids[base] == 1 else f"{base}-{ids[base]}"
        shot = {"id": sid, "prompt": prompt, "_line": p.line, "_source": " ".join(p.source.split())}
        motion_only = " ".join(x for x in (who, p.motion) if x)
        shot["_motion"] = motion_only
        shot["_motion_verb"] = p.motion.split(" ", 1)[0]
        shots.append(shot)
    return shots


def story_data(script: Script, shots: list[dict]) -> dict:
    """The story file's data (keys as in docs/story_format.md)."""
    data = {"id": script.header.get("id") or _slug(default_story_id(script.path))}
    if script.header.get("title"):
        data["title"] = str(script.header["title"])
    data["defaults"] = {**DEFAULTS, **(script.header.get("defaults") or {})}
    data["characters"] = []
    for m in script.cast:
        c = {"token": m.token, "class_word": m.class_word, "images": m.images}
        if m.personalization:
            c["personalization"] = m.personalization
        data["characters"].append(c)
    data["shots"] = [{k: v for k, v in s.items() if not k.startswith("_")} for s in shots]
    return data


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_")[:64] or "story"


def with_queries(story: Story, shots: list[dict], data: dict) -> None:
    """Write ``query:`` on the shots whose default query is not their motion phrase (in place)."""
    for s, d in zip(shots, data["shots"]):
        verb = s.get("_motion_verb")  # the query keeps the motion's verb: the default suffices
        if verb and "query" not in d and verb not in story.shot_query(story.shot(s["id"])).split():
            d["query"] = s["_motion"]


def validate(script: Script, data: dict, shots: list[dict], limits: StoryLimits, check_images: bool) -> Story:
    """``data`` as a Story whose files are relative to the script's folder; a problem is one sentence
    naming the script's line (a character's header line, a shot's sentence)."""
    from pydantic import ValidationError

    lines = {(): 1}
    header_file = script.file if script.header_source == "header" else str(script.path.with_name(script.header_source))
    for i, m in enumerate(script.cast):
        lines[("characters", i)] = m.line
    for i, s in enumerate(shots):
        lines[("shots", i)] = s["_line"]
    try:
        story = Story.model_validate(data, context={"limits": limits})
    except ValidationError as e:
        problems = pydantic_problems(e, lines)
        first = min(problems, key=lambda p: p.line)
        raise story_error(header_file if first.field and first.field.startswith("characters") else script.file,
                     problems) from None
    story._source = script.path
    if problems := semantic_problems(story, lines, limits, check_images):
        first = min(problems, key=lambda p: p.line)
        raise story_error(header_file if first.field and first.field.startswith("characters") else script.file,
                          problems)
    return story


def _scalar(value) -> str:
    """A YAML scalar: plain when it reads back as itself, else double-quoted (JSON strings are YAML)."""
    if isinstance(value, str):
        try:
            plain_ok = yaml.safe_load(value) == value and not re.search(r":\s|\s#|^[\s'\"&*!|>%@`{\[-]", value)
        except yaml.YAMLError:
            plain_ok = False
        return value if plain_ok and value.strip() == value else json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    return json.dumps(value)


def story_yaml(script: Script, data: dict, shots: list[dict], story: Story, planner: str,
               out: Path | None = None) -> str:
    """The story file, commented: where each shot came from and its retrieval query. Image paths are
    made relative to ``out``'s folder (default: the script's)."""
    folder = (out or script.path).resolve().parent
    lines = [f"# Planned from {script.path.name} by `story plan` ({planner} planner): one shot per key plot.",
             "# Edit freely: prompts, queries, settings; re-planning the script overwrites this file.",
             f"id: {_scalar(data['id'])}"]
    if "title" in data:
        lines.append(f"title: {_scalar(data['title'])}")
    lines += ["", "defaults:                 # every shot's settings unless the shot sets its own"]
    for k, v in data["defaults"].items():
        lines.append(f"  {k}: {_scalar(v)}")
    lines += ["", "characters:"]
    for m, c in zip(script.cast, data["characters"]):
        images = [os.path.relpath(script.path.parent / i, folder) for i in c["images"]]
        lines.append(f"  - token: {_scalar(c['token'])}" + " " * max(1, 14 - len(c["token"])) + f"# {m.name}")
        lines.append(f"    class_word: {_scalar(c['class_word'])}")
        lines.append(f"    images: {_scalar(images)}")
        if "personalization" in c:
            lines.append(f"    personalization: {_scalar(c['personalization'])}")
    lines += ["", "shots:"]
    for s, d in zip(shots, data["shots"]):
        shot = story.shot(d["id"])
        lines.append(f"  # {script.path.name}:{s['_line']} \"{s['_source']}\"")
        lines.append(f"  - id: {_scalar(d['id'])}")
        lines.append(f"    prompt: {_scalar(d['prompt'])}")
        if "query" in d:
            lines.append(f"    query: {_scalar(d['query'])}   # retrieval text (tokens -> class words)")
        else:
            lines.append(f"    # query (default): {story.shot_query(shot)}")
        for k, v in d.items():
            if k not in ("id", "prompt", "query"):
                lines.append(f"    {k}: {_scalar(v)}")
    return "\n".join(lines) + "\n"
