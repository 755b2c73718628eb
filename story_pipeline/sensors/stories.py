"""The story sensor: one ordered backfill per story for the parts that are not current.

What is current is decided by ``status.story_status`` (the stage memos) through ``sensors/plan.py``,
the same decision `story run` makes. The parts that need a run (characters, shots, the video) go into
one backfill, which Dagster runs in dependency order: a character before the shots that show it,
every shot before the story video. A part is asked for once per signature (the inputs it would be
computed from), so a failing run is not retried every tick and an edit is run once.

While a backfill or run that materializes a story's assets is queued or in progress (the sensor's own,
a "Materialize all" click, `story run`), the story is left alone: its parts' signatures change as the
run learns characters and renders shots, and asking again then would compute them twice. An edit made
meanwhile is picked up on the first tick after it ends.
"""

import json

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset  # a sensor's backfill

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
        minimum_interval_seconds=10,  # an edit starts its run within ~10-15 s
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
        requests, notes, seen, waiting = [], [], {}, []
        busy = stories_in_progress(context.instance)
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
            if story.id in seen:
                notes.append(f"{path}: its story id {story.id!r} is already used by {seen[story.id]}; give one of "
                             "them another `id:` (or file name).")
                continue
            seen[story.id] = path
            if story.id in busy:
                waiting.append(story.id)
                continue
            runs = story_runs(context.instance, story_status(story, setup))
            parts = [("character", p) for p in runs.characters] + [("shot", p) for p in runs.shots]
            parts += [("video", runs.video)] if runs.video is not None else []
            new, missing = [], []
            for kind, part in parts:
                have = known[kind].get(story.id)
                if have is None or (kind != "video" and part.key not in have):
                    missing.append(f"{kind} {part.key!r}")
                elif asked.get(story.id, {}).get(f"{kind}:{part.key}") != part.signature:
                    new.append((kind, part))
            if missing:
                notes.append(f"{path}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} new; reload the "
                             "code location (Deployment → Reload) to add the partitions.")
            if not new:
                continue
            mine = asked.setdefault(story.id, {})
            for kind, part in new:
                mine[f"{kind}:{part.key}"] = part.signature
            requests.append(dg.RunRequest.for_asset_graph_subset(_subset(story.id, new), tags={
                "story/story": story.id,
                "story/parts": " ".join(f"{kind}:{part.key}" for kind, part in new)[:200]}))
        for note in notes:
            context.log.warning(note)
        context.update_cursor(json.dumps(asked, sort_keys=True))
        if not requests:
            if waiting:
                notes.append(f"Waiting for the run in progress of {', '.join(waiting)}.")
            return dg.SkipReason(" ".join(notes) if notes else "Every registered story is current.")
        return requests

    def _subset(story_id: str, parts: list) -> AssetGraphSubset:
        """The story's assets of ``parts`` (kind, status.Part): their partitions, and the video if asked for."""
        by_kind: dict[str, list[str]] = {}
        for kind, part in parts:
            by_kind.setdefault(kind, []).append(part.key)
        subsets = {}
        for kind in ("character", "shot"):
            for a in selections[kind]:
                if a.key.path[0] == story_id and by_kind.get(kind):
                    subsets[a.key] = a.partitions_def.subset_with_partition_keys(by_kind[kind])
        video = set(keys["video"].get(story_id, [])) if "video" in by_kind else set()
        return AssetGraphSubset(partitions_subsets_by_asset_key=subsets, non_partitioned_asset_keys=video)

    return story_sensor


def stories_in_progress(instance: dg.DagsterInstance, backfills: bool = True) -> set[str]:
    """Ids of the stories with a run (and, with ``backfills``, a backfill) that is queued or in progress
    (story assets are keyed ``[story_id, name]``)."""
    from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus
    from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES

    keys = [k for r in instance.get_runs(dg.RunsFilter(statuses=NOT_FINISHED_STATUSES))
            for k in (r.asset_selection or [])]
    if backfills:
        active = BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING,
                                             BulkActionStatus.FAILING])
        keys += [k for b in instance.get_backfills(filters=active) for k in (b.asset_selection or [])]
    return {k.path[0] for k in keys if len(k.path) == 2}
