"""Long takes with a known moving stretch: a ToyWorld character stands still, does its motion, stands still.

    from story_pipeline.eval.long_clips import long_take, window_placement
    frames, moving = long_take("cat", "orange", "walk_right", seed=3)   # (F, H, W, 3) uint8, (first, end)
    r = window_placement(tmp_dir, takes=12)      # bench/retrieval.py: where the shot's windows fall

A real 80-s clip of a fixed camera on a lawn has seconds of nothing around the event a query names;
these takes have the same shape with ground truth: still frames (the motion's first pose), the motion,
still frames (its last pose), camera noise on every frame and one flash while nothing moves.
"""

import random
import time
from pathlib import Path

import numpy as np


def long_take(species: str, colour: str, motion: str, setting: str = "meadow", seed: int = 0,
              still: int = 120, moving: int = 48, after: int = 60, size: int = 64,
              flash_at: int | None = 40) -> tuple[np.ndarray, tuple[int, int]]:
    """-> ((still + moving + after, size, size, 3) uint8 frames, the moving frames' [first, end))."""
    from story_pipeline.toyworld import Character, ClipSpec, render_clip

    act = render_clip(ClipSpec(Character(species, colour), motion, setting, seed, num_frames=moving, size=size)).rgb
    frames = np.concatenate([np.repeat(act[:1], still, 0), act, np.repeat(act[-1:], after, 0)]).astype(np.int16)
    frames += np.random.default_rng(seed).integers(-4, 5, frames.shape, dtype=np.int16)  # camera noise
    if flash_at is not None and flash_at < still:
        frames[flash_at] += 40  # a flash while nothing moves
    return np.clip(frames, 0, 255).astype(np.uint8), (still, still + moving)


def window_placement(work_dir: Path, takes: int = 12, fps: int = 12, shot_seconds: float = 2.0, seed: int = 0) -> dict:
    """Windows of ``shot_seconds`` shots on ``takes`` random long takes (10-40 s of stillness around 4 s of
    motion): the share inside the moving stretch (±2 frames), the largest pace used, ms per clip."""
    from story_pipeline.corpus.window import clip_window
    from story_pipeline.toyworld import COLOURS, MOTIONS, SETTINGS, SPECIES
    from story_pipeline.video_io import write_mp4

    rng = random.Random(seed)
    inside, paces, seconds = 0, [], 0.0
    for i in range(takes):
        still, after = rng.randrange(fps * 10, fps * 30), rng.randrange(fps * 2, fps * 10)
        frames, (lo, hi) = long_take(rng.choice(sorted(SPECIES)), rng.choice(sorted(COLOURS)), rng.choice(sorted(MOTIONS)),
                                     rng.choice(sorted(SETTINGS)), seed=i, still=still, moving=4 * fps, after=after)
        path = write_mp4(Path(work_dir) / f"take{i}.mp4", frames, fps)
        clip = {"clip_id": f"take{i}", "path": str(path), "start_frame": 0, "end_frame": len(frames),
                "fps": float(fps), "duration_s": len(frames) / fps}
        t0 = time.perf_counter()
        w = clip_window(clip, shot_seconds, 1.0)["window"]
        seconds += time.perf_counter() - t0
        inside += lo - 2 <= w["start_frame"] and w["end_frame"] <= hi + 2
        paces.append(w["pace"])
    return {"takes": takes, "inside": inside / takes, "max_pace": max(paces), "ms_per_clip": 1000 * seconds / takes}
