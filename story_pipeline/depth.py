"""Motion structure (the paper's step 3): the retrieved clip's per-frame depth, normalised to [-1, 1].

    from story_pipeline.depth import load_estimator, motion_structure, save_motion_structure, depth_preview
    estimator = load_estimator("toyworld", "data/models/toyworld_depth")      # loads once per process
    ms = motion_structure(hit, num_frames=16, size=(64, 64), estimator=estimator)  # hit: retrieval.Hit
    save_motion_structure(ms, "data/artifacts/shot_depth/<shot>/motion_structure.safetensors")
    depth_preview(ms, "data/artifacts/shot_depth/<shot>/preview.gif")           # RGB | depth per frame

Steps of ``motion_structure``:
1. pick ``num_frames`` frame indices in the clip span [start_frame, end_frame): ``"uniform"`` spreads
   them over the whole span (first and last frame included; a span shorter than the shot repeats
   frames, a longer one skips), ``"stride"`` takes every ``stride``-th frame from the span start
   and refuses a span that is too short;
2. decode them with decord, after the file passed the decode limits (``config.DecodeLimits``:
   size, header, resolution, duration, frame count, via ``ingest.probe_video``);
3. centre-crop the frames to the generation aspect ratio (``fit="crop"``; ``"stretch"`` keeps them);
4. estimate relative inverse depth (larger = nearer) with a ``DepthEstimator``;
5. resize the depth to the generation resolution (bilinear, antialiased);
6. normalise to [-1, 1]: per clip (**ours**, default: one min-max for all frames, so a static
   background keeps its value while the actor moves) or per frame (the paper: every frame
   stretched to [-1, 1] on its own, so the background brightens and darkens as the actor's
   nearest point moves — flicker), or per clip after removing each frame's global drift
   (``"clip_aligned"``: a robust per-frame shift onto the clip's median frame, then per clip).
   ``frame_to_frame_change`` measures the difference; bench/depth.py reports all three. Measured
   on 36 static-camera ToyWorld clips with the ToyWorld net (mean |change| on static pixels):
   clip 0.0022, frame 0.0026, clip_aligned 0.0018; steadier than per frame in 15/36 clips (clip,
   it loses a little where the net drifts as a whole) and 30/36 (clip_aligned); the big gaps are
   where the frame's extremes move (a jump: clip 0.0030, frame 0.0139). clip_aligned assumes most
   pixels are static: on a zoom or dolly it would take part of the real change for drift.

Estimator backends, all ``(F, H, W, 3) uint8 -> (F, H, W) float32`` relative inverse depth:
- ``toyworld``: the shipped ToyWorld depth net (``models/depth_net.py``), folder with config.json
  + diffusion_pytorch_model.safetensors;
- ``controlnet_aux``: MiDaS (DPT-Hybrid / DPT-Large) or ZoeDepth from a local annotator folder laid
  out like the hub repo lllyasviel/Annotators (``dpt_hybrid-midas-501f0c75.pt``,
  ``dpt_large-midas-2f21e586.pt``, ``ZoeD_M12_N.pt``, ``ZoeD_M12_NK.pt``), loaded with
  ``MidasDetector/ZoeDetector.from_pretrained(folder)``. The detector's own ``__call__`` min-max
  normalises each frame to uint8, which would undo per-clip normalisation, so the estimator calls
  the loaded network directly with the detector's preprocessing. Zoe's metric depth is inverted;
- ``transformers``: any depth-estimation model (DPT, Depth Anything, GLPN, ZoeDepth, ...) saved with
  ``save_pretrained`` (config.json, weights, preprocessor_config.json), loaded with
  ``AutoModelForDepthEstimation`` + ``AutoImageProcessor`` (``local_files_only=True``); metric
  models (GLPN, ZoeDepth, ``depth_estimation_type="metric"``) are inverted.
"""

import hashlib
import json
import logging
import struct
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import decord
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import SafetensorError
from safetensors.numpy import load_file, save

from .config import DecodeLimits, get_settings
from .errors import ConfigError, StoryPipelineError
from .fsutil import atomic_path
from .ingest import VideoRejected, probe_video

logger = logging.getLogger(__name__)

BACKENDS = ("toyworld", "controlnet_aux", "transformers")
SAMPLING_MODES = ("uniform", "stride")
NORMALISATIONS = ("clip", "frame", "clip_aligned")
FIT_MODES = ("crop", "stretch")
FORMAT_VERSION = 1  # bump when the saved tensors or metadata change meaning

# controlnet_aux annotator files (names as in the hub repo lllyasviel/Annotators), in the order a
# folder holding several is resolved: detector kind, model_type passed to from_pretrained.
ANNOTATOR_FILES = {
    "dpt_hybrid-midas-501f0c75.pt": ("midas", "dpt_hybrid"),
    "dpt_large-midas-2f21e586.pt": ("midas", "dpt_large"),
    "ZoeD_M12_N.pt": ("zoe", "zoedepth"),
    "ZoeD_M12_NK.pt": ("zoe", "zoedepth_nk"),
}
TRANSFORMERS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
METRIC_MODEL_TYPES = ("glpn", "zoedepth", "depth_pro")  # transformers models that predict metres


# --- errors -------------------------------------------------------------------------------------
class DepthError(StoryPipelineError):
    """The depth stage cannot use this clip or file."""


class SpanTooShort(DepthError, ValueError):
    """The clip span has fewer frames than the shot's sampling needs."""


class ClipUnreadable(DepthError):
    """The clip's video is missing, above the decode limits, or cannot be decoded."""


class UnknownBackend(ConfigError):
    """The depth backend name is not one of BACKENDS."""


class WeightsMissing(ConfigError):
    """The weights folder of a depth backend is missing, lacks a file, or holds unloadable weights."""


# --- estimators -----------------------------------------------------------------------------------
class DepthEstimator(Protocol):
    name: str  # backend name, one of BACKENDS
    model_id: str  # identifies the weights (content hash): part of every cache key downstream

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """(F, H, W, 3) uint8 RGB -> (F, H, W) float32 relative inverse depth (larger = nearer)."""
        ...


def _check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"depth estimators take (F, H, W, 3) uint8 frames, got "
                         f"{getattr(frames, 'dtype', type(frames))} {getattr(frames, 'shape', '')}.")


def _resize_maps(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) -> (B, H, W) bilinear; antialiased when shrinking so thin structures average, not alias."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x[:, None].float(), size=size, mode="bilinear", align_corners=False,
                         antialias=shrink)[:, 0]


class ToyWorldEstimator:
    """The shipped ToyWorld depth net (runs on the CPU: 0.9M parameters at 64 px)."""

    name = "toyworld"

    def __init__(self, model, model_id: str, batch_size: int = 32):
        self.model, self.model_id, self.batch_size = model, model_id, batch_size

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        from .models.depth_net import predict_depth

        _check_frames(frames)
        return predict_depth(self.model, frames, batch_size=self.batch_size)


class ControlNetAuxEstimator:
    """MiDaS or ZoeDepth loaded by controlnet_aux; the network is called directly (see module docstring)."""

    name = "controlnet_aux"

    def __init__(self, detector, kind: str, model_type: str, model_id: str, input_size: int = 384,
                 device: str = "cpu", batch_size: int = 4):
        self.detector, self.kind, self.model_type = detector, kind, model_type
        self.model_id, self.input_size, self.device, self.batch_size = model_id, input_size, device, batch_size

    def net_size(self, h: int, w: int) -> tuple[int, int]:
        """Shorter side -> input_size, both sides multiples of 32 (what DPT's patch grid needs)."""
        scale = self.input_size / min(h, w)
        return max(32, round(h * scale / 32) * 32), max(32, round(w * scale / 32) * 32)

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        _check_frames(frames)
        n, H, W, _ = frames.shape
        size = self.net_size(H, W)
        out = np.empty((n, H, W), np.float32)
        for i in range(0, n, self.batch_size):
            x = torch.from_numpy(frames[i:i + self.batch_size]).permute(0, 3, 1, 2).float()  # (B, 3, H, W) 0..255
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 255)
            x = x.to(self.device)
            if self.kind == "midas":  # MidasDetector: image / 127.5 - 1, output relative inverse depth
                y = self.detector.model(x / 127.5 - 1.0)  # (B, h, w)
            else:  # ZoeDetector: image / 255, output metric depth (B, 1, h, w) -> inverse depth
                y = 1.0 / self.detector.model.infer(x / 255.0)[:, 0].clamp(min=1e-3)
            out[i:i + self.batch_size] = _resize_maps(y.float().cpu(), (H, W)).numpy()
        return out


class TransformersEstimator:
    """A transformers depth-estimation model + its image processor, from a local folder."""

    name = "transformers"

    def __init__(self, model, processor, model_id: str, metric: bool, device: str = "cpu", batch_size: int = 8):
        self.model, self.processor, self.model_id = model, processor, model_id
        self.metric, self.device, self.batch_size = metric, device, batch_size

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        _check_frames(frames)
        n, H, W, _ = frames.shape
        out = np.empty((n, H, W), np.float32)
        for i in range(0, n, self.batch_size):
            inputs = self.processor(images=list(frames[i:i + self.batch_size]), return_tensors="pt")
            y = self.model(pixel_values=inputs["pixel_values"].to(self.device)).predicted_depth  # (B, h, w)
            if y.ndim == 4:  # some heads keep the channel: (B, 1, h, w)
                y = y[:, 0]
            if self.metric:  # metres -> inverse metres, so larger = nearer like the other backends
                y = 1.0 / y.clamp(min=1e-3)
            out[i:i + self.batch_size] = _resize_maps(y.float().cpu(), (H, W)).numpy()
        return out


# --- loading --------------------------------------------------------------------------------------
_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def _missing(folder: Path, backend: str, what: str, hint: str) -> WeightsMissing:
    return WeightsMissing(f"Depth backend {backend!r}: weights folder {folder} has no {what}; {hint}.")


def _weights_digest(files: list[Path]) -> str:
    """sha256 over the weight/config files' bytes: the same weights give the same model_id anywhere."""
    h = hashlib.sha256()
    for p in sorted(files):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
    return h.hexdigest()[:16]


def _backend_files(backend: str, folder: Path, options: dict) -> list[Path]:
    """The files a backend loads from ``folder``; raises WeightsMissing naming what is absent."""
    if not folder.is_dir():
        raise WeightsMissing(f"Depth backend {backend!r}: weights folder {folder} does not exist; "
                             f"point the depth config's folder at the downloaded weights.")
    if backend == "toyworld":
        from .models.depth_net import CONFIG_NAME, WEIGHTS_NAME

        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (folder / name).is_file():
                raise _missing(folder, backend, name, "train it with `python -m story_pipeline.train.depth_net "
                               f"--out {folder}` or point to another folder")
        return [folder / CONFIG_NAME, folder / WEIGHTS_NAME]
    if backend == "controlnet_aux":
        name = options.get("filename") or next((n for n in ANNOTATOR_FILES if (folder / n).is_file()), None)
        if name is None or not (folder / name).is_file():
            wanted = options.get("filename") or " or ".join(ANNOTATOR_FILES)
            raise _missing(folder, backend, f"annotator checkpoint ({wanted})",
                           "download it from the hub repo lllyasviel/Annotators into that folder")
        return [folder / name]
    # transformers
    files = []
    for what in ("config.json", "preprocessor_config.json"):
        if not (folder / what).is_file():
            raise _missing(folder, backend, what, "save the model and its image processor there with "
                           "save_pretrained (or download a depth-estimation model snapshot)")
        files.append(folder / what)
    weights = next((folder / n for n in TRANSFORMERS_WEIGHTS if (folder / n).is_file()), None)
    if weights is None:
        raise _missing(folder, backend, f"model weights ({' or '.join(TRANSFORMERS_WEIGHTS)})",
                       "save the model there with save_pretrained")
    return files + [weights]


def _load_toyworld(folder: Path, files: list[Path], device: str, options: dict) -> ToyWorldEstimator:
    from .models.depth_net import load_depth_net

    if device != "cpu":
        raise ConfigError(f"Depth backend 'toyworld' runs on the CPU only (its net is 0.9M parameters); "
                          f"got device {device!r}.")
    model = load_depth_net(folder)
    return ToyWorldEstimator(model, f"toyworld:{folder.name}@{_weights_digest(files)}",
                             batch_size=options.get("batch_size", 32))


def _load_controlnet_aux(folder: Path, files: list[Path], device: str, options: dict) -> ControlNetAuxEstimator:
    filename = files[0].name
    kind, model_type = ANNOTATOR_FILES.get(filename, (options.get("kind", "midas"), options.get("model_type")))
    model_type = options.get("model_type", model_type)
    try:
        with warnings.catch_warnings():  # controlnet_aux imports every detector; timm warns about their names
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            if kind == "midas":
                from controlnet_aux.midas import MidasDetector

                detector = MidasDetector.from_pretrained(str(folder), model_type=model_type, filename=filename)
            else:
                from controlnet_aux.zoe import ZoeDetector

                detector = ZoeDetector.from_pretrained(str(folder), model_type=model_type, filename=filename)
    except (RuntimeError, KeyError, OSError, EOFError, ValueError) as e:  # wrong architecture or corrupt file
        logger.debug("controlnet_aux failed to load %s: %s", files[0], e)
        raise WeightsMissing(f"Depth backend 'controlnet_aux': {files[0]} is not a loadable {kind} "
                             f"{model_type} checkpoint ({type(e).__name__}); re-download it.") from None
    detector.to(device)
    return ControlNetAuxEstimator(detector, kind, model_type, f"controlnet_aux:{model_type}@{_weights_digest(files)}",
                                  input_size=options.get("input_size", 384), device=device,
                                  batch_size=options.get("batch_size", 4))


def _load_transformers(folder: Path, files: list[Path], device: str, options: dict) -> TransformersEstimator:
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    try:
        processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
        model = AutoModelForDepthEstimation.from_pretrained(str(folder), local_files_only=True,
                                                            dtype=torch.float32)
    except (OSError, ValueError, KeyError) as e:
        logger.debug("transformers failed to load %s: %s", folder, e)
        raise WeightsMissing(f"Depth backend 'transformers': {folder} does not hold a loadable "
                             f"depth-estimation model ({type(e).__name__}: {str(e).splitlines()[0][:200]}).") from None
    model = model.to(device).eval()
    cfg = model.config
    metric = cfg.model_type in METRIC_MODEL_TYPES or getattr(cfg, "depth_estimation_type", None) == "metric"
    return TransformersEstimator(model, processor, f"transformers:{cfg.model_type}@{_weights_digest(files)}",
                                 metric=metric, device=device, batch_size=options.get("batch_size", 8))


_LOADERS = {"toyworld": _load_toyworld, "controlnet_aux": _load_controlnet_aux, "transformers": _load_transformers}


def default_folder(backend: str) -> Path | None:
    """The toyworld backend defaults to the shipped weights; the others need a folder from config."""
    return get_settings().models_dir / "toyworld_depth" if backend == "toyworld" else None


def load_estimator(backend: str, folder: str | Path | None = None, device: str = "cpu", **options) -> DepthEstimator:
    """The depth estimator of ``backend`` with weights from ``folder``, loaded once per process.

    ``options``: ``batch_size`` (all), ``input_size`` (controlnet_aux: network's shorter side, default
    384), ``filename`` / ``model_type`` (controlnet_aux: pick one checkpoint of an annotator folder).
    The cache key includes the weight files' size and mtime, so retrained weights are reloaded."""
    # 1. Check inputs
    if backend not in BACKENDS:
        raise UnknownBackend(f"Unknown depth backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    folder = folder if folder is not None else default_folder(backend)
    if folder is None:
        raise WeightsMissing(f"Depth backend {backend!r} needs a weights folder; set it in the depth config.")
    folder = Path(folder).expanduser().resolve()
    files = _backend_files(backend, folder, options)
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    key = (backend, str(folder), device, tuple(sorted(options.items())))
    # 2. Load once per process (the lock keeps two threads from loading the same model twice);
    #    new weights in the same folder replace the old model instead of piling up beside it.
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is None or cached[0] != stamp:
            t0 = time.perf_counter()
            _CACHE[key] = (stamp, _LOADERS[backend](folder, files, device, options))
            logger.info("loaded depth estimator %s in %.1f s", _CACHE[key][1].model_id, time.perf_counter() - t0)
        return _CACHE[key][1]


def clear_estimator_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


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


def decode_frames(path: str | Path, indices: np.ndarray, limits: DecodeLimits | None = None) -> np.ndarray:
    """(N, H, W, 3) uint8 frames ``indices`` of a video, after the file passed the decode limits."""
    return _decode(path, indices, limits or get_settings().limits)[0]


def _decode(path: str | Path, indices: np.ndarray, limits: DecodeLimits) -> tuple[np.ndarray, float]:
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
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        frames = reader.get_batch(unique.tolist()).asnumpy()  # (U, H, W, 3) uint8
        del reader
    except Exception as e:  # decord raises C++ check failures: log them, don't show them
        logger.debug("decord failed on %s: %s", path, e)
        raise ClipUnreadable(f"{path}: decord cannot decode frames {unique.min()}..{unique.max()} "
                             f"(corrupt or truncated file).") from None
    finally:
        decord.bridge.set_bridge(previous)  # the bridge is process-global state
    return frames[inverse.reshape(-1)], info.fps


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
    return _resize_maps(torch.from_numpy(np.ascontiguousarray(depth, np.float32)), tuple(size)).numpy()


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
    frames, file_fps = _decode(span.path, idx, limits)  # (F, h, w, 3) uint8
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
