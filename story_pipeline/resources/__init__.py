"""Dagster resources: one small ConfigurableResource per external system."""

from .storage import StorageResource
from .lancedb import ClipIndexResource
from .depth import DepthEstimatorResource
from .generator import GeneratorResource
from .mlflow import MLflowResource
from .personalization import PersonalizationResource
from .checks import ShotChecksResource

__all__ = ["StorageResource", "ClipIndexResource", "DepthEstimatorResource", "GeneratorResource", "MLflowResource",
           "PersonalizationResource", "ShotChecksResource"]
