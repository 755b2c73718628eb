"""Dagster resources: one small ConfigurableResource per external system."""

from .storage import StorageResource
from .lancedb import ClipIndexResource
from .depth import DepthEstimatorResource
from .generator import GeneratorResource

__all__ = ["StorageResource", "ClipIndexResource", "DepthEstimatorResource", "GeneratorResource"]
