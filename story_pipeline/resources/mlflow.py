from typing import Optional

import dagster as dg

from story_pipeline.config import Settings
from story_pipeline.resources.storage import StorageResource


class MLflowResource(dg.ConfigurableResource):
    """MLflow tracking of personalization runs. ``tracking_uri`` empty: sqlite under the data root
    (``<data>/mlflow/mlflow.db``, artifacts in ``<data>/mlflow/artifacts``); or a remote server URL.
    ``ui_url``: where `story mlflow-ui` serves it (run links in asset metadata point there). Unset:
    STORY_MLFLOW_URI / STORY_MLFLOW_UI."""

    storage: StorageResource
    tracking_uri: Optional[str] = None
    ui_url: Optional[str] = None

    def tracker(self):
        from story_pipeline.personalize.tracking import Tracker

        s = Settings()
        t = Tracker.for_settings(self.storage.settings(), s.mlflow_uri if self.tracking_uri is None else self.tracking_uri)
        t.ui_url = s.mlflow_ui if self.ui_url is None else self.ui_url
        return t
