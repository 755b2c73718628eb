"""Sensors and schedules: reindex the corpus when its folder changes, and nightly; run stale story parts."""

from story_pipeline.sensors.corpus import corpus_reindex_sensor, reindex_job, reindex_schedule

__all__ = ["corpus_reindex_sensor", "reindex_job", "reindex_schedule"]
