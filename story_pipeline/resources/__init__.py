"""Dagster resources: one small ConfigurableResource per external system."""

from story_pipeline.resources.storage import StorageResource
from story_pipeline.resources.lancedb import ClipIndexResource
from story_pipeline.resources.depth import DepthEstimatorResource
from story_pipeline.resources.generator import GeneratorResource
from story_pipeline.resources.mlflow import MLflowResource
from story_pipeline.resources.personalization import PersonalizationResource
from story_pipeline.resources.checks import ShotChecksResource

__all__ = ["StorageResource", "ClipIndexResource", "DepthEstimatorResource", "GeneratorResource", "MLflowResource",
           "PersonalizationResource", "ShotChecksResource"]
