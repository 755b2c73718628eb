"""The persistent Dagster home under the data root and its instance configuration (no Dagster import:
plain files). `story ui`, `story run` and the sensors' runs share it."""

from pathlib import Path

from story_pipeline.config import Settings
from story_pipeline.fsutil import atomic_write_text

MARKER = "# Written by story_pipeline"


def dagster_yaml(settings: Settings) -> str:
    """The instance configuration: a run queue and a limit on the model_heavy pool suited to the machine."""
    return f"""\
{MARKER} from its settings; rewritten when they change. Delete this line to keep your own edits.
# Runs, materializations and sensor cursors persist here.
telemetry:
  enabled: false
nux:
  enabled: false
concurrency:
  runs:
    max_concurrent_runs: {settings.max_concurrent_runs}  # STORY_MAX_CONCURRENT_RUNS: queued runs start when a slot frees
  pools:
    default_limit: {settings.model_heavy_limit}  # STORY_MODEL_HEAVY_LIMIT: steps of the model_heavy pool at once (a GPU box: one per GPU)
"""


def ensure_dagster_home(settings: Settings) -> Path:
    home = Path(settings.dagster_home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    text = dagster_yaml(settings)
    if not cfg.exists() or (cfg.read_text().startswith(MARKER) and cfg.read_text() != text):
        atomic_write_text(cfg, text)
    return home
