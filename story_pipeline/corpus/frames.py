"""Frames of a corpus video, read under the decode limits (the depth stage's and the clip window's reader).

    from story_pipeline.corpus.frames import decode_frames
    frames = decode_frames("clip.mp4", np.arange(0, 32, 4))            # (8, H, W, 3) uint8
    small = decode_frames("clip.mp4", idx, max_side=64)               # scaled while decoding

The file passes ``probe.probe_video`` (size, header, resolution, duration, frame count) before decord
decodes anything; a file that fails it, or that decord cannot decode, is ``ClipUnreadable`` with one
sentence naming it; a frame index past the file's end is ``SpanTooShort``.
"""

import logging
from pathlib import Path

import decord
import numpy as np

from story_pipeline.config import DecodeLimits, get_settings
from story_pipeline.corpus.probe import VideoRejected, probe_video
from story_pipeline.errors import StoryPipelineError

logger = logging.getLogger(__name__)


class SpanTooShort(StoryPipelineError, ValueError):
    """The clip span has fewer frames than the shot's sampling needs."""


class ClipUnreadable(StoryPipelineError):
    """The clip's video is missing, above the decode limits, or cannot be decoded."""


def decode_frames(path: str | Path, indices: np.ndarray, limits: DecodeLimits | None = None,
                  max_side: int | None = None) -> np.ndarray:
    """(N, H, W, 3) uint8 frames ``indices`` of a video, after the file passed the decode limits.
    ``max_side``: scale while decoding so the longer side is at most this many pixels (aspect kept)."""
    return read_frames(path, indices, limits or get_settings().limits, max_side)[0]


def read_frames(path: str | Path, indices: np.ndarray, limits: DecodeLimits,
            max_side: int | None = None) -> tuple[np.ndarray, float]:
    """-> (frames (N, H, W, 3) uint8, the video's average fps)."""
    try:
        info = probe_video(path, limits)  # size, header, resolution, duration, frame count: before decoding
    except VideoRejected as e:
        raise ClipUnreadable(str(e)) from None
    if indices.max() >= info.num_frames:
        raise SpanTooShort(f"{path}: frame {int(indices.max())} is past the video's last frame "
                           f"({info.num_frames} frames); the clip span does not fit the file.")
    unique, inverse = np.unique(indices, return_inverse=True)  # decode each frame once, even if repeated
    previous = getattr(decord.bridge._CURRENT_BRIDGE, "type", "native")
    try:
        decord.bridge.set_bridge("native")
        scale = min(1.0, max_side / max(info.width, info.height)) if max_side else 1.0
        width, height = (max(2, round(info.width * scale)), max(2, round(info.height * scale))) if scale < 1 else (-1, -1)
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1, width=width, height=height)
        frames = reader.get_batch(unique.tolist()).asnumpy()  # (U, H, W, 3) uint8
        del reader
    except Exception as e:  # decord raises C++ check failures: log them, don't show them
        logger.debug("decord failed on %s: %s", path, e)
        raise ClipUnreadable(f"{path}: decord cannot decode frames {unique.min()}..{unique.max()} "
                             f"(corrupt or truncated file).") from None
    finally:
        decord.bridge.set_bridge(previous)  # the bridge is process-global state
    return frames[inverse.reshape(-1)], info.fps
