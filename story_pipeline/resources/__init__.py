"""Dagster resources: one small ConfigurableResource per external system."""

from .storage import StorageResource
from .lancedb import ClipIndexResource

__all__ = ["StorageResource", "ClipIndexResource"]
