"""The `story` command as a user runs it: real subprocesses, real data roots."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

STORY = [sys.executable, "-m", "story_pipeline.cli"]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tabby_adventure" / "story.yaml"


def run_story(args, data_root: Path, timeout=600, env: dict | None = None):
    env = {**os.environ, "STORY_DATA_ROOT": str(data_root), "COLUMNS": "160", **(env or {})}
    env.pop("DAGSTER_HOME", None)
    return subprocess.run(STORY + args, env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_sentence_error(proc, *needles):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    err = " ".join(proc.stderr.split())
    assert err.startswith("error:"), err
    for needle in needles:
        assert needle in err, err


def test_search_without_index_is_one_sentence(tmp_path):
    proc = run_story(["search", "a cat jumps"], tmp_path)
    assert_one_sentence_error(proc, "story corpus build", str(tmp_path / "lancedb"))
    assert not (tmp_path / "lancedb").exists()  # searching never creates state


def test_corpus_build_without_corpus_folder_names_it(tmp_path):
    proc = run_story(["corpus", "build", "--toyworld-clips", "0"], tmp_path)
    assert_one_sentence_error(proc, str(tmp_path / "corpus"))


@pytest.mark.slow
def test_demo_end_to_end_then_search(tmp_path):
    """The README's demo on a small corpus, with the shipped models (short personalization, 2
    sampling steps, no healing, to keep it quick): corpus + index, sample retrievals, the example
    story personalized, rendered and assembled, every run recorded for the UI and the
    personalization in MLflow."""
    quick = {"STORY_PERSONALIZE_STEPS": "4", "STORY_PERSONALIZE_SAMPLE_STEPS": "2", "STORY_HEAL_ATTEMPTS": "1",
             "STORY_RENDER_STEPS": "2"}
    proc = run_story(["demo", "--clips", "24"], tmp_path, env=quick)
    assert proc.returncode == 0, proc.stderr
    assert "Corpus: 24 clips from 24 videos, 0 rejected" in " ".join(proc.stdout.split())
    assert proc.stdout.count("tw000") >= 4  # hits printed for the sample queries
    assert "Tabby's Snow Day" in proc.stdout
    assert len(list((tmp_path / "artifacts" / "shot_depth" / "tabby_adventure" / ".memo").glob("*.gif"))) == 4
    assert len(list((tmp_path / "artifacts" / "rendered_shots" / "tabby_adventure" / ".memo").glob("*.mp4"))) == 4
    video = tmp_path / "outputs" / "tabby_adventure.mp4"
    assert video.stat().st_size > 1000 and (tmp_path / "outputs" / "tabby_adventure_storyboard.png").exists()
    assert str(video) in " ".join(proc.stdout.split())
    stages = ("corpus + index", "personalize characters", "shot stroll: retrieve, depth, render + checks",
              "assemble video + storyboard")
    assert "Time by stage" in proc.stdout and all(s in proc.stdout for s in stages)
    assert (tmp_path / "artifacts" / "clip_corpus" / "clips.parquet").exists()
    assert (tmp_path / "dagster_home" / "dagster.yaml").exists()

    import dagster as dg

    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        runs = instance.get_runs()
        # the corpus, then the story in one run (the run the story sensor would ask for)
        assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert runs[0].tags["story/story"] == "tabby_adventure"  # (the sensor waits while it runs)
        for key in (["characters", "tabby_timeinv"], ["shots", "spin_render"], ["story_video"]):
            event = instance.get_latest_materialization_event(dg.AssetKey(["tabby_adventure", *key]))
            assert event.run_id == runs[0].run_id
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("personalization").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["character"] == "tabby"

    # Running the story again launches no run: the character and every shot are current.
    proc = run_story(["run", str(EXAMPLE)], tmp_path, env=quick)
    assert proc.returncode == 0, proc.stderr
    assert " ".join(proc.stdout.split()).count("unchanged (no run)") == 4

    proc = run_story(["search", "a robot walking to the left", "-k", "3", "--min-duration", "2.5"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if "tw000" in line]
    assert len(rows) == 3
    assert all(float(line.split("│")[5]) >= 2.5 for line in rows)
    narrow = run_story(["search", "a robot walking to the left", "-k", "3"], tmp_path, env={"COLUMNS": "40"})
    ids = re.findall(r"│ (tw\d+)", narrow.stdout)  # piped and narrow: ids are never cut (they go into `clip:`)
    assert len(ids) == 3 and all(len(i) == 7 for i in ids), narrow.stdout

    # A user's own folder: copied in atomically, only its clip embedded, the ToyWorld clips kept.
    mine = tmp_path / "incoming"
    mine.mkdir()
    shutil.copy(tmp_path / "corpus" / "toyworld" / "clips" / "tw00003.mp4", mine / "porch.mp4")
    (mine / "porch.txt").write_text("my grey cat jumping off the porch")
    proc = run_story(["corpus", "add", str(mine), "--name", "home"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Corpus: 25 clips" in " ".join(proc.stdout.split())
    assert "1 captions embedded" in " ".join(proc.stdout.split())
    assert not list((tmp_path / "corpus").glob(".home*"))  # no temp folder left
    proc = run_story(["corpus", "add", str(mine), "--name", "home"], tmp_path)
    assert_one_sentence_error(proc, "already exists")


def test_an_interrupted_dagster_step_is_one_line(capsys):
    """Ctrl-C while a Dagster step runs surfaces as Dagster's interruption error: one line, exit 130."""
    import typer
    from dagster._core.errors import DagsterExecutionInterruptedError

    from story_pipeline.cli import user_errors

    with pytest.raises(typer.Exit) as exit_:
        with user_errors():
            raise DagsterExecutionInterruptedError()
    assert exit_.value.exit_code == 130
    err = capsys.readouterr().err
    assert err.startswith("error: interrupted;") and err.count("\n") == 1 and "Traceback" not in err
