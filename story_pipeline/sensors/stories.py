import json

import dagster as dg

from story_pipeline.errors import StoryPipelineError
from story_pipeline.resources import StorageResource
from story_pipeline.story import load_story, shot_content_hash
from story_pipeline.story_registry import registered_story_files


def build_story_sensor(story_assets: list[dg.AssetsDefinition]) -> dg.SensorDefinition:
    """A sensor over the story files: one run per shot whose content hash changed (or that was
    never materialized), targeting only that story's shot assets for that shot's partition.

    The cursor maps story file -> {shot id: content hash}, so it survives restarts. Shots the
    loaded definitions do not know yet (a story or shot added since the code location loaded)
    are reported with a reload hint instead of being run with stale partitions."""
    keys_by_story: dict[str, list[dg.AssetKey]] = {}
    shots_by_story: dict[str, set[str]] = {}
    for a in story_assets:
        sid = a.key.path[0]
        keys_by_story.setdefault(sid, []).append(a.key)
        shots_by_story[sid] = set(a.partitions_def.get_partition_keys())

    @dg.sensor(
        name="story_sensor",
        asset_selection=dg.AssetSelection.assets(*[k for ks in keys_by_story.values() for k in ks])
        if keys_by_story else dg.AssetSelection.groups("__no_stories__"),
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Runs the shot assets of shots whose story text, settings or character images changed.",
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
            hashes = {s.id: shot_content_hash(story, s) for s in story.shots}
            new[str(path)] = hashes
            known = shots_by_story.get(story.id)
            if known is None or not set(hashes) <= known:
                notes.append(f"{path}: shots {sorted(set(hashes) - (known or set()))} are new; reload the code "
                             "location (Deployment → Reload) to add their partitions.")
            previous = old.get(str(path))
            done = set()
            if previous is None and known:
                done = context.instance.get_materialized_partitions(keys_by_story[story.id][-1])
            for shot_id, digest in hashes.items():
                if not known or shot_id not in known:
                    continue
                changed = previous.get(shot_id) != digest if previous is not None else shot_id not in done
                if changed:
                    requests.append(dg.RunRequest(
                        asset_selection=keys_by_story[story.id], partition_key=shot_id,
                        tags={"story/story": story.id, "story/shot": shot_id, "story/content_hash": digest[:16]},
                    ))
        for note in notes:
            context.log.warning(note)
        context.update_cursor(json.dumps(new, sort_keys=True))
        if not requests:
            return dg.SkipReason("No shot changed." + (f" {notes[0]}" if notes else ""))
        return requests

    return story_sensor
