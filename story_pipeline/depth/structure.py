"""Motion structure: frames sampled from a clip span, their depth normalised to [-1, 1], saved and previewed."""


import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.numpy import load_file, save

from story_pipeline.config import DecodeLimits, get_settings
from story_pipeline.fsutil import atomic_path
from story_pipeline.corpus.frames import SpanTooShort, decode_frames, read_frames
from story_pipeline.depth.estimators import DepthError, DepthEstimator, resize_maps


SAMPLING_MODES = ("uniform", "stride")
NORMALISATIONS = ("clip", "frame", "clip_aligned")
FIT_MODES = ("crop", "stretch")
FORMAT_VERSION = 1  # bump when the saved tensors or metadata change meaning



# --- frame sampling -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipSpan:
    """Frames [start_frame, end_frame) of a video file (a retrieval ``Hit`` has the same fields)."""
    path: str
    start_frame: int
    end_frame: int
    fps: float = 0.0  # 0 = unknown (read from the file)
    clip_id: str = ""


def as_clip_span(clip) -> ClipSpan:
    """A ClipSpan from a retrieval Hit, a ClipSpan, a dict with the same keys, or (path, start, end)."""
    if isinstance(clip, ClipSpan):
        return clip
    if isinstance(clip, (tuple, list)) and len(clip) == 3:
        return ClipSpan(str(clip[0]), int(clip[1]), int(clip[2]))
    get = clip.get if isinstance(clip, dict) else lambda k, d=None: getattr(clip, k, d)
    if get("path") is None or get("start_frame") is None or get("end_frame") is None:
        raise ValueError(f"motion_structure needs a clip with path, start_frame and end_frame, got {clip!r}.")
    return ClipSpan(str(get("path")), int(get("start_frame")), int(get("end_frame")),
                    float(get("fps", 0.0) or 0.0), str(get("clip_id", "") or ""))


def frame_indices(start_frame: int, end_frame: int, num_frames: int, mode: str = "uniform",
                  stride: int | None = None, min_span: int = 1) -> np.ndarray:
    """(num_frames,) int64 frame indices inside [start_frame, end_frame).

    ``uniform``: evenly spread over the span, first and last frame included (resamples: repeats
    frames when the span is shorter than the shot); the span needs ``min(num_frames, min_span)``
    frames. ``stride``: ``start_frame + stride * i``; the span needs ``stride * (num_frames - 1) + 1``."""
    if mode not in SAMPLING_MODES:
        raise ValueError(f"sampling mode must be one of {SAMPLING_MODES}, got {mode!r}.")
    if not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}.")
    if start_frame < 0 or end_frame <= start_frame:
        raise SpanTooShort(f"Clip span [{start_frame}, {end_frame}) is empty or negative; "
                           f"retrieval must hand over a span with end_frame > start_frame >= 0.")
    span = end_frame - start_frame
    if mode == "stride":
        stride = 1 if stride is None else stride
        if not isinstance(stride, (int, np.integer)) or stride < 1:
            raise ValueError(f"stride must be a positive integer, got {stride!r}.")
        needed = stride * (num_frames - 1) + 1
        if span < needed:
            raise SpanTooShort(f"Clip span [{start_frame}, {end_frame}) has {span} frames; {num_frames} frames "
                               f"at stride {stride} need {needed}; use sampling 'uniform' or a longer clip.")
        return start_frame + stride * np.arange(num_frames, dtype=np.int64)
    needed = min(num_frames, min_span)
    if span < needed:
        raise SpanTooShort(f"Clip span [{start_frame}, {end_frame}) has {span} frames; at least {needed} are "
                           f"needed to drive a {num_frames}-frame shot; retrieve a longer clip.")
    return np.round(np.linspace(start_frame, end_frame - 1, num_frames)).astype(np.int64)


def sample_clip_frames(path: str | Path, start_frame: int, end_frame: int, num_frames: int,
                       mode: str = "uniform", stride: int | None = None,
                       limits: DecodeLimits | None = None) -> np.ndarray:
    """(num_frames, H, W, 3) uint8: the shot's frames sampled from the clip span (see ``frame_indices``)."""
    limits = limits or get_settings().limits
    idx = frame_indices(start_frame, end_frame, num_frames, mode, stride, min_span=limits.min_frames)
    return decode_frames(path, idx, limits)


# --- normalisation and resizing ---------------------------------------------------------------------
def align_to_clip(depth: np.ndarray, iters: int = 2) -> np.ndarray:
    """(F, H, W) -> each frame shifted by a robust offset onto the clip's median frame.

    Estimators drift a little as a whole from frame to frame (MiDaS-like outputs are only defined up
    to scale and shift per frame); the median frame is the static background, so the median of
    ``d_t - median_frame`` over inlier pixels (residual <= 3x its median; the moving actor is the
    outlier) is that drift. Real motion is left alone."""
    d = np.asarray(depth, np.float32)
    ref = np.median(d, axis=0)  # (H, W)
    out = np.empty_like(d)
    for t, frame in enumerate(d):
        residual = frame - ref
        inliers = np.ones(frame.shape, bool)
        for _ in range(iters):
            shift = np.median(residual[inliers])
            err = np.abs(residual - shift)
            inliers = err <= 3.0 * np.median(err) + 1e-12
        out[t] = frame - shift
    return out


def normalise_depth(depth: np.ndarray, mode: str = "clip") -> np.ndarray:
    """(F, H, W) -> float32 in [-1, 1] by min-max, over the whole clip (``"clip"``), each frame
    (``"frame"``, the paper's), or the whole clip after ``align_to_clip`` removed each frame's
    global drift (``"clip_aligned"``). A constant clip/frame maps to 0."""
    if mode not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {mode!r}.")
    d = np.asarray(depth, np.float32)
    if mode == "clip_aligned":
        d = align_to_clip(d)
    axes = tuple(range(1, d.ndim)) if mode == "frame" else None
    lo, hi = d.min(axis=axes, keepdims=True), d.max(axis=axes, keepdims=True)
    rng = hi - lo
    out = np.where(rng > 0, (d - lo) / np.where(rng > 0, rng, 1.0) * 2.0 - 1.0, 0.0)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def frame_to_frame_change(depth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean |d[t+1] - d[t]| over pixels and consecutive frames of a (F, H, W) map (flicker measure).
    ``mask``: (H, W) or (F - 1, H, W) bool, the pixels to count (e.g. the static background)."""
    d = np.asarray(depth, np.float32)
    if len(d) < 2:
        return 0.0
    diff = np.abs(np.diff(d, axis=0))  # (F - 1, H, W)
    if mask is None:
        return float(diff.mean())
    sel = diff[np.broadcast_to(mask, diff.shape)]
    return float(sel.mean()) if sel.size else 0.0


def crop_to_aspect(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(F, h, w, 3) -> centre crop with the aspect ratio of size (H, W) (no crop when it already fits)."""
    h, w = frames.shape[1:3]
    H, W = size
    if h * W > w * H:  # too tall: crop rows
        ch = max(1, round(w * H / W))
        top = (h - ch) // 2
        return frames[:, top:top + ch]
    if h * W < w * H:  # too wide: crop columns
        cw = max(1, round(h * W / H))
        left = (w - cw) // 2
        return frames[:, :, left:left + cw]
    return frames


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(F, h, w) -> (F, H, W) float32, bilinear (antialiased when shrinking)."""
    return resize_maps(torch.from_numpy(np.ascontiguousarray(depth, np.float32)), tuple(size)).numpy()


# --- the stage ----------------------------------------------------------------------------------------
@dataclass
class MotionStructure:
    depth: np.ndarray  # (F, H, W) float32 in [-1, 1], larger = nearer, at the generation resolution
    frames: np.ndarray | None  # (F, h, w, 3) uint8 source frames the depth was estimated on (after the crop)
    metadata: dict  # clip id, span, frame indices, backend, model_id, normalisation, fps, ... (JSON types)
    timings: dict = field(default_factory=dict)  # seconds per step; not saved (varies run to run)


def motion_structure(clip, num_frames: int, size: tuple[int, int], estimator: DepthEstimator,
                     normalise: str = "clip", sampling: str = "uniform", stride: int | None = None,
                     fit: str = "crop", limits: DecodeLimits | None = None) -> MotionStructure:
    """The shot's motion structure: depth of ``num_frames`` frames sampled from the clip span,
    resized to ``size`` (H, W) and normalised to [-1, 1]. ``clip``: a retrieval Hit, ClipSpan,
    dict or (path, start_frame, end_frame)."""
    # 1. Check inputs
    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise must be one of {NORMALISATIONS}, got {normalise!r}.")
    if fit not in FIT_MODES:
        raise ValueError(f"fit must be one of {FIT_MODES}, got {fit!r}.")
    if len(size) != 2 or min(int(s) for s in size) < 1:
        raise ValueError(f"size must be (height, width) in pixels, got {size!r}.")
    size = (int(size[0]), int(size[1]))
    span = as_clip_span(clip)
    limits = limits or get_settings().limits
    timings = {}

    # 2. Sample and decode the shot's frames from the span
    t0 = time.perf_counter()
    idx = frame_indices(span.start_frame, span.end_frame, num_frames, sampling, stride, min_span=limits.min_frames)
    frames, file_fps = read_frames(span.path, idx, limits)  # (F, h, w, 3) uint8
    if fit == "crop":
        frames = np.ascontiguousarray(crop_to_aspect(frames, size))  # (F, h', w', 3)
    timings["decode_s"] = time.perf_counter() - t0

    # 3. Estimate relative inverse depth
    t0 = time.perf_counter()
    raw = np.asarray(estimator(frames), np.float32)  # (F, h', w')
    timings["estimate_s"] = time.perf_counter() - t0
    if raw.shape != frames.shape[:3]:
        raise RuntimeError(f"depth estimator {estimator.name} returned {raw.shape} for frames {frames.shape}.")
    if not np.isfinite(raw).all():
        raise DepthError(f"Depth estimator {estimator.model_id} produced non-finite depth on {span.path} "
                         f"frames {idx.min()}..{idx.max()}; check its weights.")

    # 4. Resize to the generation resolution, then normalise (so the range is exactly [-1, 1])
    t0 = time.perf_counter()
    depth = normalise_depth(resize_depth(raw, size), normalise)  # (F, H, W)
    timings["normalise_s"] = time.perf_counter() - t0

    fps = span.fps or file_fps
    step = float(idx[-1] - idx[0]) / (len(idx) - 1) if len(idx) > 1 else 1.0
    metadata = {
        "format": FORMAT_VERSION, "clip_id": span.clip_id, "path": span.path,
        "start_frame": span.start_frame, "end_frame": span.end_frame, "fps": float(fps),
        "shot_fps": fps / step if fps and step > 0 else fps,  # frame rate the sampled frames play at in real time
        "num_frames": int(num_frames), "height": size[0], "width": size[1],
        "sampling": sampling, "stride": (stride or 1) if sampling == "stride" else None,
        "frame_indices": [int(i) for i in idx], "fit": fit,
        "backend": estimator.name, "model_id": estimator.model_id, "normalisation": normalise,
        "raw_min": float(raw.min()), "raw_max": float(raw.max()),
    }
    return MotionStructure(depth=depth, frames=frames, metadata=metadata, timings=timings)


def save_motion_structure(ms: MotionStructure, path: str | Path, include_frames: bool = False) -> Path:
    """Write ``depth`` (F, H, W) float32 (+ ``frames`` if asked) as safetensors, metadata as JSON
    strings in its header; atomically (a crash never leaves a half-written file)."""
    tensors = {"depth": np.ascontiguousarray(ms.depth, np.float32)}
    if include_frames and ms.frames is not None:
        tensors["frames"] = np.ascontiguousarray(ms.frames, np.uint8)
    metadata = {k: json.dumps(v) for k, v in ms.metadata.items()}  # safetensors metadata is str -> str
    with atomic_path(path) as tmp:
        tmp.write_bytes(_sorted_header(save(tensors, metadata=metadata)))
    return Path(path)


def _sorted_header(data: bytes) -> bytes:
    """safetensors keeps the metadata in a hash map, so its order (and the file's bytes) change from
    process to process; rewrite the JSON header with sorted keys: equal content, equal bytes.
    Layout: 8-byte little-endian header length, the header (padded with spaces to a multiple of 8),
    the tensor data (offsets in the header are relative to it, so they do not change)."""
    n = struct.unpack("<Q", data[:8])[0]
    header = json.dumps(json.loads(data[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data[8 + n:]


def load_motion_structure(path: str | Path) -> MotionStructure:
    """Read a file written by ``save_motion_structure``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DepthError(f"Motion structure file {path} does not exist; rerun the shot_depth stage.")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="numpy") as f:
            raw_meta = f.metadata() or {}
        metadata = {k: json.loads(v) for k, v in raw_meta.items()}
    except (SafetensorError, OSError, json.JSONDecodeError) as e:
        raise DepthError(f"Motion structure file {path} is unreadable ({type(e).__name__}); "
                         f"rerun the shot_depth stage.") from None
    if "depth" not in tensors:
        raise DepthError(f"Motion structure file {path} has no 'depth' tensor; rerun the shot_depth stage.")
    return MotionStructure(depth=tensors["depth"], frames=tensors.get("frames"), metadata=metadata)


# --- preview ------------------------------------------------------------------------------------------
def depth_to_grey(depth: np.ndarray) -> np.ndarray:
    """(..., H, W) in [-1, 1] -> (..., H, W, 3) uint8, near = white (like MiDaS previews)."""
    g = np.clip((np.asarray(depth, np.float32) + 1.0) * 127.5, 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=-1)


def depth_preview(ms: MotionStructure, out_path: str | Path, min_height: int = 128) -> Path:
    """Write RGB | depth side by side: an animated GIF (``.gif``) or a strip of all frames (``.png``,
    RGB row above the depth row). Tiles are upscaled (nearest) to at least ``min_height`` pixels."""
    out_path = Path(out_path)
    if out_path.suffix.lower() not in (".gif", ".png"):
        raise ValueError(f"depth_preview writes .gif or .png, got {out_path.name}.")
    n, H, W = ms.depth.shape
    grey = depth_to_grey(ms.depth)  # (F, H, W, 3)
    if ms.frames is not None:
        rgb = np.stack([np.asarray(Image.fromarray(f).resize((W, H), Image.BILINEAR)) for f in ms.frames])
    else:  # loaded from disk without frames: depth only
        rgb = None
    scale = max(1, -(-min_height // H))
    if out_path.suffix.lower() == ".gif":
        tiles = np.concatenate([rgb, grey], axis=2) if rgb is not None else grey  # (F, H, 2W, 3)
        images = [Image.fromarray(t).resize((t.shape[1] * scale, H * scale), Image.NEAREST) for t in tiles]
        fps = ms.metadata.get("shot_fps") or 8.0
        with atomic_path(out_path) as tmp:
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                           duration=max(20, int(round(1000 / fps))), loop=0)
    else:
        rows = [np.concatenate(list(rgb), axis=1)] if rgb is not None else []
        strip = np.concatenate(rows + [np.concatenate(list(grey), axis=1)], axis=0)  # (2H, F*W, 3)
        img = Image.fromarray(strip).resize((strip.shape[1] * scale, strip.shape[0] * scale), Image.NEAREST)
        with atomic_path(out_path) as tmp:
            img.save(tmp, format="PNG")
    return out_path
