"""The ``rendered_shots`` stage: a shot rendered from its depth and prompt with its learnt characters,
checked, and re-rendered with another seed or retrieval candidate when a check fails.

    from story_pipeline.render.stage import render_shot_checked
    r = render_shot_checked(artifacts_dir, story, shot, generator, load_estimator, "clip", CheckThresholds(), 3)
    r.best.rendered.video_path, r.best.report.failed, r.attempts   # the kept attempt and every one tried

Every attempt is a render memo (``render/shot.py``), so a rerun of an unchanged shot reads memos and
calls no model. ``<artifacts>/rendered_shots/<story>/<shot>.json`` points to the kept render and records
``request_key``: the identity of the shot's render inputs (the first attempt's memo key and the check
settings), which ``status`` compares to decide whether the shot is current.
"""

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from story_pipeline.corpus.retrieve import ShotRetrieval, retrieval_dir
from story_pipeline.depth.stage import depth_dir, shot_depth_cached
from story_pipeline.errors import NotReady
from story_pipeline.fsutil import atomic_write_text
from story_pipeline.render.checks import Attempt, CheckThresholds, check_shot, healing_plan, render_with_healing
from story_pipeline.render.shot import load_frames, render_dir, render_key, render_shot_cached
from story_pipeline.story.spec import Shot, Story


@dataclass
class CheckedShot:
    best: Attempt  # the kept attempt (the first that passed, else the least bad)
    attempts: list[Attempt]  # every attempt, in order
    depth_path: Path  # the kept attempt's depth
    request_key: str
    pointer: Path  # <shot>.json


def request_key(first_key: str, thresholds: CheckThresholds, attempts: int) -> str:
    """Identity of a shot's render inputs: its first attempt's memo key and how it is checked and healed."""
    payload = json.dumps([first_key, asdict(thresholds), attempts], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def render_pointer(artifacts_dir: Path, story_id: str, shot_id: str) -> Path:
    return render_dir(artifacts_dir, story_id) / f"{shot_id}.json"


def render_shot_checked(artifacts_dir: Path, story: Story, shot: Shot, generator, load_estimator: Callable,
                        normalise: str, thresholds: CheckThresholds, attempts: int, judge=None,
                        progress: Callable[[int, int], None] | None = None) -> CheckedShot:
    """Render the shot (paper steps 5 and 8's per-shot part), check it, heal it; point to the kept render.
    ``load_estimator()`` is called only when an attempt needs another candidate clip's depth."""
    from story_pipeline.depth.structure import load_motion_structure
    from story_pipeline.models.judge import get_judge
    from story_pipeline.personalize.character import learned_characters
    from story_pipeline.personalize.concepts import shot_personalization
    from story_pipeline.story.images import load_reference_image

    # 1. Inputs: the retrieval, the chosen clip's depth, the learnt characters the shot names
    art = Path(artifacts_dir)
    depth_pointer = depth_dir(art, story.id) / f"{shot.id}.json"
    retrieval_file = retrieval_dir(art, story.id) / f"{shot.id}.json"
    if not depth_pointer.exists() or not retrieval_file.exists():
        raise NotReady(f"Shot {shot.id!r} has no depth yet ({depth_pointer} is missing); materialize "
                           f"{story.id}/shot_depth for this partition first.")
    retrieval = ShotRetrieval.from_json(retrieval_file.read_text())
    learned = learned_characters(art, story, shot)
    personal = shot_personalization(story, shot, generator, learned)
    settings = story.resolved(shot)
    depth_paths = {0: Path(json.loads(depth_pointer.read_text())["depth"])}

    def depth_of(cand: int) -> Path:  # the next candidates' depth only when an attempt needs it
        if cand not in depth_paths:
            alt = dataclasses.replace(retrieval, chosen=retrieval.candidates[cand])
            depth_paths[cand] = shot_depth_cached(
                alt, settings.frames, (settings.resolution[1], settings.resolution[0]), load_estimator(),
                cache_dir=depth_dir(art, story.id) / ".memo", normalise=normalise).depth_path
        return depth_paths[cand]

    # 2. Render, check, heal
    def render(seed: int, cand: int):
        r = render_shot_cached(story, shot, depth_of(cand), generator, cache_dir=render_dir(art, story.id) / ".memo",
                               personalization=personal, overrides={"seed": seed}, progress=progress)
        clip = retrieval.chosen if cand == 0 else retrieval.candidates[cand]
        return r, clip["clip_id"], depth_of(cand)

    refs = [load_reference_image(p) for c in story.characters_in(shot) if c.token in learned
            for p in story.reference_images(c)]
    text = story.with_class_words(shot.prompt)
    judge = judge or get_judge()

    def check(r, depth_path):
        return check_shot(load_frames(r.frames_path), load_motion_structure(depth_path).depth, text, refs, judge,
                          thresholds)

    candidates = 1 if retrieval.pinned else len(retrieval.candidates)
    best, tried = render_with_healing(healing_plan(settings.seed, candidates, attempts), render, check)

    # 3. Point to the kept render
    key = request_key(render_key(story, shot, depth_paths[0], generator, personal)[0], thresholds, attempts)
    r = best.rendered
    pointer = render_pointer(art, story.id, shot.id)
    atomic_write_text(pointer, json.dumps(
        {**r.metadata, "video": str(r.video_path), "gif": str(r.gif_path), "frames_path": str(r.frames_path),
         "depth": str(depth_of(best.candidate)), "clip_id": best.clip_id, "checks": best.report.values,
         "failed": best.report.failed, "request_key": key}, indent=1, sort_keys=True))
    return CheckedShot(best, tried, depth_of(best.candidate), key, pointer)
