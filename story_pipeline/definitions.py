"""The Dagster code location: `dg dev` / `dagster dev -w workspace.yaml` (or `story ui`) loads this.

Corpus assets are fixed; story assets are built per story file (see assets/stories.py), so adding
a story or a shot needs a reload of the code location (Deployment → Reload, or `story run`,
which builds its own definitions in-process). Heavy libraries (torch, diffusers, LanceDB, decord)
are imported inside asset bodies, not here: every run process loads this module.
"""

import dagster as dg

from story_pipeline.assets import clip_corpus, clip_index
from story_pipeline.assets.stories import all_story_assets
from story_pipeline.config import Settings
from story_pipeline.resources import make_resources
from story_pipeline.sensors import corpus_reindex_sensor, reindex_job, reindex_schedule
from story_pipeline.sensors.stories import build_story_sensor
from story_pipeline.story.registry import registered_story_files

ASSETS = [clip_corpus, clip_index]


def make_definitions(data_root: str | None = None) -> dg.Definitions:
    resources = make_resources(data_root)
    settings = Settings()
    stories = all_story_assets(registered_story_files(resources["storage"].settings()))
    return dg.Definitions(
        assets=ASSETS + stories,
        jobs=[reindex_job],
        sensors=[corpus_reindex_sensor, build_story_sensor(stories)],
        schedules=[reindex_schedule(settings.reindex_cron)],
        resources=resources,
        # in-process: a run pays one import of torch and the models, not one per step (STORY_EXECUTOR)
        executor=dg.in_process_executor if settings.executor == "in_process" else dg.multiprocess_executor,
    )


defs = make_definitions()
