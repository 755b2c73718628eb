"""The Dagster layer on real components: definitions load, both corpus assets materialize on an
ephemeral instance, the reindex sensor and the nightly schedule request runs only when due."""

import shutil

import dagster as dg

from story_pipeline.definitions import ASSETS, defs, make_resources
from story_pipeline.sensors import corpus_reindex_sensor, reindex_schedule

N_CLIPS = 12


def _run(data_root, instance, toyworld_clips=N_CLIPS):
    return dg.materialize(
        ASSETS,
        instance=instance,
        resources=make_resources(str(data_root)),
        run_config={"ops": {"clip_corpus": {"config": {"toyworld_clips": toyworld_clips, "toyworld_seed": 7}}}},
    )


def _metadata(result, key):
    [mat] = [m for m in result.asset_materializations_for_node(key)]
    return {k: v.value for k, v in mat.metadata.items()}


def test_definitions_load_with_groups_and_automation():
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert {a.key.to_user_string() for a in ASSETS} == {"clip_corpus", "clip_index"}
    for a in ASSETS:
        assert a.group_names_by_key[a.key] == "corpus"
        assert a.descriptions_by_key[a.key]
    assert repo.get_sensor_def("corpus_reindex_sensor").job_name == "reindex_corpus"
    assert repo.get_schedule_def("nightly_reindex").cron_schedule == "0 3 * * *"


def test_materialize_corpus_and_index_then_incremental(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    result = _run(tmp_path, instance)
    assert result.success
    corpus = _metadata(result, "clip_corpus")
    index = _metadata(result, "clip_index")
    assert corpus["clips"] == N_CLIPS and corpus["rejected"] == 0
    assert index["rows"] == N_CLIPS and index["captions_embedded"] == N_CLIPS
    assert (tmp_path / "artifacts" / "clip_corpus" / "clips.parquet").exists()

    # A second run over an unchanged corpus embeds nothing and keeps the corpus data version.
    again = _run(tmp_path, instance)
    assert _metadata(again, "clip_index")["captions_embedded"] == 0
    versions = [
        e.event_specific_data.materialization.tags.get("dagster/data_version")
        for r in (result, again)
        for e in r.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("clip_corpus")
    ]
    assert versions[0] and versions[0] == versions[1]

    # A broken file beside the good ones is rejected and the run still succeeds.
    bad = tmp_path / "corpus" / "mine"
    bad.mkdir()
    (bad / "broken.mp4").write_bytes(b"this is not a video")
    (bad / "broken.txt").write_text("a cat that is not there")
    third = _run(tmp_path, instance)
    assert _metadata(third, "clip_corpus")["rejected"] == 1
    assert _metadata(third, "clip_index")["rows"] == N_CLIPS


def test_reindex_sensor_requests_on_change_and_skips_without(tmp_path):
    corpus = tmp_path / "corpus" / "mine"
    corpus.mkdir(parents=True)
    (corpus / "a.txt").write_text("a fox hops")
    (corpus / "a.mp4").write_bytes(b"x" * 10)
    resources = make_resources(str(tmp_path))

    def tick(instance, cursor):
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as ctx:
            return corpus_reindex_sensor(ctx), ctx.cursor

    with dg.instance_for_test() as instance:
        first, cursor = tick(instance, None)
        assert isinstance(first, dg.RunRequest)

        skip, same = tick(instance, cursor)
        assert isinstance(skip, dg.SkipReason)
        assert "No change" in skip.skip_message and same == cursor

        (corpus / "b.mp4").write_bytes(b"y" * 10)
        second, cursor = tick(instance, cursor)
        assert isinstance(second, dg.RunRequest)
        assert second.tags["story/corpus_fingerprint"] != first.tags["story/corpus_fingerprint"]
        assert "1 added" in second.tags["story/reindex_reason"]

        (corpus / "a.mp4").unlink()
        third, cursor = tick(instance, cursor)
        assert isinstance(third, dg.RunRequest)
        assert "1 removed" in third.tags["story/reindex_reason"]

        # Files the reindex never reads (and hidden temp files) do not trigger a run.
        (corpus / "notes.md").write_text("ignored")
        (corpus / ".clip.mp4.tmp").write_bytes(b"z")
        quiet, _ = tick(instance, cursor)
        assert isinstance(quiet, dg.SkipReason)


def test_reindex_sensor_first_tick_skips_when_index_is_current(tmp_path):
    with dg.instance_for_test() as instance:
        assert _run(tmp_path, instance, toyworld_clips=4).success
        resources = make_resources(str(tmp_path))
        with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
            result = corpus_reindex_sensor(ctx)
            cursor = ctx.cursor
        assert isinstance(result, dg.SkipReason) and "unchanged since" in result.skip_message

        # A user drops a new captioned video into the corpus: the sensor asks for a reindex,
        # and running it indexes exactly that clip.
        mine = tmp_path / "corpus" / "mine"
        mine.mkdir()
        src = next((tmp_path / "corpus" / "toyworld" / "clips").glob("*.mp4"))
        shutil.copy(src, mine / "my_clip.mp4")
        (mine / "my_clip.txt").write_text("a small grey cat waves at the camera")
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as ctx:
            request = corpus_reindex_sensor(ctx)
        assert isinstance(request, dg.RunRequest)
        rerun = _run(tmp_path, instance, toyworld_clips=4)
        meta = _metadata(rerun, "clip_index")
        assert meta["captions_embedded"] == 1 and meta["rows"] == 5


def test_nightly_schedule_targets_reindex_job(monkeypatch):
    schedule = reindex_schedule()
    with dg.instance_for_test() as instance:
        ctx = dg.build_schedule_context(instance=instance)
        data = schedule.evaluate_tick(ctx)
        assert len(data.run_requests) == 1
    assert schedule.job_name == "reindex_corpus"
    monkeypatch.setenv("STORY_REINDEX_CRON", "30 4 * * 0")  # the one configuration source, read when the code loads
    from story_pipeline.definitions import make_definitions

    assert make_definitions().get_repository_def().get_schedule_def("nightly_reindex").cron_schedule == "30 4 * * 0"
