"""Partial-rerun cost of a story's shot assets (retrieval + depth), all measured in one run.

    .venv/bin/python bench/reruns.py            # ~1 min on 2 cores

A 4-shot example story over a 120-clip ToyWorld corpus, on a temporary data root and a temporary
Dagster instance, materialized shot by shot exactly as `story run` does:
  full      every shot computed (empty memos)
  edited    one shot's prompt edited (its retrieval reruns; depth reruns if the clip changed)
  unchanged nothing edited (every stage a memo hit)
Goals (issue 3): edited / full <= 0.30, unchanged / full <= 0.05. Dagster's per-run overhead is
included (it is what a user waits for); model loading is excluded by a warm-up run first.
"""

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg  # noqa: E402

import story_pipeline  # noqa: E402,F401  (offline HF env vars)
from story_pipeline.assets.stories import build_story_assets  # noqa: E402
from story_pipeline.definitions import ASSETS, make_resources  # noqa: E402
from story_pipeline.examples import copy_examples, generate_example_references  # noqa: E402
from story_pipeline.story import load_story  # noqa: E402


def run_story(story_file: Path, root: Path, instance) -> tuple[float, int]:
    """Materialize every shot; return (seconds, estimator calls)."""
    assets = build_story_assets(story_file)
    story = load_story(story_file)
    calls, t0 = 0, time.perf_counter()
    for shot in story.shots:
        r = dg.materialize(ASSETS + assets, selection=assets, partition_key=shot.id, instance=instance,
                           resources=make_resources(str(root)),
                           run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})
        calls += r.asset_materializations_for_node(f"{story.id}__shot_depth")[0].metadata["estimator_calls"].value
    return time.perf_counter() - t0, calls


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, dg.instance_for_test() as instance:
        tmp = Path(tmp)
        root = tmp / "data"
        quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
        dg.materialize(ASSETS, instance=instance, resources=make_resources(str(root)),
                       run_config={**quiet, "ops": {"clip_corpus": {"config": {"toyworld_clips": 120}}}})
        stories = copy_examples(tmp / "stories")
        generate_example_references(stories)
        warm = stories / "bolt_and_puddle" / "story.yaml"
        run_story(warm, root, instance)  # load MiniLM, the depth net, LanceDB once

        story_file = stories / "tabby_adventure" / "story.yaml"
        full, full_calls = run_story(story_file, root, instance)
        text = story_file.read_text()
        story_file.write_text(text.replace("a <tabby> spins in circles in the snow", "a <tabby> hops along the beach"))
        edited, edited_calls = run_story(story_file, root, instance)
        unchanged, unchanged_calls = run_story(story_file, root, instance)

    rows = [("full (4 shots)", full, full_calls, None), ("edited 1 of 4", edited, edited_calls, 0.30),
            ("unchanged", unchanged, unchanged_calls, 0.05)]
    print("\nStory rerun cost: retrieval + depth per shot, in-process Dagster runs (one run)")
    print(f"{'run':<16}| {'seconds':>8} | {'estimator calls':>15} | {'/ full':>7} | goal")
    for name, sec, calls, goal in rows:
        ratio = sec / full
        verdict = "" if goal is None else f"<= {goal:.2f} {'MET' if ratio <= goal else 'MISSED'}"
        print(f"{name:<16}| {sec:8.2f} | {calls:15d} | {ratio:7.3f} | {verdict}")


if __name__ == "__main__":
    main()
