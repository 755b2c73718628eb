"""The story sensor: runs for the parts of registered stories that are not current.

What is current is decided by ``status.story_status`` (the stage memos) through ``sensors/plan.py``,
the same decision `story run` makes. A run is requested once per part and signature (the inputs the
part would be computed from), so a failing run is not retried every tick and an edit is run once.
Characters run first; shots naming a character that is being learnt wait for it; the story video is
requested once every shot is current (the tick after the last shot run finished).
"""

import json

import dagster as dg

from story_pipeline.assets.stories import character_assets, shot_assets, video_assets
from story_pipeline.resources import (
    ClipIndexResource, DepthEstimatorResource, GeneratorResource, PersonalizationResource, ShotChecksResource,
    StorageResource, stage_setup,
)


def build_story_sensor(story_assets: list[dg.AssetsDefinition]) -> dg.SensorDefinition:
    """A sensor over the registered story files (the cursor keeps the signatures already requested,
    so it survives restarts). Shots or characters the loaded definitions do not know yet (added since
    the code location loaded) are reported with a reload hint instead of being run with stale partitions."""
    selections = {"character": character_assets(story_assets), "shot": shot_assets(story_assets),
                  "video": video_assets(story_assets)}
    keys: dict[str, dict[str, list[dg.AssetKey]]] = {k: {} for k in selections}  # kind -> story -> asset keys
    known: dict[str, dict[str, set[str]]] = {k: {} for k in selections}  # kind -> story -> partition keys
    for kind, assets in selections.items():
        for a in assets:
            keys[kind].setdefault(a.key.path[0], []).append(a.key)
            known[kind][a.key.path[0]] = set(a.partitions_def.get_partition_keys()) if a.partitions_def else {"-"}

    @dg.sensor(
        name="story_sensor",
        asset_selection=dg.AssetSelection.assets(*[a.key for a in story_assets])
        if story_assets else dg.AssetSelection.groups("__no_stories__"),
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Runs the characters, shots and videos of registered stories that are not current "
                    "(their story text, settings, reference images, the index or the models changed).",
    )
    def story_sensor(context: dg.SensorEvaluationContext, storage: StorageResource,
                     clip_index_store: ClipIndexResource, depth_estimator: DepthEstimatorResource,
                     generator: GeneratorResource, personalization: PersonalizationResource,
                     shot_checks: ShotChecksResource):
        from story_pipeline.errors import StoryPipelineError
        from story_pipeline.sensors.plan import story_runs
        from story_pipeline.status import story_status
        from story_pipeline.story.loading import load_story
        from story_pipeline.story.registry import registered_story_files

        asked = json.loads(context.cursor) if context.cursor else {}
        requests, notes = [], []
        files = registered_story_files(storage.settings())
        try:
            setup = stage_setup(storage, clip_index_store, depth_estimator, generator, personalization,
                                shot_checks) if files else None
        except StoryPipelineError as e:
            return dg.SkipReason(f"Stories cannot be checked: {e}")
        for path in files:
            try:
                story = load_story(path)
            except StoryPipelineError as e:
                notes.append(str(e))
                continue
            runs = story_runs(context.instance, story_status(story, setup))
            mine = asked.setdefault(story.id, {})
            todo = [("character", p) for p in runs.characters] + [("shot", p) for p in runs.shots if not p.waits_for]
            if runs.video is not None and not runs.video.waits_for and not runs.shots:
                todo.append(("video", runs.video))
            for kind, part in todo:
                have = known[kind].get(story.id)
                if have is None or (kind != "video" and part.key not in have):
                    notes.append(f"{path}: {kind} {part.key!r} is new; reload the code location (Deployment → "
                                 "Reload) to add its partitions.")
                    continue
                if mine.get(f"{kind}:{part.key}") == part.signature:
                    continue  # requested already for these inputs (running, done, or failed: see its run)
                mine[f"{kind}:{part.key}"] = part.signature
                requests.append(dg.RunRequest(
                    asset_selection=keys[kind][story.id], partition_key=None if kind == "video" else part.key,
                    tags={"story/story": story.id, f"story/{kind}": part.key, "story/reason": part.reason[:200],
                          "story/signature": part.signature}))
        for note in notes:
            context.log.warning(note)
        context.update_cursor(json.dumps(asked, sort_keys=True))
        if not requests:
            return dg.SkipReason("Every registered story is current." if not notes else notes[0])
        return requests

    return story_sensor
