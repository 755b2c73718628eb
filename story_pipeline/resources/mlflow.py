import os

import dagster as dg

from story_pipeline.personalize.tracking import Tracker

from story_pipeline.resources.storage import StorageResource


class MLflowResource(dg.ConfigurableResource):
    """MLflow tracking of personalization runs. ``tracking_uri`` empty: sqlite under the data root
    (``<data>/mlflow/mlflow.db``, artifacts in ``<data>/mlflow/artifacts``); or a remote server URL.
    ``ui_url``: where `story mlflow-ui` serves it (run links in asset metadata point there)."""

    storage: StorageResource
    tracking_uri: str = os.environ.get("STORY_MLFLOW_URI", "")
    ui_url: str = os.environ.get("STORY_MLFLOW_UI", "http://127.0.0.1:5000")

    def tracker(self) -> Tracker:
        t = Tracker.for_settings(self.storage.settings(), self.tracking_uri)
        t.ui_url = self.ui_url
        return t
