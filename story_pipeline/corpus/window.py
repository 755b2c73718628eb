"""The window of a retrieved clip a shot uses: the shot's own length of clip time, where the clip moves most.

    from story_pipeline.corpus.window import clip_window
    c = clip_window(hit_dict, shot_seconds=2.0, pace=1.0)   # the clip dict, span narrowed to the window
    c["start_frame"], c["end_frame"], c["window"]["why"]

A shot samples its frames evenly over the span it is handed. Handed a whole 80-s clip, a 2-s shot
would play it 40x too fast; so the span becomes a window of ``shot seconds x pace`` of clip time
(pace 1 = real time). The rule:

- a clip up to ``WHOLE_CLIP_STRETCH`` (1.5) times the window is used whole (it plays at most 1.5x
  the asked pace, and no motion is cut off);
- a longer clip contributes a window of exactly ``shot seconds x pace``, placed where the clip shows
  the most motion (``place_window``);
- a clip shorter than the window (only possible with pace > 1) is used whole.

Motion is measured on a cheap decode: at most ``MOTION_SAMPLES`` frames spread over the clip, decoded
at ``MOTION_SIDE`` pixels. Per pair of consecutive samples, the energy is the mean absolute grey-level
change of the pixels that changed more than the frame's noise: the pair's median change is removed
first (global flicker, exposure), and pixels within 3 robust standard deviations (MAD) of it count as
noise. A 3-tap median over time then drops one-pair spikes (a cut, a flash). The window holding the
most energy wins; among windows within 2% of the best, the one whose motion is most centred (so an
event keeps its start and end), then the earliest. Everything is deterministic. A clip that cannot be
decoded, or shows no motion, gets the centred window and says so in ``why``.
"""

import numpy as np

WHOLE_CLIP_STRETCH = 1.5  # a clip up to this many windows long is used whole: at most 1.5x the asked pace
MOTION_SAMPLES = 96  # frames decoded to measure motion: a 795-frame clip is sampled every 9th frame
MOTION_SIDE = 64  # pixels, longer side of the decoded samples: motion of a subject survives, noise averages out
NOISE_SIGMAS = 3.0  # a pixel changed when its change is this many robust std devs above the pair's median
NOISE_FLOOR = 2.0  # grey levels: changes this small are compression noise even in a clean clip
TIE = 0.02  # windows within 2% of the best energy count as equal; the most centred motion wins


def window_length(clip_frames: int, fps: float, shot_seconds: float, pace: float, min_frames: int = 8) -> int:
    """Frames of the clip the shot uses: the whole span, or ``shot_seconds * pace`` of clip time
    (at least ``min_frames``, what the depth stage needs to sample a span)."""
    length = max(min_frames, round(shot_seconds * pace * fps))
    return clip_frames if clip_frames <= WHOLE_CLIP_STRETCH * length else length


def motion_energy(path: str, start_frame: int, end_frame: int, limits=None) -> tuple[np.ndarray, np.ndarray]:
    """-> (sample frame indices (N,), motion energy of each pair of consecutive samples (N - 1,))."""
    from story_pipeline.corpus.frames import decode_frames

    n = min(end_frame - start_frame, MOTION_SAMPLES)
    idx = np.unique(np.round(np.linspace(start_frame, end_frame - 1, n)).astype(np.int64))  # (N,)
    grey = decode_frames(path, idx, limits, max_side=MOTION_SIDE).astype(np.float32).mean(axis=-1)  # (N, h, w)
    diff = np.diff(grey, axis=0).reshape(len(idx) - 1, -1)  # (N - 1, h * w)
    diff -= np.median(diff, axis=1, keepdims=True)  # a global brightness change (flicker) is not motion
    change = np.abs(diff)
    sigma = 1.4826 * np.median(change, axis=1, keepdims=True)  # robust std of the pair's pixel noise
    moved = change > np.maximum(NOISE_SIGMAS * sigma, NOISE_FLOOR)
    energy = (change * moved).mean(axis=1)  # (N - 1,)
    if len(energy) >= 3:  # a one-pair spike (cut, flash) is not motion: 3-tap median
        padded = np.pad(energy, 1, mode="edge")
        energy = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
    return idx, energy


def place_window(idx: np.ndarray, energy: np.ndarray, length: int, start_frame: int, end_frame: int) -> tuple[int, float]:
    """-> (first frame of the ``length``-frame window in [start_frame, end_frame) holding the most motion,
    its share of the clip's motion; 0 when there is none and the window is centred)."""
    last = end_frame - length
    starts = np.unique(np.clip(np.concatenate([idx, idx - length + 1, [start_frame, last]]), start_frame, last))  # (K,)
    a, b = idx[:-1].astype(np.float64), idx[1:].astype(np.float64)  # each pair covers frames [a, b]
    lo, hi = starts[:, None].astype(np.float64), starts[:, None] + length - 1.0  # (K, 1) windows [lo, hi]
    overlap = np.clip(np.minimum(b, hi) - np.maximum(a, lo), 0, None) / np.maximum(b - a, 1)  # (K, P)
    held = overlap @ energy  # (K,) motion inside each window
    total = float(energy.sum())
    if total <= 1e-9 or held.max() <= 1e-9:
        return start_frame + (end_frame - start_frame - length) // 2, 0.0
    near = held >= (1 - TIE) * held.max()
    centre = (overlap * energy) @ ((a + b) / 2) / np.maximum(held, 1e-12)  # (K,) where the window's motion is
    off_centre = np.where(near, np.abs(centre - (starts + (length - 1) / 2)), np.inf)
    best = int(np.argmin(off_centre))  # argmin: the earliest among equals
    return int(starts[best]), float(held[best] / total)


def clip_window(clip: dict, shot_seconds: float, pace: float = 1.0, limits=None) -> dict:
    """The clip (a retrieval Hit as a dict) with ``start_frame``/``end_frame`` narrowed to the shot's window
    and a ``window`` record: start_frame, end_frame, pace (clip seconds per shot second as used),
    clip_start_frame, clip_end_frame, why."""
    from story_pipeline.config import get_settings
    from story_pipeline.corpus.frames import ClipUnreadable, SpanTooShort

    limits = limits or get_settings().limits
    start, end = int(clip["start_frame"]), int(clip["end_frame"])
    frames = end - start
    fps = float(clip.get("fps") or 0.0) or frames / max(float(clip["duration_s"]), 1e-6)
    length = window_length(frames, fps, shot_seconds, pace, min(frames, limits.min_frames))
    if length >= frames:
        first = start
        why = (f"whole clip: {frames / fps:.1f} s for a {shot_seconds:.1f}-s shot at pace {pace:g} "
               f"(a clip up to {WHOLE_CLIP_STRETCH:g}x the {shot_seconds * pace:.1f}-s window is used whole)")
    else:
        try:
            idx, energy = motion_energy(clip["path"], start, end, limits)
            first, share = place_window(idx, energy, length, start, end)
            why = (f"{length / fps:.1f} s of the {frames / fps:.1f}-s clip (pace {pace:g}) where it moves most: "
                   f"{share:.0%} of the clip's motion" if share > 0 else
                   f"{length / fps:.1f} s of the {frames / fps:.1f}-s clip (pace {pace:g}), centred: no motion measured")
        except (ClipUnreadable, SpanTooShort) as e:  # retrieval still answers; the depth stage reports the file
            first = start + (frames - length) // 2
            why = (f"{length / fps:.1f} s of the {frames / fps:.1f}-s clip (pace {pace:g}), centred: "
                   f"motion not measured ({str(e).split('; ')[0]})")
    window = {"start_frame": first, "end_frame": first + length, "pace": round(length / fps / shot_seconds, 3),
              "clip_start_frame": start, "clip_end_frame": end, "why": why}
    return {**clip, "start_frame": first, "end_frame": first + length, "window": window}
