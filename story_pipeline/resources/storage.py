from pathlib import Path
from typing import Optional

import dagster as dg

from story_pipeline.config import Settings


class StorageResource(dg.ConfigurableResource):
    """Where runtime state lives: the data root (corpus, LanceDB, artifacts, outputs).
    ``data_root`` empty: ``Settings`` (STORY_DATA_ROOT, default ./data), read at run time."""

    data_root: Optional[str] = None

    def settings(self) -> Settings:
        root = self.data_root if self.data_root else Settings().data_root
        return Settings(data_root=Path(root).resolve())
