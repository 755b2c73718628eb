"""Rendering a shot (paper step 5): its motion structure + its prompt -> frames, mp4 and GIF.

    from story_pipeline.render.shot import render_shot_cached
    r = render_shot_cached(story, shot, depth_path, generator, cache_dir)
    r.video_path, r.gif_path, r.frames_path, r.metadata, r.cache_hit, r.generator_calls

Memoised on disk by everything that decides the frames: the render prompt, the depth memo (which
already names clip span, size, estimator and normalisation), the resolved render settings, the
generator's weights and the personalization of the characters the shot names
(``personalize.concepts.Personalization``: the render prompt, a digest, the learnt concepts). An unchanged shot
is read back and the generator never runs; a changed seed or tau re-renders only that shot.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from safetensors.numpy import load_file, save_file

from story_pipeline.fsutil import atomic_path, atomic_write_text
from story_pipeline.story.spec import Shot, Story
from story_pipeline.video_io import write_gif, write_mp4

RENDER_VERSION = 1  # bump when the same inputs would render differently


@dataclass
class RenderedShot:
    video_path: Path  # H.264 yuv420p mp4
    gif_path: Path  # looping preview, 2x upscaled
    frames_path: Path  # safetensors {"frames": (F, H, W, 3) uint8}: what the checks and storyboard read
    metadata: dict  # every generation parameter, the seed, model id, timings
    cache_hit: bool
    generator_calls: int  # 0 on a cache hit


def render_dir(artifacts_dir: Path, story_id: str) -> Path:
    """Where a story's renders live: ``<shot>.json`` (current) and ``.memo/<key>.*``."""
    return Path(artifacts_dir) / "rendered_shots" / story_id


def render_memo_key(prompt: str, depth_path: Path, settings: dict, model_id: str, personalization: str = "") -> str:
    payload = json.dumps([RENDER_VERSION, prompt, Path(depth_path).stem, settings, model_id, personalization],
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def render_settings(story: Story, shot: Shot, generator, overrides: dict | None = None) -> dict:
    """The resolved parameters a render uses (generator defaults filled in; ``overrides`` on top,
    e.g. another seed for a healing attempt)."""
    s = story.resolved(shot)
    return {"frames": s.frames, "fps": s.fps, "width": s.resolution[0], "height": s.resolution[1],
            "tau": s.tau, "strength": s.strength, "seed": s.seed,
            "guidance": generator.default_guidance if s.guidance is None else s.guidance,
            "steps": generator.default_steps if s.steps is None else s.steps,
            "sampler": generator.default_sampler} | (overrides or {})


def load_frames(path: Path) -> np.ndarray:
    return load_file(str(path))["frames"]


def render_key(story: Story, shot: Shot, depth_path: Path, generator, personalization=None,
               overrides: dict | None = None) -> tuple[str, dict, str]:
    """(memo key, resolved settings, render prompt) of a render. ``generator``: a loaded generator or its
    ``GeneratorIdentity``; ``personalization``: anything with ``prompt`` and ``digest`` (or None: class words)."""
    settings = render_settings(story, shot, generator, overrides)
    prompt = personalization.prompt if personalization else story.with_class_words(shot.prompt)
    key = render_memo_key(prompt, depth_path, settings, generator.model_id,
                          personalization.digest if personalization else "")
    return key, settings, prompt


def _memo_files(cache_dir: Path, key: str) -> list[Path]:
    return [Path(cache_dir) / f"{key}{ext}" for ext in (".mp4", ".gif", ".safetensors", ".json")]


def current_render(story: Story, shot: Shot, depth_path: Path, generator, cache_dir: Path,
                   personalization=None, overrides: dict | None = None) -> RenderedShot | None:
    """The memoised render for the shot's present inputs, or None if it would have to run."""
    paths = _memo_files(cache_dir, render_key(story, shot, depth_path, generator, personalization, overrides)[0])
    if all(p.exists() for p in paths):
        return RenderedShot(*paths[:3], json.loads(paths[3].read_text()), True, 0)
    return None


def render_shot_cached(story: Story, shot: Shot, depth_path: Path, generator, cache_dir: Path,
                       personalization=None,
                       progress: Callable[[int, int], None] | None = None,
                       overrides: dict | None = None) -> RenderedShot:
    """Render the shot from its depth memo, or read the memo of an identical earlier render."""
    from story_pipeline.depth.structure import load_motion_structure

    if (done := current_render(story, shot, depth_path, generator, cache_dir, personalization, overrides)) is not None:
        return done
    key, settings, prompt = render_key(story, shot, depth_path, generator, personalization, overrides)
    video, gif, frames_path, meta_path = _memo_files(cache_dir, key)
    depth = load_motion_structure(depth_path).depth  # (F, H, W) in [-1, 1]
    kw = dict(tau=settings["tau"], strength=settings["strength"], steps=settings["steps"],
              guidance=settings["guidance"], seed=settings["seed"], sampler=settings["sampler"], progress=progress)
    if personalization is not None and personalization.concepts is not None:
        out = personalization.concepts.generate(prompt, depth, **kw)  # TimeInv rows per step + LoRA
        out.metadata["prompt"] = prompt
    else:
        out = generator.generate(prompt, depth, step_embeds=personalization.step_embeds if personalization else None,
                                 **kw)
    meta = {**out.metadata, "story": story.id, "shot": shot.id, "render_prompt": prompt, "shot_prompt": shot.prompt,
            "fps": settings["fps"], "depth": str(depth_path), "memo_key": key,
            "personalization": personalization.digest if personalization else None}
    # everything but the metadata first: the metadata file's presence marks the memo complete
    with atomic_path(frames_path) as tmp:
        save_file({"frames": np.ascontiguousarray(out.frames)}, str(tmp))
    write_mp4(video, out.frames, fps=settings["fps"])
    write_gif(gif, out.frames, fps=settings["fps"], scale=2)
    atomic_write_text(meta_path, json.dumps(meta, indent=1, sort_keys=True))
    return RenderedShot(video, gif, frames_path, meta, False, 1)
