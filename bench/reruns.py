"""Partial-rerun cost of a whole story (personalize, retrieve, depth, render + checks, assemble), one run.

    .venv/bin/python bench/reruns.py            # ~5 min on 2 cores

A 4-shot example story over a 120-clip ToyWorld corpus, on a temporary data root (and its own
Dagster instance), run through `story run`'s code:
  full      every shot computed (empty memos), the character personalized, the video assembled
  shots     the same story again with only the renders' memos removed: the per-shot work
  edited    one shot's prompt edited (its retrieval and render rerun; depth if the clip changed;
            the video is re-assembled)
  unchanged nothing edited (every stage a memo hit)
Goals (issues 3 and 6): edited / full <= 0.30, unchanged / full <= 0.05. Dagster's per-run overhead is
included (it is what a user waits for); model loading is excluded by a warm-up story first.
Shots whose assets are current launch no run at all (`status.story_status`).
"""

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import story_pipeline  # noqa: E402,F401  (offline HF env vars)
from story_pipeline.examples import copy_examples, generate_example_references  # noqa: E402


def run_story(story_file: Path) -> tuple[float, int, int, int]:
    """`story run` in-process; return (seconds, shot runs launched, estimator calls, generator calls)."""
    from story_pipeline.cli import _run_story

    t0 = time.perf_counter()
    rows = _run_story(story_file)
    seconds = time.perf_counter() - t0
    return (seconds, sum(r["ran"] for r in rows), sum(r.get("estimator_calls", 0) for r in rows),
            sum(r.get("generator_calls", 0) for r in rows))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["STORY_DATA_ROOT"] = str(tmp / "data")  # `story run` reads its settings from here
        from story_pipeline.cli.run import materialize

        materialize(["clip_corpus", "clip_index"], run_config={"ops": {"clip_corpus": {"config": {"toyworld_clips": 120}}}})
        stories = copy_examples(tmp / "stories")
        generate_example_references(stories)
        run_story(stories / "bolt_and_puddle" / "story.yaml")  # load MiniLM, the depth net, LanceDB once

        story_file = stories / "tabby_adventure" / "story.yaml"
        full = run_story(story_file)
        import shutil

        shutil.rmtree(tmp / "data" / "artifacts" / "rendered_shots" / "tabby_adventure")
        shots = run_story(story_file)
        text = story_file.read_text()
        story_file.write_text(text.replace("a <tabby> spins in circles in the snow", "a <tabby> hops along on the beach"))
        edited = run_story(story_file)
        unchanged = run_story(story_file)

    rows = [("full (4 shots)", *full, None), ("shots only", *shots, None), ("edited 1 of 4", *edited, 0.30),
            ("unchanged", *unchanged, 0.05)]
    print("\nStory rerun cost: `story run` (the whole story), in-process, one run")
    print(f"{'run':<16}| {'seconds':>8} | {'runs':>4} | {'estimator calls':>15} | {'generator calls':>15} | "
          f"{'/ full':>7} | {'/ shots':>7} | goal (/ full)")
    for name, sec, runs, calls, gcalls, goal in rows:
        ratio = sec / full[0]
        verdict = "" if goal is None else f"<= {goal:.2f} {'MET' if ratio <= goal else 'MISSED'}"
        print(f"{name:<16}| {sec:8.2f} | {runs:4d} | {calls:15d} | {gcalls:15d} | {ratio:7.3f} | "
              f"{sec / shots[0]:7.3f} | {verdict}")


if __name__ == "__main__":
    main()
