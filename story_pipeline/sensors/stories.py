"""The story sensor: one run per story for the parts that are not current.

What is current is decided by ``status.story_status`` (the stage memos) through ``sensors/plan.py``,
the same decision `story run` makes. The parts that need a run (characters, shots, the video) go into
one run of their assets, which Dagster executes in dependency order: a character before the shots that
show it, every shot before the story video. A part is asked for once per signature (the inputs it would
be computed from), so a failing run is not retried every tick and an edit is run once.

While a backfill or run that materializes a story's assets is queued or in progress (the sensor's own,
a "Materialize all" click, `story run`), the story is left alone: its parts' signatures change as the
run learns characters and renders shots, and asking again then would compute them twice. An edit made
meanwhile is picked up on the first tick after it ends.
"""

import json

import dagster as dg

from story_pipeline.assets.stories import part_keys, run_keys, story_of
from story_pipeline.resources import (
    ClipIndexResource, DepthEstimatorResource, GeneratorResource, PersonalizationResource, ShotChecksResource,
    StorageResource, stage_setup,
)


def build_story_sensor(story_assets: list[dg.AssetsDefinition]) -> dg.SensorDefinition:
    """A sensor over the registered story files (the cursor keeps the signatures already requested,
    so it survives restarts). Shots or characters the loaded definitions do not know yet (added since
    the code location loaded) are reported with a reload hint instead of being run without assets."""
    known = {a.key for a in story_assets}

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
        from story_pipeline.story_file import load_story
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
            new, missing = [], []
            for part in runs.parts:
                keys = part_keys(story.id, part.kind, part.key)
                if not known.issuperset(keys):
                    missing.append(f"{part.kind} {part.key!r}")
                elif asked.get(story.id, {}).get(f"{part.kind}:{part.key}") != part.signature:
                    new.append(part)
            if missing:
                notes.append(f"{path}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} new; reload the "
                             "code location (Deployment → Reload) to add its assets.")
            if not new:
                continue
            mine = asked.setdefault(story.id, {})
            for part in new:
                mine[f"{part.kind}:{part.key}"] = part.signature
            if runs.video is not None and runs.video not in new and not missing:
                new.append(runs.video)  # an edited shot is not done until the video shows it
            requests.append(dg.RunRequest(
                asset_selection=run_keys(story, [k for part in new for k in part_keys(story.id, part.kind, part.key)]),
                tags={"story/story": story.id,
                      "story/parts": " ".join(f"{part.kind}:{part.key}" for part in new)[:200]}))
        for note in notes:
            context.log.warning(note)
        context.update_cursor(json.dumps(asked, sort_keys=True))
        if not requests:
            if waiting:
                notes.append(f"Waiting for the run in progress of {', '.join(waiting)}.")
            return dg.SkipReason(" ".join(notes) if notes else "Every registered story is current.")
        return requests

    return story_sensor


def stories_in_progress(instance: dg.DagsterInstance, backfills: bool = True) -> set[str]:
    """Ids of the stories with a run (and, with ``backfills``, a backfill) that is queued or in progress:
    by the assets it selects (a click in the UI), or its ``story/story`` tag (the sensor's runs and
    `story run`'s in-process run, whose record lists no asset selection)."""
    from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus
    from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES

    runs = instance.get_runs(dg.RunsFilter(statuses=NOT_FINISHED_STATUSES))
    keys = [k for r in runs for k in (r.asset_selection or [])]
    tagged = {r.tags["story/story"] for r in runs if "story/story" in r.tags}
    if backfills:
        active = BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING,
                                             BulkActionStatus.FAILING])
        keys += [k for b in instance.get_backfills(filters=active) for k in (b.asset_selection or [])]
    return ({story_of(k) for k in keys} | tagged) - {None}
