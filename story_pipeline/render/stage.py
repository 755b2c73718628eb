"""The render stage (each shot's ``<shot>_render`` asset): a shot rendered from its depth and prompt with
its learnt characters, checked, and re-rendered with another seed or retrieval candidate when a check fails.

    from story_pipeline.render.stage import render_shot_checked
    r = render_shot_checked(artifacts_dir, story, shot, generator, load_estimator, "clip", CheckThresholds(), 3)
    r.best.rendered.video_path, r.best.report.failed, r.attempts   # the kept attempt and every one tried

Every attempt is a render memo (``render/shot.py``), so a rerun of an unchanged shot reads memos and
calls no model. ``<artifacts>/rendered_shots/<story>/<shot>.json`` points to the kept render and records
``request_key``: the identity of the shot's render inputs (the first attempt's memo key and the check
settings), which ``status`` compares to decide whether the shot is current.
"""

import dataclasses
import functools
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from story_pipeline.corpus.retrieve import ShotRetrieval, retrieval_dir
from story_pipeline.depth.stage import depth_dir, shot_depth_cached
from story_pipeline.errors import NotReady
from story_pipeline.fsutil import atomic_write_text
from story_pipeline.render.checks import (
    Attempt, CheckReport, CheckThresholds, check_shot, healing_plan, render_with_healing,
)
from story_pipeline.render.guidance import structure_guidance
from story_pipeline.render.shot import current_render, load_frames, render_dir, render_key, render_shot_cached
from story_pipeline.story.spec import Shot, Story


@dataclass
class CheckedShot:
    best: Attempt  # the kept attempt (the first that passed, else the least bad)
    attempts: list[Attempt]  # every attempt, in order
    depth_path: Path  # the kept attempt's depth
    request_key: str
    pointer: Path  # <shot>.json
    guidance: str = ""  # the kept attempt's structure guidance and why (render/guidance.py)


def request_key(first_key: str, thresholds: CheckThresholds, attempts: int) -> str:
    """Identity of a shot's render inputs: its first attempt's memo key and how it is checked and healed."""
    payload = json.dumps([first_key, asdict(thresholds), attempts], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


CHECKS_VERSION = 2  # bump when the same frames would be checked differently (2: the kind check)


def _check_key(text: str, references: list[Path], thresholds: CheckThresholds, judge: str, kind: str | None) -> str:
    """A shot check's memo key (beside the render's): the text, the reference images' bytes, the
    thresholds, the judge's weights and the kind checked."""
    from story_pipeline.fsutil import content_digest

    payload = json.dumps([CHECKS_VERSION, text, content_digest(references), asdict(thresholds), judge, kind])
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _read_report(path: Path) -> CheckReport | None:
    try:
        return CheckReport(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def render_pointer(artifacts_dir: Path, story_id: str, shot_id: str) -> Path:
    return render_dir(artifacts_dir, story_id) / f"{shot_id}.json"


def render_shot_checked(artifacts_dir: Path, story: Story, shot: Shot, generator, load_estimator: Callable,
                        normalise: str, thresholds: CheckThresholds, attempts: int, judge=None,
                        progress: Callable[[int, int], None] | None = None,
                        load_generator: Callable | None = None) -> CheckedShot:
    """Render the shot (paper steps 5 and 8's per-shot part), check it, heal it; point to the kept render.
    ``generator``: a loaded generator, or its ``GeneratorIdentity`` with ``load_generator()`` to load it
    only when an attempt is not memoised (a rerun of an unchanged shot loads no model: its renders and
    check results are read back). ``load_estimator()`` is called only when an attempt needs another
    candidate clip's depth."""
    from story_pipeline.depth.structure import load_motion_structure
    from story_pipeline.models.judge import get_judge, judge_id
    from story_pipeline.personalize.character import learned_concepts
    from story_pipeline.personalize.concepts import personalization_identity, shot_personalization
    from story_pipeline.story.images import load_reference_image

    # 1. Inputs: the retrieval, the chosen clip's depth, the learnt characters the shot names
    art = Path(artifacts_dir)
    depth_pointer = depth_dir(art, story.id) / f"{shot.id}.json"
    retrieval_file = retrieval_dir(art, story.id) / f"{shot.id}.json"
    if not depth_pointer.exists() or not retrieval_file.exists():
        raise NotReady(f"Shot {shot.id!r} has no depth yet ({depth_pointer} is missing); materialize "
                           f"{story.id}/shots/{shot.id}_depth first.")
    retrieval = ShotRetrieval.from_json(retrieval_file.read_text())
    pointers = learned_concepts(art, story, shot)
    learned = {tok: Path(p["path"]) for tok, p in pointers.items()}
    personal_id = personalization_identity(story, shot, pointers)  # what the memo keys need, nothing loaded
    settings = story.resolved(shot)

    @functools.cache
    def personal():  # the loaded generator and the characters' conditioning, on the first render that runs
        g = load_generator() if load_generator is not None else generator
        return g, shot_personalization(story, shot, g, learned)
    depth_paths = {0: Path(json.loads(depth_pointer.read_text())["depth"])}

    def depth_of(cand: int) -> Path:  # the next candidates' depth only when an attempt needs it
        if cand not in depth_paths:
            alt = dataclasses.replace(retrieval, chosen=retrieval.candidates[cand])
            depth_paths[cand] = shot_depth_cached(
                alt, settings.frames, (settings.resolution[1], settings.resolution[0]), load_estimator(),
                cache_dir=depth_dir(art, story.id) / ".memo", normalise=normalise).depth_path
        return depth_paths[cand]

    # 2. Render, check, heal
    memo = render_dir(art, story.id) / ".memo"

    def clip_of(cand: int) -> dict:
        return retrieval.chosen if cand == 0 else retrieval.candidates[cand]

    def render(seed: int, cand: int):
        overrides = {"seed": seed, **structure_guidance(story, shot, clip_of(cand)).overrides}
        r = current_render(story, shot, depth_of(cand), generator, memo, personal_id, overrides)
        if r is None:
            g, p = personal()
            r = render_shot_cached(story, shot, depth_of(cand), g, cache_dir=memo, personalization=p,
                                   overrides=overrides, progress=progress)
        return r, clip_of(cand)["clip_id"], depth_of(cand)

    ref_paths = [p for c in story.characters_in(shot) if c.token in learned for p in story.reference_images(c)]
    text = story.with_class_words(shot.prompt)
    kinds = {c.class_word for c in story.characters_in(shot)}
    kind = kinds.pop() if len(kinds) == 1 else None  # the kind the frames must show (one shared class word)
    check_key = _check_key(text, ref_paths, thresholds, judge_id() if judge is None else "given", kind)

    def check(r, depth_path):
        path = memo / f"{r.metadata['memo_key']}.check-{check_key}.json"
        if judge is None and (done := _read_report(path)) is not None:
            return done
        report = check_shot(load_frames(r.frames_path), load_motion_structure(depth_path).depth, text,
                            [load_reference_image(p) for p in ref_paths], judge or get_judge(), thresholds, kind)
        if judge is None:
            atomic_write_text(path, json.dumps(asdict(report)))
        return report

    candidates = 1 if retrieval.pinned else len(retrieval.candidates)
    best, tried = render_with_healing(healing_plan(settings.seed, candidates, attempts), render, check)

    # 3. Point to the kept render
    first = structure_guidance(story, shot, retrieval.chosen).overrides
    key = request_key(render_key(story, shot, depth_paths[0], generator, personal_id, first)[0], thresholds, attempts)
    r = best.rendered
    pointer = render_pointer(art, story.id, shot.id)
    why = structure_guidance(story, shot, clip_of(best.candidate)).reason
    atomic_write_text(pointer, json.dumps(
        {**r.metadata, "guidance": why, "video": str(r.video_path), "gif": str(r.gif_path), "frames_path": str(r.frames_path),
         "depth": str(depth_of(best.candidate)), "clip_id": best.clip_id, "checks": best.report.values,
         "failed": best.report.failed, "request_key": key}, indent=1, sort_keys=True))
    return CheckedShot(best, tried, depth_of(best.candidate), key, pointer, why)
