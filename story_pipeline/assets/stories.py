"""Per-story assets, built by a factory: one asset group per story file, statically partitioned
by that story's shot ids and character names (docs/decisions/0001-story-partitions.md says why).

    <story>/story_shots, shot_retrievals, shot_depth, rendered_shots   by shot    (assets/shots.py)
    <story>/story_characters, character_timeinv                        by character (assets/characters.py)
    <story>/story_video                                                 one per story (assets/video.py)

rendered_shots depend on the characters they name (StaticPartitionMapping).
"""

import logging
from pathlib import Path

import dagster as dg

from story_pipeline.assets._story_common import group_name
from story_pipeline.assets.characters import character_asset_defs
from story_pipeline.assets.shots import shot_asset_defs
from story_pipeline.assets.video import video_asset_def
from story_pipeline.errors import StoryPipelineError

log = logging.getLogger(__name__)

CHARACTER_ASSETS = ("story_characters", "character_timeinv")  # partitioned by character
STORY_ASSETS = ("story_video",)  # one per story (not partitioned)


def build_story_assets(story_file: Path) -> list[dg.AssetsDefinition]:
    """The assets of one story file (a StoryError if the file cannot be loaded)."""
    from story_pipeline.story.loading import load_story

    story_file = Path(story_file).resolve()
    story = load_story(story_file, check_images=False)
    group = group_name(story.id)
    shots = dg.StaticPartitionsDefinition([s.id for s in story.shots])
    characters = dg.StaticPartitionsDefinition([c.name for c in story.characters]) if story.characters else None
    char_defs, char_deps = [], []
    if characters:
        char_defs = character_asset_defs(story_file, story, group, characters)
        shots_of = {c.name: {s.id for s in story.shots if c in story.characters_in(s)} for c in story.characters}
        if any(shots_of.values()):
            char_deps = [dg.AssetDep(char_defs[1], partition_mapping=dg.StaticPartitionMapping(
                {name: ids for name, ids in shots_of.items() if ids}))]
    shot_defs = shot_asset_defs(story_file, story, group, shots, char_deps)
    return shot_defs + [video_asset_def(story_file, story, group, shot_defs[-1])] + char_defs


def shot_assets(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """The story assets partitioned by shot id."""
    return [a for a in assets if a.key.path[-1] not in CHARACTER_ASSETS + STORY_ASSETS]


def video_assets(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """The story assets with one partition per story (the assembled video)."""
    return [a for a in assets if a.key.path[-1] in STORY_ASSETS]


def character_assets(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """The story assets partitioned by character name."""
    return [a for a in assets if a.key.path[-1] in CHARACTER_ASSETS]


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
