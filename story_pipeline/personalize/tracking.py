"""MLflow tracking of personalization runs (sqlite backend + an artifact folder under the data root).

    from story_pipeline.personalize.tracking import Tracker
    with Tracker.for_settings(settings).run("tabby timeinv_lora", tags={...}, params={...}) as run:
        run.log_metric("loss", 0.12, step=3)
        run.log_artifact(path)
    run.url, run.run_id, run.local_dir

A run that raises (or is interrupted with Ctrl-C / SIGTERM) ends FAILED. A process killed with
SIGKILL cannot end its run, so every new run first marks RUNNING runs whose process is gone
(``story.pid`` + ``story.host`` tags) as FAILED. When MLflow cannot be reached or written, training
goes on: a warning is printed once and everything is recorded in ``run.local_dir`` (metrics.jsonl,
params.json, artifacts) instead.
"""

import contextlib
import json
import os
import shutil
import socket
import warnings
from pathlib import Path

from story_pipeline.fsutil import atomic_write_text

EXPERIMENT = "personalization"
# MLflow 3 opens an experiment on its GenAI "Traces" page unless it knows it holds training runs.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Run:
    def __init__(self, tracker: "Tracker", run_id: str | None, local_dir: Path):
        self.tracker, self.run_id, self.local_dir = tracker, run_id, local_dir
        self.url = tracker.run_url(run_id) if run_id else None

    def _mlflow(self, call):
        if self.run_id is None:
            return
        try:
            call()
        except Exception as e:  # tracking must never stop training
            self.tracker.warn(e)
            self.run_id = None

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        with open(self.local_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"key": key, "value": float(value), "step": step}) + "\n")
        self._mlflow(lambda: self.tracker.client.log_metric(self.run_id, key, float(value), step=step or 0))

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        for k, v in metrics.items():
            self.log_metric(k, v, step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        dest = self.local_dir / "artifacts" / (artifact_path or "")
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest / Path(path).name)
        self._mlflow(lambda: self.tracker.client.log_artifact(self.run_id, str(path), artifact_path))


class Tracker:
    def __init__(self, tracking_uri: str, artifact_root: Path, local_root: Path, experiment: str = EXPERIMENT,
                 ui_url: str = "http://127.0.0.1:5000"):
        self.tracking_uri, self.artifact_root, self.local_root = tracking_uri, Path(artifact_root), Path(local_root)
        self.experiment, self.ui_url = experiment, ui_url
        self._client, self._experiment_id, self._warned = None, None, False

    @classmethod
    def for_settings(cls, settings, tracking_uri: str = "") -> "Tracker":
        d = Path(settings.mlflow_dir)
        return cls(tracking_uri or f"sqlite:///{d / 'mlflow.db'}", d / "artifacts", d / "local")

    def warn(self, e: Exception) -> None:
        if not self._warned:
            warnings.warn(f"MLflow at {self.tracking_uri} is not usable ({str(e).splitlines()[0][:160]}); training "
                          f"goes on and records the run under {self.local_root} instead.", stacklevel=3)
            self._warned = True

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            if self.tracking_uri.startswith("sqlite:///"):
                Path(self.tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                self.artifact_root.mkdir(parents=True, exist_ok=True)
                self._experiment_id = self.client.create_experiment(
                    self.experiment, artifact_location=self.artifact_root.resolve().as_uri(), tags=EXPERIMENT_TAGS)
            else:
                self._experiment_id = exp.experiment_id
                for k, v in EXPERIMENT_TAGS.items():
                    if exp.tags.get(k) != v:
                        self.client.set_experiment_tag(self._experiment_id, k, v)
                if self.tracking_uri.startswith("sqlite:///"):
                    reroot_artifacts(Path(self.tracking_uri[len("sqlite:///"):]), self.artifact_root)
        return self._experiment_id

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_url}/#/experiments/{self._experiment_id}/runs/{run_id}"

    def reap_dead_runs(self) -> list[str]:
        """Mark RUNNING runs of this host whose process no longer exists as FAILED. -> their ids."""
        ended = []
        host = socket.gethostname()
        for r in self.client.search_runs([self.experiment_id()], "attributes.status = 'RUNNING'"):
            pid, rhost = r.data.tags.get("story.pid"), r.data.tags.get("story.host")
            if pid and rhost == host and not _alive(int(pid)):
                self.client.set_terminated(r.info.run_id, status="FAILED")
                ended.append(r.info.run_id)
        return ended

    @contextlib.contextmanager
    def run(self, name: str, tags: dict | None = None, params: dict | None = None):
        local = self.local_root / name.replace("/", "_").replace(" ", "_")
        local.mkdir(parents=True, exist_ok=True)
        (local / "metrics.jsonl").unlink(missing_ok=True)
        atomic_write_text(local / "params.json", json.dumps(params or {}, indent=1, default=str))
        run_id = None
        try:
            self.reap_dead_runs()
            all_tags = {"story.pid": str(os.getpid()), "story.host": socket.gethostname(), **(tags or {})}
            run_id = self.client.create_run(self.experiment_id(), run_name=name, tags=all_tags).info.run_id
            for k, v in (params or {}).items():
                self.client.log_param(run_id, k, str(v)[:500])
        except Exception as e:
            self.warn(e)
            run_id = None
        run = Run(self, run_id, local)
        status = "FAILED"
        try:
            yield run
            status = "FINISHED"
        finally:  # exceptions, KeyboardInterrupt and SystemExit (SIGTERM handlers) end the run FAILED
            run._mlflow(lambda: self.client.set_terminated(run.run_id, status=status))
            atomic_write_text(local / "status", status)


def reroot_artifacts(db: Path, artifact_root: Path) -> int:
    """Point the experiments' and runs' artifact URIs of the sqlite store ``db`` at ``artifact_root`` when
    they name another folder's ``.../mlflow/artifacts`` (the data root was moved or copied). MLflow keeps
    absolute ``file://`` URIs and has no call to change them. -> rows changed."""
    import sqlite3

    new = Path(artifact_root).resolve().as_uri()
    changed = 0
    with contextlib.closing(sqlite3.connect(str(db))) as con, con:
        for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
            rows = con.execute(f"SELECT rowid, {column} FROM {table} WHERE {column} LIKE 'file://%'").fetchall()
            for rowid, uri in rows:
                head, sep, tail = uri.partition("/mlflow/artifacts")
                if sep and head + sep != new and not uri.startswith(new):
                    con.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (new + tail, rowid))
                    changed += 1
    return changed
