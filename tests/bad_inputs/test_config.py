"""Bad configuration (STORY_* settings, depth weights folders), queries and output paths.

    OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/bad_inputs/test_config.py

The depth backend has no CLI option or STORY_* setting (it is the Dagster resource
``DepthEstimatorResource``); its cases call ``load_estimator`` the way the resource does and
check the error a `story run` would print: one sentence naming the folder.
"""

import json
import shutil
from pathlib import Path

import pytest

from story_pipeline.depth.estimators import clear_estimator_cache, load_estimator
from story_pipeline.errors import ConfigError, StoryPipelineError
from story_pipeline.corpus.index import ClipIndex
from story_pipeline.eval.retrieval import toyworld_clip_rows

from .builders import story_folder
from .harness import SENTENCE_BREAK, Case, assert_one_sentence, check_case, listing, run_exe


def data_root_is_a_file(folder: Path) -> list[str]:
    (folder / "root").write_text("not a folder")
    return ["corpus", "build", "--toyworld-clips", "0"]


def search(*args: str):
    return lambda folder: ["search", *args]


CASES = [
    Case("env-limit-not-a-number", "config", search("a cat"), ("STORY_LIMITS__MAX_WIDTH", "'abc'"),
         env={"STORY_LIMITS__MAX_WIDTH": "abc"}),
    Case("env-limits-broken-json", "config", search("a cat"), ("STORY_", "cannot be parsed"),
         env={"STORY_LIMITS": '{"max_width": 5'}),
    Case("env-ann-threshold-word", "config", search("a cat"), ("STORY_ANN_THRESHOLD", "'many'"),
         env={"STORY_ANN_THRESHOLD": "many"}),
    Case("env-limit-in-corpus-build", "config", lambda f: ["corpus", "build", "--toyworld-clips", "0"],
         ("STORY_LIMITS__MAX_FRAMES",), env={"STORY_LIMITS__MAX_FRAMES": "1e999999"}),
    Case("env-data-root-is-a-file", "config", data_root_is_a_file, ("{folder}/root", "is a file"),
         env={"STORY_DATA_ROOT": "{folder}/root"}),
    Case("no-index-yet", "config", search("a cat"), ("{folder}/data/lancedb", "story corpus build")),
    Case("corpus-folder-missing", "config", lambda f: ["corpus", "build", "--toyworld-clips", "0"],
         ("{folder}/data/corpus", "does not exist")),
    Case("query-min-duration-nan", "query", search("a cat", "--min-duration", "nan"), ("min_duration", "nan")),
    Case("query-min-duration-inf", "query", search("a cat", "--min-duration", "inf"), ("min_duration", "inf")),
    Case("query-min-duration-negative", "query", search("a cat", "--min-duration", "-1"), ("min_duration",)),
    Case("query-k-zero", "query", search("a cat", "-k", "0"), ("k must be a positive integer",)),
    Case("query-too-long", "query", search("a cat " * 500), ("2000 characters",)),
    Case("query-blank", "query", search("   "), ("non-empty",)),
    Case("output-under-a-file", "output", lambda f: ["schema", "/etc/passwd/story.schema.json"],
         ("/etc/passwd is a file, not a folder",)),
    Case("output-is-a-folder", "output", lambda f: ["schema", f], ("{folder}", "it is a folder")),
    Case("contact-sheet-under-a-file", "output", lambda f: ["toyworld", "contact-sheet", "/etc/passwd/x.png"],
         ("/etc/passwd is a file, not a folder",)),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_setting_query_or_output(case, tmp_path, record_property):
    record_property("kind", case.kind)
    check_case(case, tmp_path)


@pytest.mark.parametrize("case_id", ["env-limit-not-a-number", "env-ann-threshold-word", "query-min-duration-nan"])
def test_through_the_installed_command(case_id, tmp_path, record_property):
    case = next(c for c in CASES if c.id == case_id)
    record_property("kind", case.kind)
    check_case(case, tmp_path, runner=run_exe)


def test_query_with_markup(tmp_path):
    ClipIndex(tmp_path / "data" / "lancedb").upsert(toyworld_clip_rows(5, seed=0)[0])
    out = check_case(Case("markup-query", "query", search("[/x] a cat"), ("a cat",), accepted=True), tmp_path)
    assert "[/x] a cat" in out.stdout


# --- depth weights (library: no CLI option selects them) -------------------------------------------
SHIPPED = Path(__file__).resolve().parents[2] / "data" / "models" / "toyworld_depth"


def models(break_it):
    """A models folder like data/models holding a toyworld_depth that ``break_it`` damages."""
    def build(folder: Path) -> Path:
        depth = folder / "models" / "toyworld_depth"
        import torch

        from story_pipeline.models.depth_net import DepthNetConfig, build_depth_net

        torch.manual_seed(0)
        build_depth_net(DepthNetConfig(input_size=32, channels=(8, 16), groups=4)).save_pretrained(str(depth))
        break_it(depth)
        return folder / "models"
    return build


DEPTH_CASES = [  # (id, backend, models folder builder, words)
    ("depth-unknown-backend", "midas", models(lambda d: None), ("Unknown depth backend 'midas'", "toyworld")),
    ("depth-models-dir-missing", "toyworld", lambda f: f / "nowhere", ("{folder}/nowhere/toyworld_depth", "does not exist")),
    ("depth-weights-missing", "toyworld", models(lambda d: (d / "diffusion_pytorch_model.safetensors").unlink()),
     ("diffusion_pytorch_model.safetensors",)),
    ("depth-weights-garbage", "toyworld", models(lambda d: (d / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 64)),
     ("{folder}/models/toyworld_depth", "damaged")),
    ("depth-weights-empty", "toyworld", models(lambda d: (d / "diffusion_pytorch_model.safetensors").write_bytes(b"")),
     ("damaged",)),
    ("depth-config-not-json", "toyworld", models(lambda d: (d / "config.json").write_text("{not json")),
     ("{folder}/models/toyworld_depth", "damaged")),
    ("depth-config-wrong-shape", "toyworld", models(lambda d: (d / "config.json").write_text(
        json.dumps({"_class_name": "DepthNet", "input_size": 32, "channels": [16, 32], "groups": 4}))),
     ("do not match its config.json",)),
]


@pytest.mark.parametrize("case_id,backend,build,words", DEPTH_CASES, ids=[c[0] for c in DEPTH_CASES])
def test_depth_weights_folder_from_STORY_MODELS_DIR(case_id, backend, build, words, tmp_path, monkeypatch,
                                                   record_property):
    record_property("kind", "depth weights")
    monkeypatch.setenv("STORY_MODELS_DIR", str(build(tmp_path)))
    clear_estimator_cache()
    with pytest.raises(ConfigError) as err:
        load_estimator(backend)
    message = str(err.value)
    assert "\n" not in message and not SENTENCE_BREAK.search(message) and message.endswith("."), message
    for w in words:
        assert w.format(folder=tmp_path) in message, message


def test_depth_weights_shipped_folder_still_loads(tmp_path, monkeypatch):
    """The control: the same code path with the shipped weights copied in loads a model."""
    if not (SHIPPED / "config.json").is_file():
        pytest.skip("no shipped ToyWorld depth weights")
    shutil.copytree(SHIPPED, tmp_path / "models" / "toyworld_depth", ignore=shutil.ignore_patterns("checkpoint"))
    monkeypatch.setenv("STORY_MODELS_DIR", str(tmp_path / "models"))
    clear_estimator_cache()
    assert load_estimator("toyworld").model_id.startswith("toyworld:toyworld_depth@")


def test_run_with_a_missing_generator_folder(tmp_path, record_property):
    """`story run` with STORY_GENERATOR_FOLDER pointing nowhere: one sentence naming the folder, and
    nothing left behind by the failed run (the models load before the story is registered)."""
    record_property("kind", "config")
    ClipIndex(tmp_path / "data" / "lancedb").upsert(toyworld_clip_rows(5, seed=0)[0])  # `run` checks the index first
    story = story_folder(tmp_path / "s")
    before = listing(tmp_path)
    out = run_exe(["run", story], tmp_path / "data", {"STORY_GENERATOR_FOLDER": str(tmp_path / "nowhere")})
    assert_one_sentence(out, (f"{tmp_path}/nowhere", "does not exist"))
    assert sorted(set(listing(tmp_path)) - set(before)) == []  # the models load before the story is registered


@pytest.mark.parametrize("env, words", [
    ({"STORY_HEAL_ATTEMPTS": "three"}, ("STORY_HEAL_ATTEMPTS", "'three'", "whole number")),
    ({"STORY_RENDER_STEPS": "5000"}, ("STORY_RENDER_STEPS", "[1, 1000]", "5000")),
], ids=["heal-attempts-word", "render-steps-too-many"])
def test_run_with_bad_render_settings(env, words, tmp_path, record_property):
    """`story run` with a render setting that is not usable: one sentence naming the variable, and
    nothing left behind (settings are read before the story is registered)."""
    record_property("kind", "config")
    ClipIndex(tmp_path / "data" / "lancedb").upsert(toyworld_clip_rows(5, seed=0)[0])
    story = story_folder(tmp_path / "s")
    before = listing(tmp_path)
    out = run_exe(["run", story], tmp_path / "data", env)
    assert_one_sentence(out, words)
    assert sorted(set(listing(tmp_path)) - set(before)) == []


def test_one_configuration_source_read_at_run_time(tmp_path, monkeypatch):
    """Settings is the one source: story limits and the resources' defaults come from STORY_* when they
    are used (not when the code was imported), and a launchpad value still wins."""
    from story_pipeline.resources import GeneratorResource, PersonalizationResource, ShotChecksResource
    from story_pipeline.story_file import load_story

    checks, personalization = ShotChecksResource(), PersonalizationResource()
    monkeypatch.setenv("STORY_HEAL_ATTEMPTS", "5")
    monkeypatch.setenv("STORY_PERSONALIZE_STEPS", "7")
    assert checks.heal_attempts() == 5 and personalization.config().steps == 7
    assert ShotChecksResource(attempts=2).heal_attempts() == 2
    monkeypatch.setenv("STORY_GENERATOR_BACKEND", "nope")
    with pytest.raises(ConfigError, match="Unknown generator backend 'nope'"):
        GeneratorResource().identity()
    assert GeneratorResource(backend="toyworld").identity().backend == "toyworld"
    story = story_folder(tmp_path / "s")
    load_story(story)
    monkeypatch.setenv("STORY_STORY_LIMITS__MAX_CHARACTERS", "0")
    with pytest.raises(StoryPipelineError, match="1 characters is above the limit of 0"):
        load_story(story)
