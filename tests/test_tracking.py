"""MLflow tracking of personalization on a real sqlite store: the experiment opens on its training runs,
and a moved or copied data root shows its own artifacts (MLflow stores absolute file URIs)."""

import shutil
from pathlib import Path

from story_pipeline.config import Settings
from story_pipeline.personalize.tracking import Tracker, reroot_artifacts


def test_a_copied_data_root_points_mlflow_at_its_own_artifacts(tmp_path):
    first = Settings(data_root=tmp_path / "first")
    tracker = Tracker.for_settings(first)
    sample = tmp_path / "sample.gif"
    sample.write_bytes(b"GIF89a")
    with tracker.run("story/tabby/timeinv_lora", params={"steps": 2}) as run:
        run.log_metric("loss", 0.5, 1)
        run.log_artifact(sample, "samples")
    run_id = run.run_id
    experiment = tracker.client.get_experiment(tracker.experiment_id())
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    shutil.copytree(first.data_root, tmp_path / "second")
    shutil.rmtree(first.data_root)  # moved, not copied: the old paths are gone
    second = Settings(data_root=tmp_path / "second")
    again = Tracker.for_settings(second)
    again.experiment_id()  # first use re-roots the store's artifact URIs
    uri = again.client.get_run(run_id).info.artifact_uri
    assert uri.startswith((tmp_path / "second" / "mlflow" / "artifacts").as_uri()), uri
    assert [f.path for f in again.client.list_artifacts(run_id, "samples")] == ["samples/sample.gif"]
    assert Path(again.client.download_artifacts(run_id, "samples/sample.gif", str(tmp_path))).read_bytes() == b"GIF89a"
    assert reroot_artifacts(second.mlflow_dir / "mlflow.db", second.mlflow_dir / "artifacts") == 0  # idempotent
