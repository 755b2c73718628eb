"""`story run` and `story demo`'s story: one Dagster run of a story's assets, in-process, on the persistent
instance under the data root (so it shows in `story ui`). What needs a run is decided by
``status.story_status`` through ``sensors/plan.py``, as for the story sensor, and the run is the one the
sensor would ask for: the characters, shots and video that are not current, in dependency order."""

import os
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from story_pipeline.config import Settings


def dagster_instance(settings: Settings):
    """The persistent Dagster instance under the data root (runs show in `story ui`)."""
    from story_pipeline.dagster_home import ensure_dagster_home

    home = ensure_dagster_home(settings)
    os.environ["DAGSTER_HOME"] = str(home)
    import dagster as dg

    return dg.DagsterInstance.get()


def materialize(selection: list, run_config: dict | None = None, settings: Settings | None = None,
                assets: list | None = None, tags: dict | None = None):
    """Materialize assets in-process on the persistent instance; a failed step re-raises its error
    (one sentence for errors a user can cause: the CLI prints it)."""
    import dagster as dg

    from story_pipeline.definitions import ASSETS
    from story_pipeline.resources import make_resources

    settings = settings or Settings()
    instance = dagster_instance(settings)
    # The CLI shows its own progress and one-sentence errors; the full event log is in the UI.
    config = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    config.update(run_config or {})
    return dg.materialize(ASSETS + (assets or []), selection=selection, instance=instance,
                          resources=make_resources(str(settings.data_root)), run_config=config, tags=tags)


def node_metadata(result, key) -> dict:
    """Plain metadata values of the materialization of asset ``key`` (an AssetKey or a step name) in a run."""
    node = key if isinstance(key, str) else key.to_python_identifier()
    return {k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}


def run_story(file: Path, console: Console, progress_report, timings: dict | None = None) -> list[dict]:
    """Bring the story in ``file`` up to date with one Dagster run of the parts that are not current (the
    run the story sensor would ask for); -> one row per shot. ``timings`` receives seconds per stage;
    ``progress_report(stage, done, total)`` shows progress."""
    from story_pipeline.assets.stories import build_story_assets, part_keys, run_keys
    from story_pipeline.corpus.index import ClipIndex
    from story_pipeline.plan.script import is_script
    from story_pipeline.resources import make_resources, stage_setup
    from story_pipeline.sensors.plan import story_runs
    from story_pipeline.status import story_status
    from story_pipeline.story_file import load_story
    from story_pipeline.story.registry import register_story

    timings = {} if timings is None else timings
    t = time.perf_counter()
    settings = Settings()
    story = load_story(file)
    index = ClipIndex(str(settings.lancedb_dir))
    index.table  # a missing index is one sentence, before any run
    resources = make_resources(str(settings.data_root))
    # model identities: a missing weights folder or bad setting is one sentence before anything is written
    setup = stage_setup(index=index, **{k: resources[k] for k in (
        "storage", "clip_index_store", "depth_estimator", "generator", "personalization", "shot_checks")})
    register_story(settings, file)
    assets = build_story_assets(file)
    instance = dagster_instance(settings)
    runs = story_runs(instance, story_status(story, setup))
    timings["load models + story"] = time.perf_counter() - t

    result, steps = None, {}
    if not runs.empty:  # one run, in dependency order: characters, the shots, the video
        t = time.perf_counter()
        progress_report("parts", 0, len(runs.parts))
        result = materialize(run_keys(story, [k for p in runs.parts for k in part_keys(story.id, p.kind, p.key)]),
                             assets=assets,
                             tags={"story/story": story.id,  # the story sensor leaves the story alone meanwhile
                                   "story/parts": " ".join(f"{p.kind}:{p.key}" for p in runs.parts)[:200]})
        progress_report("parts", len(runs.parts), len(runs.parts))
        steps = _step_seconds(instance, result.run_id)
        run_seconds = time.perf_counter() - t

    def spent(keys) -> float:  # seconds the run's steps of these assets took
        return sum(steps.get(k.to_python_identifier(), 0.0) for k in keys)

    for part in runs.characters:
        m = node_metadata(result, part_keys(story.id, "character", part.key)[-1])
        if "id" in m:
            console.print(f"<{part.key}>: {m['method']} ({m['steps']} steps, {m['train_seconds']} s) Sem {m['sem']} "
                          f"ID {m['id']}" + (f"  MLflow: {m['mlflow_run']}" if "mlflow_run" in m else ""),
                          highlight=False, soft_wrap=True)
    timings["personalize characters"] = spent(k for p in runs.characters for k in part_keys(story.id, p.kind, p.key))

    table = Table(title=escape(f"{story.title or story.id} ({file})"), title_justify="left")
    for col in ("shot", "retrieval query", "clip", "frames", "reused", "video"):
        table.add_column(col, no_wrap=col == "clip")  # clip ids are copied into `clip:` fields: never cut
    rows, stale = [], {p.key for p in runs.shots}
    for shot in story.shots:
        keys = part_keys(story.id, "shot", shot.id)
        if shot.id not in stale:
            r = _pointer(settings, "shot_retrievals", story.id, shot.id)
            v = _pointer(settings, "rendered_shots", story.id, shot.id)
            row = {"shot": shot.id, "query": r["query"], "clip": v.get("clip_id", r["chosen"]["clip_id"]),
                   "span": f"{r['chosen']['start_frame']}–{r['chosen']['end_frame']}", "ran": False,
                   "reused": "unchanged (no run)", "video": v["video"]}
        else:
            m, d, v = (node_metadata(result, k) for k in keys[1:])
            reused = [name for name, hit in (("retrieval", m["cache_hit"]), ("depth", d["cache_hit"]),
                                             ("render", v["cache_hit"])) if hit]
            row = {"shot": shot.id, "query": m["query"], "clip": m["chosen_clip"], "span": m["span"], "ran": True,
                   "reused": ", ".join(reused) or "-", "estimator_calls": d["estimator_calls"],
                   "generator_calls": v["generator_calls"], "video": v["video"]}
        rows.append(row)
        timings[f"shot {shot.id}: retrieve, depth, render + checks"] = spent(keys)
        table.add_row(row["shot"], row["query"], row["clip"], row["span"], row["reused"], Path(row["video"]).name)
    console.print(table)

    video_key = part_keys(story.id, "video", story.id)[0]
    if runs.video is not None:
        v = node_metadata(result, video_key)
        if v["flagged_shots"] != "none":
            console.print(f"[yellow]Shots that failed their checks after every healing attempt:[/] {v['flagged_shots']}")
    timings["assemble video + storyboard"] = spent([video_key])
    if steps:  # what the run spent outside its steps (start-up, Dagster's event log)
        timings["run overhead"] = max(0.0, run_seconds - sum(steps.values()))
    video = settings.outputs_dir / f"{story.id}.mp4"
    if story.source is not None and is_script(story.source):  # a story script: where its plan is
        console.print(f"Planned shots: {settings.artifacts_dir / 'story_plan' / story.id / 'story.yaml'}",
                      highlight=False, soft_wrap=True)
    console.print(f"Story video: {video}\nStoryboard:  {video.with_name(video.stem + '_storyboard.png')}\n"
                  f"Shot videos: {settings.artifacts_dir / 'rendered_shots' / story.id}/.memo/*.mp4",
                  highlight=False, soft_wrap=True)
    return rows


def _step_seconds(instance, run_id: str) -> dict[str, float]:
    """Seconds per step of a finished run (step start to success or failure), from its event log."""
    started, seconds = {}, {}
    for e in instance.all_logs(run_id):
        if not e.is_dagster_event or e.step_key is None:
            continue
        kind = e.dagster_event.event_type_value
        if kind == "STEP_START":
            started[e.step_key] = e.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and e.step_key in started:
            seconds[e.step_key] = e.timestamp - started[e.step_key]
    return seconds


def _pointer(settings: Settings, stage: str, story_id: str, shot_id: str) -> dict:
    import json

    return json.loads((settings.artifacts_dir / stage / story_id / f"{shot_id}.json").read_text())
