"""The Dagster code location: `dagster dev -w workspace.yaml` (or `story ui`) loads this."""

import dagster as dg

from story_pipeline.assets import clip_corpus, clip_index
from story_pipeline.resources import ClipIndexResource, StorageResource
from story_pipeline.sensors import corpus_reindex_sensor, nightly_reindex_schedule, reindex_job

ASSETS = [clip_corpus, clip_index]


def make_resources(data_root: str | None = None) -> dict:
    storage = StorageResource(data_root=data_root) if data_root else StorageResource()
    return {"storage": storage, "clip_index_store": ClipIndexResource(storage=storage)}


defs = dg.Definitions(
    assets=ASSETS,
    jobs=[reindex_job],
    sensors=[corpus_reindex_sensor],
    schedules=[nightly_reindex_schedule],
    resources=make_resources(),
)
