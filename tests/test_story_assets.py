"""Per-story shot assets on real components: a small ToyWorld corpus + LanceDB index, the
example story, an ephemeral Dagster instance. Edits recompute only the edited shot."""

import shutil
import time
from pathlib import Path

import av
import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset

from story_pipeline.assets.stories import build_story_assets, part_keys
from story_pipeline.config import Settings
from story_pipeline.depth.structure import load_motion_structure
from story_pipeline.definitions import ASSETS, make_definitions, make_resources
from story_pipeline.examples import copy_examples, generate_example_references
from story_pipeline.corpus.index import ClipIndex
from story_pipeline.corpus.retrieve import RetrievalError, retrieve_shot
from story_pipeline.story.spec import character_content_hash
from story_pipeline.story_file import load_story
from story_pipeline.render.guidance import RELAXED_STRENGTH
from story_pipeline.resources import GeneratorResource, PersonalizationResource, ShotChecksResource
from story_pipeline.story.registry import register_story



@pytest.fixture(scope="module")
def world(tmp_path_factory, save_tiny_video_model):
    root = tmp_path_factory.mktemp("data")
    # A real (temporary) instance entered as a context: Dagster keeps its state storage in a
    # context variable that definitions loading reads.
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            ASSETS, instance=instance, resources=make_resources(str(root)),
            run_config={"ops": {"clip_corpus": {"config": {"toyworld_clips": 60, "toyworld_seed": 3}}}},
        )
        assert result.success
        stories = copy_examples(tmp_path_factory.mktemp("stories"))
        generate_example_references(stories)
        TINY_GENERATOR[str(root)] = save_tiny_video_model(tmp_path_factory.mktemp("tiny_video"))
        yield root, stories / "tabby_adventure" / "story.yaml", instance


TINY_GENERATOR = {}  # data root -> folder of a tiny random video model (tests/test_generate.py)


def resources(root) -> dict:
    """The real resources, with the generator pointed at a tiny random model: fast, and the same
    loading code as the shipped weights."""
    return {**make_resources(str(root)), "generator": GeneratorResource(folder=str(TINY_GENERATOR[str(root)]), steps=2),
            "personalization": PersonalizationResource(steps=2, sample_every=0, sample_steps=2),
            "shot_checks": ShotChecksResource(attempts=1)}  # healing has its own test


def _metadata(result, key) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(key.to_python_identifier())[0].metadata.items()}


def _materialize_all(story_file, root, instance):
    """What "Materialize all" on the story's group does: one run, in dependency order (characters are
    learnt before the shots that show them render)."""
    assets = build_story_assets(story_file)
    story = load_story(story_file)
    r = dg.materialize(ASSETS + assets, selection=[a.key for a in assets], instance=instance, resources=resources(root))
    assert r.success
    order = [e.asset_key for e in r.get_asset_materialization_events()]
    for shot in story.shots:
        render = part_keys(story.id, "shot", shot.id)[-1]
        assert all(order.index(part_keys(story.id, "character", c.name)[-1]) < order.index(render)
                   for c in story.characters_in(shot))
    assert order[-1] == part_keys(story.id, "video", story.id)[0]
    meta = {}
    for shot in story.shots:
        _, retrieval, depth, render = part_keys(story.id, "shot", shot.id)
        meta[shot.id] = _metadata(r, retrieval)
        d = _metadata(r, depth)
        meta[shot.id]["estimator_calls"] = d["estimator_calls"]
        meta[shot.id]["depth"] = d["depth"]
        meta[shot.id]["render"] = _metadata(r, render)
    return meta


def test_shots_retrieve_long_enough_clips_and_edits_rerun_only_that_shot(world):
    root, story_file, instance = world
    first = _materialize_all(story_file, root, instance)
    story = load_story(story_file)
    for shot in story.shots:
        m = first[shot.id]
        assert not m["cache_hit"]
        settings = story.resolved(shot)
        lo, hi = (int(x) for x in m["span"].split("–"))
        assert (hi - lo) / 12 >= settings.frames / settings.fps - 1e-6  # ToyWorld clips are 12 fps

        assert m["estimator_calls"] == 1
        ms = load_motion_structure(m["depth"])
        assert ms.depth.shape == (settings.frames, settings.resolution[1], settings.resolution[0])
        assert ms.depth.min() >= -1 and ms.depth.max() <= 1 and ms.metadata["clip_id"] == m["chosen_clip"]

        v = m["render"]
        # structure guidance as the story sets it on a clip of the character's kind, relaxed on another kind's
        fit = m["kind_fit"]  # (the story sets tau, not strength)
        tau, strength = (settings.tau, settings.strength if fit else min(settings.strength, RELAXED_STRENGTH))
        assert (v["cache_hit"], v["generator_calls"], v["seed"], v["tau"], v["strength"]) == (
            False, 1, settings.seed, tau, strength)
        assert ("relaxed" in v["structure_guidance"]) == (not m["kind_fit"])
        with av.open(v["video"]) as container:  # a real H.264 yuv420p mp4 of the shot's size and length
            stream = container.streams.video[0]
            assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert len(frames) == settings.frames and frames[0].shape == (settings.resolution[1], settings.resolution[0], 3)
        assert v["preview"].startswith("![shot](data:image/gif;base64,")

    again = _materialize_all(story_file, root, instance)  # also a new process's view: memos are files
    assert all(m["cache_hit"] and m["render"]["cache_hit"] for m in again.values())
    assert sum(m["estimator_calls"] + m["render"]["generator_calls"] for m in again.values()) == 0
    assert {k: m["chosen_clip"] for k, m in again.items()} == {k: m["chosen_clip"] for k, m in first.items()}

    text = story_file.read_text()
    story_file.write_text(text.replace("a <tabby> spins in circles in the snow", "a <tabby> hops along on the beach"))
    edited = _materialize_all(story_file, root, instance)
    assert [k for k, m in edited.items() if not m["cache_hit"]] == ["spin"]
    assert edited["spin"]["query"] == "a cat hops along"  # the place is painted, not retrieved
    clip_changed = edited["spin"]["chosen_clip"] != first["spin"]["chosen_clip"]
    assert {k: m["estimator_calls"] for k, m in edited.items()} == {
        "stroll": 0, "leap": 0, "spin": int(clip_changed), "rest": 0}
    assert {k: m["render"]["generator_calls"] for k, m in edited.items()} == {"stroll": 0, "leap": 0, "spin": 1, "rest": 0}
    assert edited["spin"]["render"]["prompt"] == "a <tabby> cat hops along on the beach"  # token + class word
    assert edited["spin"]["render"]["personalization"] == first["spin"]["render"]["personalization"] != "none"
    story_file.write_text(text)


def test_failing_checks_heal_then_flag_and_the_story_video_is_assembled(world):
    """Impossible thresholds: every attempt fails, so the shot is rendered `attempts` times (new
    seed, then the next clip), the best is kept and flagged, and the video still assembles."""
    root, story_file, instance = world
    _materialize_all(story_file, root, instance)  # memo hits when the test above ran
    assets = build_story_assets(story_file)
    render = [part_keys("tabby_adventure", "shot", "leap")[-1]]
    video = part_keys("tabby_adventure", "video", "tabby_adventure")
    res = {**resources(root), "shot_checks": ShotChecksResource(attempts=3, depth_adherence=0.0)}
    r = dg.materialize(ASSETS + assets, selection=render, instance=instance, resources=res)
    m = _metadata(r, render[0])
    assert m["attempts"] == 3 and m["checks_passed"] is False and "depth_adherence" in m["failed_checks"]
    log = m["attempt_log"].splitlines()[2:]
    assert len(log) == 3 and sum("**kept**" in row for row in log) == 1
    seeds_clips = [(row.split("|")[2].strip(), row.split("|")[3].strip()) for row in log]
    assert seeds_clips[0][0] != seeds_clips[1][0] and seeds_clips[2][1] != seeds_clips[0][1]  # new seed, next clip
    checks = {c.check_name: c for c in r.get_asset_check_evaluations()}
    assert set(checks) == {"depth_adherence", "id", "sem", "flicker", "kind"} and not checks["depth_adherence"].passed
    assert {c.asset_key for c in checks.values()} == set(render)  # per shot: the UI shows which shot failed which check
    _forget_models()
    again = dg.materialize(ASSETS + assets, selection=render, instance=instance, resources=res)
    m2 = _metadata(again, render[0])
    assert m2["generator_calls"] == 0 and m2["cache_hit"]  # every attempt is a memo now
    assert _models_loaded() == (0, 0)  # renders and check results read back: no generator, no judge loaded
    checks2 = {c.check_name: c for c in again.get_asset_check_evaluations()}
    assert {k: (c.passed, c.metadata["value"]) for k, c in checks2.items()} == {
        k: (c.passed, c.metadata["value"]) for k, c in checks.items()}

    v = dg.materialize(ASSETS + assets, selection=video, instance=instance, resources=res)
    vm = _metadata(v, video[0])
    assert "leap (depth_adherence" in vm["flagged_shots"]
    story = load_story(story_file)
    with av.open(vm["video"]) as container:
        stream = container.streams.video[0]
        n = sum(1 for _ in container.decode(stream))
        assert (stream.codec_context.pix_fmt, stream.width % 2, stream.height % 2) == ("yuv420p", 0, 0)
    shot_frames = sum(story.resolved(s).frames for s in story.shots)
    assert n == shot_frames + 8 - 2 * len(story.shots)  # + 1 s title card at 8 fps, - 2-frame cross-fades
    assert vm["storyboard"].endswith("_storyboard.png") and Path(vm["storyboard"]).exists()


def test_pinned_clip_wins_and_bad_pins_are_one_sentence(world, tmp_path):
    root, story_file, _ = world
    index = ClipIndex(str(Settings(data_root=root).lancedb_dir))
    story = load_story(story_file)
    pinned = story.shots[0].model_copy(update={"clip": "tw00007"})
    r = retrieve_shot(index, story, pinned)
    assert r.pinned and r.chosen["clip_id"] == "tw00007"

    with pytest.raises(RetrievalError, match="pins clip 'nope', which is not in the clip index"):
        retrieve_shot(index, story, story.shots[0].model_copy(update={"clip": "nope"}))
    too_long = story.shots[0].model_copy(update={"frames": 64, "fps": 8})  # 8 s; the corpus tops out at 3.3 s
    with pytest.raises(RetrievalError, match=r"needs a clip of at least 8\.00 s .* \(nearest matches: tw\d+ \(\d\.\d s\)"):
        retrieve_shot(index, story, too_long)


def test_character_assets_check_references_and_show_them(world):
    root, story_file, instance = world
    assets = build_story_assets(story_file)
    chars = part_keys("tabby_adventure", "character", "tabby")
    assert [k.to_user_string() for k in chars] == ["tabby_adventure/characters/tabby_references",
                                                   "tabby_adventure/characters/tabby_timeinv"]
    # a fresh memo (seed 11), regularised with 2 retrieved cat clips
    res = {**resources(root), "personalization": PersonalizationResource(steps=2, sample_every=0, sample_steps=2, seed=11,
                                                                                prior_clips=2)}
    r = dg.materialize(ASSETS + assets, selection=chars, instance=instance, resources=res)
    m = _metadata(r, chars[0])
    assert (m["token"], m["class_word"], m["images"]) == ("<tabby>", "cat", 4)
    assert m["shots"] == "stroll, leap, spin, rest"
    assert m["references"].startswith("![references](data:image/png;base64,")
    story = load_story(story_file)
    assert m["content_hash"] == character_content_hash(story, story.characters[0])

    # personalization: trained once (then a memo hit), tracked in MLflow with the Dagster run and asset
    t = _metadata(r, chars[1])
    assert t["method"] == "timeinv_lora" and t["steps"] == 2 and 0 < t["id"] <= 1
    tracker = resources(root)["mlflow"].tracker()
    run = tracker.client.get_run(t["mlflow_run"].rsplit("/", 1)[-1])
    assert run.info.status == "FINISHED" and run.data.tags["character"] == "tabby"
    assert run.data.tags["dagster.asset"] == "tabby_adventure/characters/tabby_timeinv"
    assert run.data.tags["dagster.run_id"] == r.run_id and run.data.params["method"] == "timeinv_lora"
    assert len(tracker.client.get_metric_history(run.info.run_id, "loss")) == 1 and "final_id" in run.data.metrics
    assert len(tracker.client.get_metric_history(run.info.run_id, "loss_smoothed")) == 1
    experiment = tracker.client.get_experiment(run.info.experiment_id)  # opens on its runs, not GenAI traces
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    prior = t["prior_clips"].split(", ")
    assert len(prior) == 2 and run.data.params["prior_clip_ids"] == ",".join(prior)
    assert len(tracker.client.get_metric_history(run.info.run_id, "prior_loss")) == 1
    _forget_models()
    again = dg.materialize(ASSETS + assets, selection=chars, instance=instance, resources=res)
    assert _models_loaded()[0] == 0  # a memo hit loads no generator
    t2 = _metadata(again, chars[1])
    assert (t2["cache_hit"], t2["trained"], t2["concept"]) == (True, 0, t["concept"])


def _forget_models():
    from story_pipeline.models.judge import get_judge
    from story_pipeline.render import generator

    generator._cached.cache_clear()
    get_judge.cache_clear()


def _models_loaded() -> tuple[int, int]:
    """(generators, judges) loaded in this process since ``_forget_models()``."""
    from story_pipeline.models.judge import get_judge
    from story_pipeline.render import generator

    return generator._cached.cache_info().currsize, get_judge.cache_info().currsize


def test_registered_story_shows_in_definitions(world):
    root, story_file, _ = world
    register_story(Settings(data_root=root), story_file)
    defs = make_definitions(str(root))
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    shots = {f"tabby_adventure/shots/{s}_{stage}" for s in ("stroll", "leap", "spin", "rest")
             for stage in ("spec", "retrieval", "depth", "render")}
    assert shots | {"tabby_adventure/characters/tabby_timeinv", "tabby_adventure/story_video", "clip_index"} <= keys
    spec = defs.resolve_assets_def(dg.AssetKey(["tabby_adventure", "shots", "leap_render"]))
    assert spec.group_names_by_key[spec.key] == "story_tabby_adventure"
    assert {c.name for c in spec.check_specs} == {"depth_adherence", "id", "sem", "flicker", "kind"}
    graph = defs.resolve_asset_graph()  # the render needs its depth and the character it shows; the video every render
    assert {k.to_user_string() for k in graph.get(spec.key).parent_keys} == {
        "tabby_adventure/shots/leap_depth", "tabby_adventure/characters/tabby_timeinv"}
    assert {k.path[2] for k in graph.get(dg.AssetKey(["tabby_adventure", "story_video"])).parent_keys} == {
        "stroll_render", "leap_render", "spin_render", "rest_render"}


def test_story_sensor_runs_what_is_stale_in_order_and_reassembles_the_video(world, tmp_path):
    """The sensor asks for what ``status`` finds stale, as `story run` does, as one run per story
    (Dagster runs it in dependency order: characters, the shots that show them, then the video); each
    part once per change. An edited shot: that shot, then the video. A new reference picture: that
    character, the shots that show it, the video. Nothing else."""
    root, _, _ = world
    stories = copy_examples(tmp_path / "stories")
    generate_example_references(stories)
    story_file = stories / "forest_friends" / "story.yaml"
    register_story(Settings(data_root=root), story_file)
    defs = make_definitions(str(root))
    sensor = defs.resolve_sensor_def("story_sensor")
    assets = build_story_assets(story_file)
    res = resources(root)

    def tick(instance, cursor):  # (this story's requests: the world's data root holds other stories too)
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=res, definitions=defs) as ctx:
            out = sensor(ctx)
            out = [] if isinstance(out, dg.SkipReason) else out
            return [r for r in out if r.tags["story/story"] == "forest_friends"], ctx.cursor

    def run(requests, instance):
        """What the run launcher does with each request: one run of its assets, in dependency order."""
        for r in requests:
            assert dg.materialize(ASSETS + assets, selection=r.asset_selection, instance=instance, resources=res).success

    def asked(requests):
        return [sorted(r.tags["story/parts"].split()) for r in requests]

    with dg.instance_for_test() as instance:
        first, cursor = tick(instance, None)  # never materialized: everything, as one run
        assert asked(first) == [["character:bramble", "character:patch", "shot:chase", "shot:home", "shot:tumble",
                                 "shot:wander", "video:forest_friends"]]
        assert set(first[0].asset_selection) == {a.key for a in assets}
        again, cursor = tick(instance, cursor)
        assert again == []  # asked once per change, even while its run has not finished

        # while a backfill of the story (a "Materialize all" click) or a run is in progress, the story is
        # left alone: parts it computes change signature mid-way and must not be asked for twice
        instance.add_backfill(PartitionBackfill.from_asset_graph_subset(
            backfill_id="clicked", backfill_timestamp=time.time(), tags={}, dynamic_partitions_store=instance,
            asset_graph_subset=AssetGraphSubset(non_partitioned_asset_keys=set(first[0].asset_selection)),
            title=None, description=None, run_config=None))
        others = {k for k in defs.resolve_all_asset_keys() if len(k.path) >= 2 and k.path[0] != "forest_friends"}
        instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", run_id="a-running-story", asset_selection=frozenset(
            others), status=dg.DagsterRunStatus.STARTED))  # (the world's other stories: a run in progress)
        with dg.build_sensor_context(instance=instance, cursor=None, resources=res, definitions=defs) as ctx:
            waiting = sensor(ctx)
        instance.delete_run("a-running-story")
        assert isinstance(waiting, dg.SkipReason) and "forest_friends" in waiting.skip_message, waiting
        assert "Waiting for the run in progress" in waiting.skip_message
        instance.update_backfill(instance.get_backfill("clicked").with_status(BulkActionStatus.COMPLETED_SUCCESS))
        # `story run`'s in-process run records no asset selection: its story tag says which story it makes
        instance.add_run(dg.DagsterRun(job_name="__ephemeral_asset_job__", run_id="story-run", tags={
            "story/story": "forest_friends"}, status=dg.DagsterRunStatus.STARTED))
        busy, _ = tick(instance, None)  # (no cursor: without the run, the whole story would be asked for)
        instance.delete_run("story-run")
        assert busy == []
        run(first, instance)
        quiet, cursor = tick(instance, cursor)
        assert quiet == []

        text = story_file.read_text()
        story_file.write_text(text.replace("prompt: a <bramble> falls over in the forest",
                                           "prompt: a <bramble> sits down in the forest"))
        edited, cursor = tick(instance, cursor)
        assert asked(edited) == [["shot:tumble", "video:forest_friends"]]  # then the video is assembled again
        assert [k.to_user_string() for k in edited[0].asset_selection] == [
            f"forest_friends/shots/tumble_{stage}" for stage in ("spec", "retrieval", "depth", "render")] + [
            "forest_friends/story_video"]
        run(edited, instance)
        quiet, cursor = tick(instance, cursor)
        assert quiet == []

        # a new picture of one character: that character, the shots that show it, the video; nothing else
        ref = story_file.parent / "refs" / "bramble_0.png"
        ref.write_bytes((story_file.parent / "refs" / "bramble_1.png").read_bytes())
        edited, cursor = tick(instance, cursor)
        assert asked(edited) == [["character:bramble", "shot:tumble", "shot:wander", "video:forest_friends"]]
        run(edited, instance)
        quiet, cursor = tick(instance, cursor)
        assert quiet == []

        # a second file with the same story id: named where the UI shows the sensor's ticks
        twin = shutil.copytree(story_file.parent, tmp_path / "twin") / "story.yaml"  # the same `id:`
        register_story(Settings(data_root=root), twin)
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=res, definitions=defs) as ctx:
            out = sensor(ctx)
        assert isinstance(out, dg.SkipReason) and "already used by" in out.skip_message, out
