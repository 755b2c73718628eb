"""Motion structure (the paper's step 3): the retrieved clip's per-frame depth, normalised to [-1, 1].

    from story_pipeline.depth.estimators import load_estimator
    from story_pipeline.depth.structure import motion_structure, save_motion_structure, depth_preview
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
   size, header, resolution, duration, frame count, via ``corpus.probe.probe_video``);
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

import json
import logging
import threading
import time
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from story_pipeline.config import get_settings
from story_pipeline.errors import ConfigError, StoryPipelineError
from story_pipeline.fsutil import content_digest

logger = logging.getLogger(__name__)

BACKENDS = ("toyworld", "controlnet_aux", "transformers")

# controlnet_aux annotator files (names as in the hub repo lllyasviel/Annotators), in the order a
# folder holding several is resolved: detector kind, model_type passed to from_pretrained.
METRIC_MODEL_TYPES = ("glpn", "zoedepth", "depth_pro")  # transformers models that predict metres
ANNOTATOR_FILES = {
    "dpt_hybrid-midas-501f0c75.pt": ("midas", "dpt_hybrid"),
    "dpt_large-midas-2f21e586.pt": ("midas", "dpt_large"),
    "ZoeD_M12_N.pt": ("zoe", "zoedepth"),
    "ZoeD_M12_NK.pt": ("zoe", "zoedepth_nk"),
}
TRANSFORMERS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")

# --- errors -------------------------------------------------------------------------------------
class DepthError(StoryPipelineError):
    """The depth stage cannot use this clip or file."""


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


def resize_maps(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
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
        from story_pipeline.models.depth_net import predict_depth

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
            out[i:i + self.batch_size] = resize_maps(y.float().cpu(), (H, W)).numpy()
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
            out[i:i + self.batch_size] = resize_maps(y.float().cpu(), (H, W)).numpy()
        return out


# --- loading --------------------------------------------------------------------------------------
_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def _missing(folder: Path, backend: str, what: str, hint: str) -> WeightsMissing:
    return WeightsMissing(f"Depth backend {backend!r}: weights folder {folder} has no {what}; {hint}.")


def _backend_files(backend: str, folder: Path, options: dict) -> list[Path]:
    """The files a backend loads from ``folder``; raises WeightsMissing naming what is absent."""
    if not folder.is_dir():
        raise WeightsMissing(f"Depth backend {backend!r}: weights folder {folder} does not exist; "
                             f"point the depth config's folder at the downloaded weights.")
    return _FILES[backend](folder, options)


def _toyworld_files(folder: Path, options: dict) -> list[Path]:
    from story_pipeline.models.depth_net import CONFIG_NAME, WEIGHTS_NAME

    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise _missing(folder, "toyworld", name, "train it with `python -m story_pipeline.train.depth_net "
                           f"--out {folder}` or point to another folder")
    return [folder / CONFIG_NAME, folder / WEIGHTS_NAME]


def _controlnet_aux_files(folder: Path, options: dict) -> list[Path]:
    name = options.get("filename") or next((n for n in ANNOTATOR_FILES if (folder / n).is_file()), None)
    if name is None or not (folder / name).is_file():
        wanted = options.get("filename") or " or ".join(ANNOTATOR_FILES)
        raise _missing(folder, "controlnet_aux", f"annotator checkpoint ({wanted})",
                       "download it from the hub repo lllyasviel/Annotators into that folder")
    return [folder / name]


def _transformers_files(folder: Path, options: dict) -> list[Path]:
    files = []
    for what in ("config.json", "preprocessor_config.json"):
        if not (folder / what).is_file():
            raise _missing(folder, "transformers", what, "save the model and its image processor there with "
                           "save_pretrained (or download a depth-estimation model snapshot)")
        files.append(folder / what)
    weights = next((folder / n for n in TRANSFORMERS_WEIGHTS if (folder / n).is_file()), None)
    if weights is None:
        raise _missing(folder, "transformers", f"model weights ({' or '.join(TRANSFORMERS_WEIGHTS)})",
                       "save the model there with save_pretrained")
    return files + [weights]


def _load_toyworld(folder: Path, files: list[Path], device: str, options: dict) -> ToyWorldEstimator:
    from story_pipeline.models.depth_net import load_depth_net

    if device != "cpu":
        raise ConfigError(f"Depth backend 'toyworld' runs on the CPU only (its net is 0.9M parameters); "
                          f"got device {device!r}.")
    model = load_depth_net(folder)
    return ToyWorldEstimator(model, _model_id("toyworld", folder, files, options),
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
    return ControlNetAuxEstimator(detector, kind, model_type, _model_id("controlnet_aux", folder, files, options),
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
    return TransformersEstimator(model, processor, _model_id("transformers", folder, files, options),
                                 metric=metric, device=device, batch_size=options.get("batch_size", 8))


# The backends: name -> the files it loads (checked first), and its loader.
_FILES = {"toyworld": _toyworld_files, "controlnet_aux": _controlnet_aux_files, "transformers": _transformers_files}
_LOADERS = {"toyworld": _load_toyworld, "controlnet_aux": _load_controlnet_aux, "transformers": _load_transformers}


def register_backend(name: str, files, loader) -> None:
    """Add a depth backend: ``files(folder, options) -> [Path]`` (raising WeightsMissing) and
    ``loader(folder, files, device, options) -> estimator`` (with ``name`` and ``model_id``)."""
    global BACKENDS
    _LOADERS[name] = loader
    _FILES[name] = files
    BACKENDS = tuple(_LOADERS)


def _model_id(backend: str, folder: Path, files: list[Path], options: dict) -> str:
    """``<backend>:<model>@<content digest of the weights>``: the estimator's identity, without loading it."""
    if backend == "toyworld":
        what = folder.name
    elif backend == "controlnet_aux":
        kind, what = ANNOTATOR_FILES.get(files[0].name, (None, options.get("model_type")))
        what = options.get("model_type", what)
    elif backend == "transformers":
        try:
            what = json.loads((folder / "config.json").read_text()).get("model_type")
        except (OSError, ValueError):
            what = None
    else:
        what = folder.name
    return f"{backend}:{what}@{content_digest(sorted(files))}"


def _resolve(backend: str, folder, options: dict) -> tuple[Path, list[Path]]:
    """The backend's weights folder (its default if None) and the files it loads; one sentence if any is missing."""
    if backend not in _LOADERS:
        raise UnknownBackend(f"Unknown depth backend {backend!r}; choose one of {', '.join(_LOADERS)}.")
    folder = folder if folder is not None else default_folder(backend)
    if folder is None:
        raise WeightsMissing(f"Depth backend {backend!r} needs a weights folder; set it in the depth config.")
    folder = Path(folder).expanduser().resolve()
    return folder, _backend_files(backend, folder, options)


def estimator_id(backend: str, folder: str | Path | None = None, **options) -> str:
    """The ``model_id`` ``load_estimator`` would give, from the weight files alone (no model is loaded)."""
    folder, files = _resolve(backend, folder, options)
    return _model_id(backend, folder, files, options)


def default_folder(backend: str) -> Path | None:
    """The toyworld backend defaults to the shipped weights; the others need a folder from config."""
    return get_settings().models_dir / "toyworld_depth" if backend == "toyworld" else None


def load_estimator(backend: str, folder: str | Path | None = None, device: str = "cpu", **options) -> DepthEstimator:
    """The depth estimator of ``backend`` with weights from ``folder``, loaded once per process.

    ``options``: ``batch_size`` (all), ``input_size`` (controlnet_aux: network's shorter side, default
    384), ``filename`` / ``model_type`` (controlnet_aux: pick one checkpoint of an annotator folder).
    The cache key includes the weight files' size and mtime, so retrained weights are reloaded."""
    # 1. Check inputs
    folder, files = _resolve(backend, folder, options)
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


