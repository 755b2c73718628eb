"""One video, untrusted: its limits checked before anything is decoded, then probed and split at cuts.

    from story_pipeline.corpus.probe import probe_video, split_shots
    info = probe_video("clip.mp4")                 # VideoRejected (one sentence, a kind) if unusable
    spans = split_shots("clip.mp4", info)          # [(start_frame, end_frame), ...] single shots
"""

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import decord
from scenedetect import ContentDetector, SceneManager, open_video

from story_pipeline.config import DecodeLimits
from story_pipeline.errors import StoryPipelineError

logger = logging.getLogger(__name__)
# PySceneDetect logs "Detecting scenes..." at INFO for every video: one line per clip is noise.
logging.getLogger("pyscenedetect").setLevel(logging.WARNING)


class VideoRejected(StoryPipelineError):
    """One video cannot be used. ``kind`` is a short category, ``reason`` one sentence."""

    def __init__(self, reason: str, kind: str):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    width: int
    height: int
    duration_s: float
    header_frames: int = 0  # frame count the container header states (0: it states none)


# ----------------------------------------------------------------------------------------------
# Probing: limits first (size, then header without decoding), then decord


def _looks_like_video(path: Path) -> bool:
    """Magic bytes of the common containers (used only to word the rejection reason)."""
    with open(path, "rb") as f:
        head = f.read(189)
    return (head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide")  # MP4 / MOV
            or head[:4] == b"\x1a\x45\xdf\xa3"                          # Matroska / WebM
            or head[:4] == b"RIFF"                                      # AVI
            or head[:4] == b"\x00\x00\x01\xba"                          # MPEG-PS
            or head[:1] == head[188:189] == b"G")                       # MPEG-TS sync bytes


def _check_limits(path: Path, width: int, height: int, duration_s: float, num_frames: int,
                  limits: DecodeLimits) -> None:
    # Orientation-agnostic: a portrait 2160x3840 video is as large as a landscape 3840x2160 one.
    long_side, short_side = sorted((limits.max_width, limits.max_height), reverse=True)
    if max(width, height) > long_side or min(width, height) > short_side:
        raise VideoRejected(f"{path}: resolution {width}x{height} is above the limit "
                            f"{limits.max_width}x{limits.max_height}.", "too_large")
    if duration_s > limits.max_duration_s:
        raise VideoRejected(f"{path}: duration {duration_s:.1f} s is above the limit "
                            f"{limits.max_duration_s:g} s.", "too_large")
    if num_frames > limits.max_frames:
        raise VideoRejected(f"{path}: {num_frames} frames is above the limit "
                            f"{limits.max_frames}.", "too_large")


def open_limited(path: str | os.PathLike, limits: DecodeLimits):
    """PyAV container of ``path`` whose decoders refuse frames above the resolution limit (max_pixels)
    and whose stream probing reads at most 5 MB."""
    return av.open(str(path), options={"max_pixels": str(limits.max_width * limits.max_height)},
                   container_options={"probesize": "5000000"})


def probe_video(path: str | os.PathLike, limits: DecodeLimits | None = None) -> VideoInfo:
    """Frame count, fps, size and duration of a video; raises VideoRejected if unusable.

    Order matters for untrusted files: nothing is decoded until size and header pass the limits.
    """
    path = Path(path)
    limits = limits or DecodeLimits()
    # 1. File size.
    if not path.is_file():
        raise VideoRejected(f"{path}: file not found.", "missing")
    size = path.stat().st_size
    if size == 0:
        raise VideoRejected(f"{path}: file is empty (0 bytes).", "empty")
    if size > limits.max_file_bytes:
        raise VideoRejected(f"{path}: file size {size / 2**20:.1f} MiB is above the limit "
                            f"{limits.max_file_bytes / 2**20:.1f} MiB.", "too_large")
    # 2. Container header via PyAV. FFmpeg's stream probing may decode a first packet (H.264
    #    decode delay, pixel format); max_pixels makes that decoder refuse oversized frames.
    try:
        with open_limited(path, limits) as container:
            if not container.streams.video:
                raise VideoRejected(f"{path}: has no video stream.", "not_video")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            rate = stream.average_rate or stream.guessed_rate or Fraction(0)
            if stream.duration is not None and stream.time_base is not None:
                duration_s = float(stream.duration * stream.time_base)
            else:
                duration_s = (container.duration or 0) / av.time_base
            stated_frames = stream.frames or 0  # exact where stated (mp4, mov, avi); mkv/webm: 0
            header_frames = stated_frames or int(round(duration_s * float(rate)))
    except VideoRejected:
        raise
    except Exception as e:
        if _looks_like_video(path):
            raise VideoRejected(f"{path}: cannot read the container header (corrupt or truncated "
                                f"file: {getattr(e, 'strerror', None) or e}).", "corrupt") from None
        raise VideoRejected(f"{path}: is not a video file (no known container header).",
                            "not_video") from None
    if width <= 0 or height <= 0:  # also when max_pixels stopped FFmpeg's probe decode
        raise VideoRejected(f"{path}: the header gives no usable frame size (corrupt file, or "
                            f"frames above {limits.max_width}x{limits.max_height}).", "corrupt")
    _check_limits(path, width, height, duration_s, header_frames, limits)
    # 3. decord: the frame index and average fps the rest of the pipeline will use.
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        num_frames, fps = len(reader), float(reader.get_avg_fps())
        del reader
    except Exception as e:  # decord's messages are C++ check failures: log them, don't show them
        logger.debug("decord failed on %s: %s", path, e)
        raise VideoRejected(f"{path}: decord cannot decode it (corrupt or truncated file).",
                            "corrupt") from None
    if fps <= 0:
        raise VideoRejected(f"{path}: has no valid frame rate.", "corrupt")
    duration_s = num_frames / fps
    _check_limits(path, width, height, duration_s, num_frames, limits)
    if num_frames < limits.min_frames:
        raise VideoRejected(f"{path}: too short ({num_frames} frames; at least "
                            f"{limits.min_frames} needed).", "too_short")
    return VideoInfo(num_frames=num_frames, fps=fps, width=width, height=height,
                     duration_s=duration_s, header_frames=stated_frames)


# ----------------------------------------------------------------------------------------------
# Shot splitting


def split_shots(path: str | os.PathLike, info: VideoInfo, min_frames: int = 8,
                threshold: float = 27.0) -> list[tuple[int, int]]:
    """Single-shot spans [(start_frame, end_frame), ...] (end exclusive) found by ContentDetector.

    This decodes the whole video (OpenCV backend: its frame count matches decord's). Shots shorter
    than ``min_frames`` (only a tail can be: no cut is placed within min_frames of another) are
    dropped. Raises VideoRejected if the video decodes far fewer frames than its index claims.
    """
    path = Path(path)
    try:
        video = open_video(str(path), backend="opencv")
        manager = SceneManager()
        manager.add_detector(ContentDetector(threshold=threshold, min_scene_len=min_frames))
        manager.detect_scenes(video)
        decoded = video.frame_number
        cuts = [start.get_frames() for start, _ in manager.get_scene_list(start_in_scene=True)][1:]
    except Exception as e:
        raise VideoRejected(f"{path}: decoding failed during shot detection ({e}).",
                            "corrupt") from None
    # Allow a frame or two of disagreement between decoders; more means missing data.
    if decoded < info.num_frames - max(2, info.num_frames // 50):
        raise VideoRejected(f"{path}: truncated or corrupt (only {decoded} of {info.num_frames} "
                            "frames decode).", "corrupt")
    end = min(decoded, info.num_frames)
    bounds = [0] + [c for c in cuts if 0 < c < end] + [end]
    spans = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b - a >= min_frames]
    if len(spans) < len(bounds) - 1:
        logger.info("%s: dropped %d shot(s) shorter than %d frames", path,
                    len(bounds) - 1 - len(spans), min_frames)
    return spans
