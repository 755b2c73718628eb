import os
from pathlib import Path

import dagster as dg

from story_pipeline.config import Settings


class StorageResource(dg.ConfigurableResource):
    """Where runtime state lives: the data root (corpus, LanceDB, artifacts, outputs)."""

    data_root: str = os.environ.get("STORY_DATA_ROOT", "data")

    def settings(self) -> Settings:
        return Settings(data_root=Path(self.data_root).resolve())
