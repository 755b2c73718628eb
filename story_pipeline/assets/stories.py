"""Per-story assets, built by a factory: one asset group per story file, one asset per stage of each
shot and character (docs/decisions/0003-story-assets-per-shot.md says why).

    <story>/shots/<shot>_spec, _retrieval, _depth, _render   (assets/shots.py)
    <story>/characters/<name>_references, _timeinv            (assets/characters.py)
    <story>/story_video                                           (assets/video.py)
    <story>/story_plan        a story script's planned shots, upstream of every spec (assets/plan.py)

A shot's render depends on its depth and on the timeinv of every character it names; the video on
every render. "Materialize all" on the group is one run; an edited shot is one run of its stages and
the video.
"""

import logging
from pathlib import Path

import dagster as dg

from story_pipeline.assets._story_common import character_key, group_name, shot_key, video_key
from story_pipeline.assets.characters import character_asset_defs
from story_pipeline.assets.plan import plan_asset_def, plan_key
from story_pipeline.assets.shots import shot_asset_defs
from story_pipeline.assets.video import video_asset_def
from story_pipeline.errors import StoryPipelineError
from story_pipeline.plan.script import is_script

log = logging.getLogger(__name__)

SHOT_STAGES = ("spec", "retrieval", "depth", "render")
CHARACTER_STAGES = ("references", "timeinv")


def build_story_assets(story_file: Path) -> list[dg.AssetsDefinition]:
    """The assets of one story file (a StoryError if the file cannot be loaded)."""
    from story_pipeline.story_file import load_story

    story_file = Path(story_file).resolve()
    story = load_story(story_file, check_images=False)  # a script (.txt) is planned here, in memory
    group = group_name(story.id)
    plan = [plan_asset_def(story_file, story, group)] if is_script(story_file) else []
    char_defs = {c.name: character_asset_defs(story_file, story, group, c) for c in story.characters}
    renders = []
    shot_defs = []
    for shot in story.shots:
        timeinv = [char_defs[c.name][1] for c in story.characters_in(shot)]
        defs = shot_asset_defs(story_file, story, group, shot, timeinv, plan)
        shot_defs += defs
        renders.append(defs[-1])
    chars = [a for defs in char_defs.values() for a in defs]
    return shot_defs + [video_asset_def(story_file, story, group, renders)] + chars + plan


def run_keys(story, keys: list[dg.AssetKey]) -> list[dg.AssetKey]:
    """The asset keys of a run of ``story``'s parts: for a story script with shots among them, its
    story_plan first (the record of the plan follows the script)."""
    shots = any(len(k.path) == 3 and k.path[1] == "shots" for k in keys)
    return ([plan_key(story.id)] if shots and story.source is not None and is_script(story.source) else []) + keys


def part_keys(story_id: str, kind: str, key: str) -> list[dg.AssetKey]:
    """The asset keys that make one part of a story (``status.Part``: kind "character", "shot" or
    "video", key its name / shot id / the story id), in dependency order."""
    if kind == "character":
        return [character_key(story_id, key, s) for s in CHARACTER_STAGES]
    if kind == "shot":
        return [shot_key(story_id, key, s) for s in SHOT_STAGES]
    return [video_key(story_id)]


def story_of(key: dg.AssetKey) -> str | None:
    """The story id of a story asset key (None for the corpus assets)."""
    return key.path[0] if len(key.path) >= 2 else None


def all_story_assets(story_files: list[Path]) -> list[dg.AssetsDefinition]:
    """Assets for every loadable story; a broken or duplicate story is skipped with a warning
    (the code location must still load; `story validate FILE` shows the problem)."""
    assets, seen = [], {}
    for f in story_files:
        try:
            defs = build_story_assets(f)
        except StoryPipelineError as e:  # one bad story file must not hide the others
            log.warning("Skipping story %s: %s", f, e)
            continue
        sid = defs[0].key.path[0]
        if sid in seen:
            log.warning("Skipping story %s: its id %r is already used by %s", f, sid, seen[sid])
            continue
        seen[sid] = f
        assets += defs
    return assets
