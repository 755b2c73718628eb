"""The story's assets under Dagster's multiprocess executor (each step its own process), with the
model-heavy pool limited to one slot on the instance (docs/scaling.md)."""

import os

import dagster as dg
import pytest

from story_pipeline.examples import copy_examples, generate_example_references



@pytest.mark.slow
def test_multiprocess_executor_with_a_model_heavy_pool_limit(tmp_path, monkeypatch, save_tiny_video_model):
    stories = copy_examples(tmp_path / "stories")
    generate_example_references(stories)
    story_file = stories / "tabby_adventure" / "story.yaml"
    monkeypatch.setenv("MP_STORY_FILE", str(story_file))
    monkeypatch.setenv("STORY_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("STORY_GENERATOR_FOLDER", str(save_tiny_video_model(tmp_path / "tiny")))
    from dagster._core.definitions.reconstruct import ReconstructableJob

    def job(name):  # loaded by file path in every step process
        return ReconstructableJob.for_file(os.path.join(os.path.dirname(__file__), "mp_defs.py"), name)

    with dg.instance_for_test(overrides={"concurrency": {"pools": {"default_limit": 1}}}) as instance:
        # upstream in-process (each multiprocess step pays a fresh torch import), then the shot's steps
        corpus = dg.execute_job(job("corpus_job"), instance=instance, run_config={
            "execution": {"config": {"in_process": {}}}, "ops": {"clip_corpus": {"config": {"toyworld_clips": 30}}}})
        assert corpus.success
        chars = dg.execute_job(job("character_job"), instance=instance,
                               run_config={"execution": {"config": {"in_process": {}}}})
        assert chars.success
        result = dg.execute_job(job("shot_job"), instance=instance,
                                run_config={"execution": {"config": {"multiprocess": {"max_concurrent": 2}}}})
        assert result.success
        pids = {e.pid for e in result.all_events if e.is_step_start}
        assert len(pids) == 4  # one process per step
        # the pool-limited step ran and released its slot: nothing is left claimed on the instance
        info = instance.event_log_storage.get_concurrency_info("model_heavy")
        assert info.limit == 1 and info.active_slot_count == 0
