"""The persistent Dagster home under the data root (no Dagster import: plain files)."""

from pathlib import Path

from story_pipeline.config import Settings
from story_pipeline.fsutil import atomic_write_text

DAGSTER_YAML = """\
# Written by story_pipeline. Runs, materializations and sensor cursors persist here.
telemetry:
  enabled: false
nux:
  enabled: false
"""


def ensure_dagster_home(settings: Settings) -> Path:
    home = Path(settings.dagster_home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        atomic_write_text(cfg, DAGSTER_YAML)
    return home
