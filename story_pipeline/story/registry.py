"""Which story files the Dagster code location builds assets for (no Dagster import).

Story files under ``<data>/stories/`` (``*.yaml`` or ``*/story.yaml``; story scripts ``*.txt`` or
``*/story.txt``, planned when loaded: ``story_pipeline/plan``) plus any registered with
``story run FILE`` (absolute paths kept in ``<data>/stories/registry.json``), so a story can stay
beside its reference images wherever the user keeps it.
"""

import json
from pathlib import Path

from story_pipeline.config import Settings
from story_pipeline.fsutil import atomic_write_text


def _registry(settings: Settings) -> Path:
    return settings.stories_dir / "registry.json"


def registered_story_files(settings: Settings) -> list[Path]:
    files: list[Path] = []
    folder = settings.stories_dir
    if folder.is_dir():
        files += sorted(p for p in folder.glob("*.yaml") if not p.name.startswith(".")
                        and not p.name.endswith(".cast.yaml"))  # a script's characters, not a story
        files += sorted(folder.glob("*/story.yaml"))
        files += sorted(p for p in folder.glob("*.txt") if not p.name.startswith("."))
        files += sorted(folder.glob("*/story.txt"))
    reg = _registry(settings)
    if reg.exists():
        try:
            files += [Path(p) for p in json.loads(reg.read_text())]
        except (json.JSONDecodeError, TypeError):
            pass  # a damaged registry only forgets registrations; `story run` rewrites it
    seen, out = set(), []
    for f in files:
        f = f.resolve()
        if f not in seen and f.exists():
            seen.add(f)
            out.append(f)
    return out


def register_story(settings: Settings, path: str | Path) -> Path:
    path = Path(path).resolve()
    reg = _registry(settings)
    current = []
    if reg.exists():
        try:
            current = list(json.loads(reg.read_text()))
        except (json.JSONDecodeError, TypeError):
            current = []
    if str(path) not in current:
        atomic_write_text(reg, json.dumps(sorted(current + [str(path)]), indent=1))
    return path
