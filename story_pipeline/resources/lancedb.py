import dagster as dg

from story_pipeline.resources.storage import StorageResource


class ClipIndexResource(dg.ConfigurableResource):
    """The LanceDB clip index. ``uri`` may be a local folder or object storage (``s3://…``);
    empty means ``<data_root>/lancedb``."""

    storage: StorageResource
    uri: str = ""
    table_name: str = "clips"

    def open(self):
        from story_pipeline.corpus.index import ClipIndex

        settings = self.storage.settings()
        return ClipIndex(
            self.uri or str(settings.lancedb_dir),
            table_name=self.table_name,
            ann_threshold=settings.ann_threshold,
        )
