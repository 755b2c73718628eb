"""Sensors and schedules: reindex the corpus when its folder changes, and nightly."""

from story_pipeline.sensors.corpus import corpus_reindex_sensor, nightly_reindex_schedule, reindex_job

__all__ = ["corpus_reindex_sensor", "nightly_reindex_schedule", "reindex_job"]
