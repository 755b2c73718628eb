"""The Dagster UI as a person starts it: `story ui` (which runs `dg dev` from the project's [tool.dg]
configuration) serves on 127.0.0.1 and stops, with every process it started, on SIGTERM; `dg launch`
materializes assets of this project on the data root's instance."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.slow
def test_story_ui_serves_with_dg_dev_and_stops_cleanly_on_sigterm(tmp_path):
    port = free_port()
    env = dict(os.environ, STORY_DATA_ROOT=str(tmp_path / "data"), STORY_MAX_CONCURRENT_RUNS="1")
    env.pop("DAGSTER_HOME", None)
    # its own session, as a service manager or `nohup … &` starts it (SIGINT ignored, no terminal)
    proc = subprocess.Popen([str(BIN / "story"), "ui", "--port", str(port)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline, info = time.monotonic() + 120, None
        while time.monotonic() < deadline and info is None:
            assert proc.poll() is None, proc.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as r:
                    info = json.loads(r.read())
            except OSError:
                time.sleep(1)
        assert info and "dagster_webserver_version" in info
        yaml = (tmp_path / "data" / "dagster_home" / "dagster.yaml").read_text()
        assert "max_concurrent_runs: 1" in yaml and "default_limit: 1" in yaml  # the run queue and the pool limit
        pgid = os.getpgid(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        out = proc.stdout.read()
        assert proc.returncode == 128 + signal.SIGTERM, out
        for _ in range(50):  # the webserver, daemon, code servers and any run they launched are gone
            if not group_alive(pgid):
                break
            time.sleep(0.2)
        assert not group_alive(pgid), subprocess.run(["ps", "-o", "pid,cmd", "-g", str(pgid)], capture_output=True,
                                                      text=True).stdout
        assert "SupersessionWarning" not in out and f"http://127.0.0.1:{port}" in out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_dg_launch_materializes_this_projects_assets(tmp_path):
    """`dg launch --assets …` from the repository root: the project's definitions ([tool.dg]) on the
    instance under DAGSTER_HOME, the run recorded there."""
    import dagster as dg

    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, STORY_DATA_ROOT=str(tmp_path / "data"), DAGSTER_HOME=str(home),
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    config = {"ops": {"clip_corpus": {"config": {"toyworld_clips": 3, "toyworld_seed": 1}}}}
    proc = subprocess.run([str(BIN / "dg"), "launch", "--assets", "clip_corpus,clip_index", "--config-json",
                           json.dumps(config)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert instance.get_latest_materialization_event(dg.AssetKey("clip_index")) is not None
    assert (tmp_path / "data" / "lancedb").is_dir()
