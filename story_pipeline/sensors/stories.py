import json

import dagster as dg

from story_pipeline.errors import StoryPipelineError
from story_pipeline.resources import StorageResource
from story_pipeline.assets.stories import character_assets, shot_assets
from story_pipeline.story.spec import character_content_hash, shot_content_hash
from story_pipeline.story.loading import load_story
from story_pipeline.story.registry import registered_story_files


def build_story_sensor(story_assets: list[dg.AssetsDefinition]) -> dg.SensorDefinition:
    """A sensor over the story files: one run per shot (character) whose content hash changed or
    that was never materialized, targeting only that story's shot (character) assets for that
    partition.

    The cursor maps story file -> {"shots": {id: hash}, "characters": {name: hash}}, so it
    survives restarts. Shots or characters the loaded definitions do not know yet (added since
    the code location loaded) are reported with a reload hint instead of being run with stale
    partitions."""
    kinds = {"shots": shot_assets(story_assets), "characters": character_assets(story_assets)}
    keys: dict[str, dict[str, list[dg.AssetKey]]] = {k: {} for k in kinds}  # kind -> story -> keys
    known: dict[str, dict[str, set[str]]] = {k: {} for k in kinds}  # kind -> story -> partition keys
    for kind, assets in kinds.items():
        for a in assets:
            keys[kind].setdefault(a.key.path[0], []).append(a.key)
            known[kind][a.key.path[0]] = set(a.partitions_def.get_partition_keys())

    @dg.sensor(
        name="story_sensor",
        asset_selection=dg.AssetSelection.assets(*[a.key for a in story_assets])
        if story_assets else dg.AssetSelection.groups("__no_stories__"),
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Runs the shot (character) assets of shots (characters) whose story text, settings or "
                    "reference images changed.",
    )
    def story_sensor(context: dg.SensorEvaluationContext, storage: StorageResource):
        old = json.loads(context.cursor) if context.cursor else {}
        new, requests, notes = {}, [], []
        for path in registered_story_files(storage.settings()):
            try:
                story = load_story(path)
            except StoryPipelineError as e:
                notes.append(str(e))
                if str(path) in old:
                    new[str(path)] = old[str(path)]  # keep the last good state; retry next tick
                continue
            hashes = {"shots": {s.id: shot_content_hash(story, s) for s in story.shots},
                      "characters": {c.name: character_content_hash(story, c) for c in story.characters}}
            new[str(path)] = hashes
            previous = old.get(str(path))
            for kind, current in hashes.items():
                have = known[kind].get(story.id)
                if current and (have is None or not set(current) <= have):
                    notes.append(f"{path}: {kind} {sorted(set(current) - (have or set()))} are new; reload the "
                                 "code location (Deployment → Reload) to add their partitions.")
                if not have:
                    continue
                before = previous.get(kind) if isinstance(previous, dict) else None
                done = (context.instance.get_materialized_partitions(keys[kind][story.id][-1])
                        if before is None else set())
                for key, digest in current.items():
                    if key not in have:
                        continue
                    if (before.get(key) != digest) if before is not None else key not in done:
                        requests.append(dg.RunRequest(
                            asset_selection=keys[kind][story.id], partition_key=key,
                            tags={"story/story": story.id, f"story/{kind[:-1]}": key,
                                  "story/content_hash": digest[:16]}))
        for note in notes:
            context.log.warning(note)
        context.update_cursor(json.dumps(new, sort_keys=True))
        if not requests:
            return dg.SkipReason("No shot or character changed." + (f" {notes[0]}" if notes else ""))
        return requests

    return story_sensor
