"""Screenshot pages of the Dagster UI with headless Chromium (a check for people, not a test).

    .venv/bin/python scripts/ui_screenshot.py --out data/outputs/ui  [--page /assets/clip_index]
    .venv/bin/python scripts/ui_screenshot.py --mlflow                 # the newest personalization run

Starts `dagster dev` (or, with --mlflow, the MLflow server `story mlflow-ui` runs) on 127.0.0.1 with
the project's data root, waits for it, takes one PNG per page, and stops the server. Needs Debian's
`chromium` (apt-get install chromium).
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PAGES = ["/asset-groups/corpus", "/assets/clip_corpus", "/assets/clip_index", "/automation"]


def wait_for(url: str, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception:
            time.sleep(1)
    raise SystemExit(f"The UI server did not answer at {url} within {seconds:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="data/outputs/ui")
    ap.add_argument("--port", type=int, default=3137)
    ap.add_argument("--page", action="append", help="UI path to capture (repeatable)")
    ap.add_argument("--size", default="1600,1000")
    ap.add_argument("--mlflow", action="store_true", help="screenshot the MLflow UI's newest run instead")
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("chromium is not installed: apt-get install chromium")
    if args.mlflow:
        return mlflow_pages(args, chromium)
    from story_pipeline.config import Settings
    from story_pipeline.dagster_home import ensure_dagster_home

    home = ensure_dagster_home(Settings())  # the data root's instance, the one `story ui` and `story run` use
    env = dict(os.environ, DAGSTER_HOME=str(home))
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1",
         "-p", str(args.port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        base = f"http://127.0.0.1:{args.port}"
        wait_for(base + "/server_info", 120)
        time.sleep(5)  # the code location loads after the server answers
        for page in args.page or DEFAULT_PAGES:
            shoot(chromium, base + page, out / ((page.strip("/").replace("/", "_") or "home") + ".png"), args.size)
    finally:
        stop(server)


def shoot(chromium: str, url: str, png: Path, size: str) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--window-size={size}", "--virtual-time-budget=20000",
             f"--screenshot={png.resolve()}", url],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
        )
    print(png)


def stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def mlflow_pages(args, chromium: str) -> None:
    """The experiments page, the newest run (params, metrics) and its metric chart page."""
    sys.path.insert(0, str(ROOT))
    from mlflow.tracking import MlflowClient

    from story_pipeline.cli import _settings, mlflow_command

    settings = _settings()
    client = MlflowClient(f"sqlite:///{settings.mlflow_dir / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    if not runs:
        raise SystemExit(f"no MLflow runs under {settings.mlflow_dir}: run `story demo` first")
    run = max(runs, key=lambda r: r.info.start_time)
    port = 5137 if args.port == 3137 else args.port
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    server = subprocess.Popen(mlflow_command(settings, "127.0.0.1", port), cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(base + "/health", 120)
        run_page = f"{base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
        shoot(chromium, f"{base}/#/experiments/{run.info.experiment_id}", out / "mlflow_experiment.png", args.size)
        shoot(chromium, run_page, out / "mlflow_run.png", args.size)
        shoot(chromium, run_page + "/model-metrics", out / "mlflow_run_metrics.png", args.size)
    finally:
        stop(server)


if __name__ == "__main__":
    main()
