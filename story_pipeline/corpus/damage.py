"""Damaged videos: frames that do not decode, black or garbage frames, and the false cuts they make.

    from story_pipeline.corpus.damage import usable_spans
    spans, warning = usable_spans("clip.avi", info, limits)   # VideoRejected if too little is clean

A file whose header is fine can still hold damaged frames: a byte range overwritten, a copy cut
short, frames that decode as black, noise or grey/green decoder fill. Left alone, each boundary of
such a run looks like a scene cut to the shot detector and the run itself becomes a clip. So every
video is first decoded once with PyAV (:func:`scan_video`), and per frame we record

- decode errors: the decoder raised on the frame's packet (``err_detect=explode``, so damaged
  bitstreams fail loudly instead of being concealed) or flagged the frame corrupt; an inter-coded
  frame after a damaged one is predicted from it, so the damage runs to the next keyframe;
- frames not decoded at all, and frames the header lists but the file does not hold (truncation);
- black frames: at least 98% of the picture at most luma 40 (ffmpeg blackdetect's 10% level);
- noise-like garbage: neighbouring pixels as unrelated as in white noise (roughness, below, >= 0.75;
  natural footage is 0.1-0.4), or >= 0.45 and more than twice the median of the frames around it;
  and colour jumps: frames whose colours differ from both neighbours by more than scene cuts do
  (mean |dU|, |dV| >= 30 on both sides: a cut changes colour once, a flash only brightness);
- decoder fill: at least half the picture exactly mid-grey (128, 128, 128) or zero green (0, 0, 0)
  in Y, U and V, what decoders paint where data is missing.

A clean video (no such frame) is split exactly as before, by ``probe.split_shots`` (with a
warning if its header lists more frames than it holds). A damaged one keeps the clean runs between
damaged spans (one frame of margin each side), each split at scene cuts found within it alone
(:func:`reread_damaged`), so a cut at the edge of damage is never a scene cut. Frames the decoder
refuses even without ``explode`` also rule out every frame before them: decord, which reads the
clips later, decodes ahead of the frame asked for and fails on them. If less than half of the
file's frames are left, the file is rejected (kind ``damaged_video``); otherwise the caller gets a
warning naming the frames.
"""

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from scenedetect import ContentDetector
from scenedetect.scene_manager import compute_downscale_factor

from story_pipeline.config import DecodeLimits
from story_pipeline.corpus.probe import VideoInfo, VideoRejected, open_limited, split_shots

logger = logging.getLogger(__name__)

GRID_WIDTH = 64            # statistics are taken on an area-averaged thumbnail this wide
DARK_LUMA = 40             # a pixel at most this bright is black (full- and limited-range video)
BLACK_FRACTION = 0.98      # a frame with this share of black pixels is black
NOISE_ROUGHNESS = 0.75     # white noise is ~1.1 even after H.264/JPEG; footage 0.1-0.4
ODD_ROUGHNESS = 0.45       # rougher than this and ODD_RATIO x its neighbours' median: garbage
ODD_RATIO = 2.0
NEIGHBOURS = 12            # frames each side whose median roughness a frame is compared with
JUMP_CHROMA = 30.0         # colours this far (mean |dU|,|dV|) from both neighbours: garbage
FILL_FRACTION = 0.5        # a frame this much exact decoder fill (grey or zero) is garbage
FILL_TOLERANCE = 2         # levels around 128 (grey) or above 0 (zero green) that count as fill
MARGIN = 1                 # frames dropped each side of a damaged span
MIN_CLEAN_FRACTION = 0.5   # keep a damaged file only if at least this share of its frames is clean

# Causes per frame, in the order a run names them.
ERROR, DEPENDS, MISSING, BLACK, NOISE, FILL = 1, 2, 4, 8, 16, 32
CAUSE_WORDS = {ERROR | DEPENDS: "decode errors", MISSING: "not decoded", BLACK: "black",
               NOISE: "noise-like garbage", FILL: "grey/green decoder fill"}


@dataclass
class FrameScan:
    """What one PyAV pass saw, per frame of the file's index (display order, decord's numbering)."""

    num_frames: int
    decoded: np.ndarray    # (N,) bool: the decoder output this frame
    errors: np.ndarray     # (N,) bool: its packet failed to decode, or the frame came out corrupt
    keyframes: np.ndarray  # (N,) bool: its packet is a keyframe (damage stops spreading there)
    reorder: int           # how many frames the decoder reads ahead (B-frames show before their refs)
    dark: np.ndarray       # (N,) float32: share of black pixels (nan where not decoded)
    rough: np.ndarray      # (N,) float32: neighbour-pixel difference / contrast (white noise ~1.1)
    fill: np.ndarray       # (N,) float32: share of exact decoder fill (grey or zero green)
    change: np.ndarray     # (N,) float32: mean |U/V difference| from the frame decoded before
    pts_order: np.ndarray  # (N',) int64: the packets' timestamps, sorted: frame i has pts_order[i]


@dataclass
class Damage:
    """Which frames of a video are unusable, why, and what is left."""

    causes: np.ndarray             # (N,) uint8: bit set of ERROR..FILL per frame (0: clean)
    bad: np.ndarray                # (N,) bool: causes plus margins; no clip may hold these
    segments: list[tuple[int, int]]  # clean runs [start, end) at least min_frames long
    missing: int                   # frames the header lists that are not in the file at all
    total_frames: int              # max(frames in the file, frames the header lists)
    unsafe_before: int = 0         # frames before this one sit before a frame the decoder refuses

    @property
    def damaged(self) -> bool:
        """Frames a clip must not hold. (Frames the header lists but the file lacks are reported, but
        alone they spoil no clip: a cut-short copy and a drop-frame AVI look the same.)"""
        return bool(self.bad.any())

    def describe(self, limit: int = 5) -> str:
        """e.g. 'frames 40-53 (decode errors), 70-75 (black) and 9 frames the header lists are missing'."""
        parts = []
        for start, end in _runs(self.causes > 0):
            found = np.bitwise_or.reduce(self.causes[start:end])
            words = " and ".join(w for bits, w in CAUSE_WORDS.items() if found & bits)
            parts.append(f"{start}-{end - 1} ({words})" if end - start > 1 else f"{start} ({words})")
        text = ""
        if parts:
            shown = parts[:limit] + ([f"{len(parts) - limit} more spans"] if len(parts) > limit else [])
            text = ("frames " if len(parts) > 1 or "-" in parts[0] else "frame ") + ", ".join(shown)
        if self.missing:
            gone = f"{self.missing} frames the header lists are missing (truncated or cut out)"
            text = f"{text} and {gone}" if text else gone
        if self.unsafe_before:
            last = self.unsafe_before - 1
            text += (f", and the frames before {last} cannot be read safely either (the decoder refuses "
                     f"frame {last} and video readers decode ahead into it)")
        return text


# ----------------------------------------------------------------------------------------------
# Per-frame statistics on a small thumbnail (vectorised over frames)


def _planes(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Y, U, V planes of a decoded frame as uint8 arrays (other formats converted first)."""
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        frame = frame.reformat(format="yuv420p")
    return tuple(np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width]
                 for p in frame.planes[:3])


def _thumbnail(frame: av.VideoFrame) -> np.ndarray:
    """(h, GRID_WIDTH, 3) uint8 Y, U, V, each plane area-averaged onto the same small grid."""
    y, u, v = _planes(frame)
    gw = min(GRID_WIDTH, y.shape[1])
    gh = max(1, round(y.shape[0] * gw / y.shape[1]))
    return np.stack([cv2.resize(np.ascontiguousarray(p), (gw, gh), interpolation=cv2.INTER_AREA)
                     for p in (y, u, v)], axis=-1)


def frame_stats(thumbs: np.ndarray, previous: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """(F, h, w, 3) uint8 YUV thumbnails of consecutive frames -> per-frame statistics, each (F,).

    dark: share of black pixels. rough: mean absolute difference of horizontally and vertically
    neighbouring luma values over the luma standard deviation (+1): independent pixels (noise)
    give ~1.13, natural pictures a few tenths. fill: share of exact decoder fill (grey or zero
    green). change: mean absolute U/V difference from the frame before (``previous`` for the
    first; nan without one).
    """
    y = thumbs[..., 0].astype(np.float32)
    step = (np.abs(np.diff(y, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(y, axis=2)).mean(axis=(1, 2))) / 2
    grey = np.abs(thumbs.astype(np.int16) - 128) <= FILL_TOLERANCE
    zero = thumbs <= FILL_TOLERANCE
    fill = (grey[..., 0] & grey[..., 1] & grey[..., 2]) | (zero[..., 0] & zero[..., 1] & zero[..., 2])
    chroma = thumbs[..., 1:].astype(np.float32)
    before = np.concatenate([np.full_like(chroma[:1], np.nan) if previous is None
                             else previous[None, ..., 1:].astype(np.float32), chroma[:-1]])
    return dict(dark=(thumbs[..., 0] <= DARK_LUMA).mean(axis=(1, 2)), rough=step / (y.std(axis=(1, 2)) + 1.0),
                fill=fill.mean(axis=(1, 2)), change=np.abs(chroma - before).mean(axis=(1, 2, 3)))


class _FrameLog:
    """What the scan sees, in decode order: packet timestamps, errors, decoded frames' statistics."""

    def __init__(self):
        self.packet_pts: list[int] = []
        self.key_pts: list[int] = []
        self.error_pts: list[int] = []
        self.frame_pts: list[int] = []
        self.thumbs: list[np.ndarray] = []
        self.previous: np.ndarray | None = None
        self.shape: tuple[int, ...] | None = None
        self.stats: list[dict[str, np.ndarray]] = []

    def packet(self, packet: av.Packet) -> int | None:
        pts = packet.pts if packet.pts is not None else packet.dts
        if pts is not None:
            self.packet_pts.append(pts)
            if packet.is_keyframe:
                self.key_pts.append(pts)
        return pts

    def frame(self, frame: av.VideoFrame) -> None:
        if frame.pts is None:
            return
        thumb = _thumbnail(frame)
        self.shape = self.shape or thumb.shape
        if frame.is_corrupt or thumb.shape != self.shape:
            self.error_pts.append(frame.pts)
        if thumb.shape != self.shape:  # the frame size changed mid-stream: damage, no statistics
            return
        self.frame_pts.append(frame.pts)
        self.thumbs.append(thumb)
        if len(self.thumbs) >= 256:  # statistics in batches: bounded memory for long videos
            self.flush()

    def flush(self) -> None:
        if self.thumbs:
            self.stats.append(frame_stats(np.stack(self.thumbs), self.previous))
            self.previous = self.thumbs[-1]
            self.thumbs = []

    def scan(self, num_frames: int) -> FrameScan:
        """Timestamps -> frame numbers (rank among the packets' timestamps); arrays of length N."""
        self.flush()
        order = np.unique(np.asarray(self.packet_pts, np.int64))

        def mask(pts: list[int]) -> np.ndarray:
            i = np.searchsorted(order, np.asarray(pts, np.int64))
            m = np.zeros(num_frames, bool)
            m[i[i < num_frames]] = True
            return m

        per_frame = {k: np.full(num_frames, np.nan, np.float32) for k in ("dark", "rough", "fill", "change")}
        at = np.searchsorted(order, np.asarray(self.frame_pts, np.int64))
        for key, array in per_frame.items():
            if self.stats:
                value = np.concatenate([s[key] for s in self.stats])
                array[at[at < num_frames]] = value[at < num_frames]
        decode_rank = np.searchsorted(order, np.asarray(self.packet_pts, np.int64))
        ahead = decode_rank - np.arange(len(decode_rank))
        return FrameScan(num_frames=num_frames, decoded=mask(self.frame_pts), errors=mask(self.error_pts),
                         keyframes=mask(self.key_pts), reorder=int(max(0, ahead.max(initial=0))),
                         pts_order=order, **per_frame)


# ----------------------------------------------------------------------------------------------
# The scan: one PyAV pass over every packet


def scan_video(path: str | os.PathLike, info: VideoInfo, limits: DecodeLimits | None = None) -> FrameScan:
    """Decode every frame once (after probe_video passed the limits) and record errors and statistics.

    Frames are numbered by the rank of their packet's timestamp, as decord numbers them, so a frame
    that fails to decode keeps its place instead of shifting every later frame.
    """
    path = Path(path)
    log = _FrameLog()
    try:
        with open_limited(path, limits or DecodeLimits()) as container:
            stream = container.streams.video[0]
            stream.thread_type = "SLICE"  # frame threading would report errors frames late
            stream.codec_context.options = {"err_detect": "explode"}  # fail, don't conceal
            for packet in container.demux(stream):
                pts = log.packet(packet)
                try:
                    for frame in packet.decode():
                        log.frame(frame)
                except av.FFmpegError:
                    if pts is not None:
                        log.error_pts.append(pts)
    except av.FFmpegError as e:  # the container itself breaks off: the rest counts as missing
        logger.debug("%s: reading stopped: %s", path, e)
    return log.scan(info.num_frames)


# ----------------------------------------------------------------------------------------------
# From statistics to damaged spans


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs [start, end) of True in a 1-D bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _dilate(mask: np.ndarray, before: int, after: int) -> np.ndarray:
    """Each True also marks ``before`` frames before it and ``after`` frames after it."""
    out = mask.copy()
    for k in range(1, before + 1):
        out[:-k] |= mask[k:]
    for k in range(1, after + 1):
        out[k:] |= mask[:-k]
    return out


def _spread_to_keyframes(broken: np.ndarray, keyframes: np.ndarray) -> np.ndarray:
    """Frames after a broken one up to (not including) the next keyframe: predicted from the damage."""
    idx = np.arange(len(broken))
    last_broken = np.maximum.accumulate(np.where(broken, idx, -1))  # latest broken frame at or before i
    keys = np.flatnonzero(keyframes)
    stop = np.append(keys, len(broken))[np.searchsorted(keys, last_broken, side="right")]
    return (last_broken >= 0) & (idx < stop) & ~broken


def _odd_roughness(rough: np.ndarray) -> np.ndarray:
    """Frames much rougher than the median of the NEIGHBOURS frames on each side (nan-aware)."""
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(rough, NEIGHBOURS, constant_values=np.nan),
                                                       2 * NEIGHBOURS + 1)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # windows of undecoded frames only: nan
        around = np.nanmedian(windows, axis=1)
        return (rough >= ODD_ROUGHNESS) & (rough >= ODD_RATIO * around)


def find_damage(scan: FrameScan, info: VideoInfo, min_frames: int = 8) -> Damage:
    """Label each frame's damage (ERROR..FILL bits), add margins, and list the clean runs left."""
    n = scan.num_frames
    causes = np.zeros(n, np.uint8)
    missing = ~scan.decoded & ~scan.errors
    causes[scan.errors] |= ERROR
    causes[missing] |= MISSING
    # (frames never output do not spread: an edit list hides decodable frames the same way)
    causes[_spread_to_keyframes(scan.errors, scan.keyframes)] |= DEPENDS
    with np.errstate(invalid="ignore"):
        causes[scan.dark >= BLACK_FRACTION] |= BLACK
        jumps = (scan.change >= JUMP_CHROMA) & (np.append(scan.change[1:], np.nan) >= JUMP_CHROMA)
        causes[(scan.rough >= NOISE_ROUGHNESS) | _odd_roughness(scan.rough) | jumps] |= NOISE
        causes[scan.fill >= FILL_FRACTION] |= FILL
    decode = (causes & (ERROR | DEPENDS | MISSING)) > 0
    # B-frames shown just before a damaged frame were predicted from it: widen decode damage back.
    bad = _dilate(causes > 0, MARGIN, MARGIN) | _dilate(decode, scan.reorder + MARGIN, 0)
    tolerance = max(2, n // 50)  # containers and decoders may disagree by a frame or two
    lost = info.header_frames - n if info.header_frames > n + tolerance else 0
    segments = [(a, b) for a, b in _runs(~bad) if b - a >= min_frames]
    return Damage(causes=causes, bad=bad, segments=segments, missing=lost,
                  total_frames=max(n, info.header_frames))


# ----------------------------------------------------------------------------------------------
# Shots of a damaged video: cut detection within each clean run


def _detector_image(frame: av.VideoFrame) -> np.ndarray:
    """BGR frame downscaled as PySceneDetect's SceneManager does before its detectors see it."""
    image = frame.to_ndarray(format="bgr24")
    scale = compute_downscale_factor(max(image.shape[1], image.shape[0]))
    if scale > 1.0:
        size = (max(1, round(image.shape[1] / scale)), max(1, round(image.shape[0] / scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    return image


def reread_damaged(path: str | os.PathLike, scan: FrameScan, segments: list[tuple[int, int]],
                   limits: DecodeLimits | None = None, min_frames: int = 8, threshold: float = 27.0,
                   find_cuts: bool = True) -> tuple[list[int], int]:
    """Second pass over a damaged video, with the decoder's default error handling (as decord's):
    -> (scene cuts inside the clean ``segments``, the last frame the decoder refuses outright or -1).

    Cuts come from the same ContentDetector as ``split_shots`` (threshold, downscaling), started
    afresh at each segment and fed only its frames, so a damaged span can neither add a cut nor
    hide a real one. A cut closer than ``min_frames`` to the previous one is dropped, but a
    segment's start is not a cut: a scene change just after damage still splits.
    """
    segment_of = np.full(scan.num_frames, -1)
    for k, (a, b) in enumerate(segments):
        segment_of[a:b] = k
    cuts: list[int] = []
    refused, current, detector = -1, -1, None
    try:
        with open_limited(Path(path), limits or DecodeLimits()) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                pts = packet.pts if packet.pts is not None else packet.dts
                try:
                    frames = packet.decode()
                except av.FFmpegError:  # refused even without err_detect: readers fail here
                    if pts is not None:
                        refused = max(refused, int(np.searchsorted(scan.pts_order, pts)))
                    continue
                for frame in frames if find_cuts else ():
                    i = int(np.searchsorted(scan.pts_order, frame.pts)) if frame.pts is not None else -1
                    if not 0 <= i < scan.num_frames or segment_of[i] < 0:
                        continue
                    if segment_of[i] != current:
                        current = segment_of[i]
                        detector = ContentDetector(threshold=threshold, min_scene_len=0)  # every frame over
                    cuts += detector.process_frame(i, _detector_image(frame))
    except av.FFmpegError as e:  # the container breaks off: the scan counted the rest as missing
        logger.debug("%s: stopped re-reading a damaged video: %s", path, e)
    kept: list[int] = []
    for c in cuts:
        if not kept or c - kept[-1] >= min_frames:
            kept.append(c)
    return kept, refused


def _spans(segments: list[tuple[int, int]], cuts: list[int], min_frames: int) -> list[tuple[int, int]]:
    """Each segment split at the cuts inside it; pieces shorter than ``min_frames`` dropped."""
    spans = []
    for a, b in segments:
        bounds = [a] + [c for c in cuts if a < c < b] + [b]
        spans += [(s, e) for s, e in zip(bounds[:-1], bounds[1:]) if e - s >= min_frames]
    return spans


# ----------------------------------------------------------------------------------------------
# The decision for one file


def usable_spans(path: str | os.PathLike, info: VideoInfo, limits: DecodeLimits | None = None,
                 split: bool = True) -> tuple[list[tuple[int, int]], str | None]:
    """The clip spans of a probed video and a warning if damaged frames were trimmed away.

    Clean videos: ``split_shots`` as always (or the whole file if not ``split``). Damaged ones: the
    clean segments, split within each; VideoRejected (kind ``damaged_video``) if too little is clean.
    """
    path = Path(path)
    limits = limits or DecodeLimits()
    scan = scan_video(path, info, limits)
    damage = find_damage(scan, info, limits.min_frames)
    if not damage.damaged:
        spans = split_shots(path, info, limits.min_frames) if split else [(0, info.num_frames)]
        short = (f"{path}: the header lists {info.header_frames} frames but only {info.num_frames} are in "
                 f"the file (cut short, or frames dropped while recording); kept those {info.num_frames}: "
                 "replace it with a complete copy if it was cut short.")
        return spans, short if damage.missing else None
    cuts, refused = [], -1
    if split or scan.errors.any():  # only decode errors can be refused outright
        cuts, refused = reread_damaged(path, scan, damage.segments, limits, limits.min_frames,
                                       find_cuts=split)
    if refused >= 0:
        # decord reads ahead of the frame asked for, and a refused packet ends the read: only the
        # part after the last refused frame can be read safely
        damage.segments = [(a, b) for a, b in damage.segments if a > refused]
        damage.unsafe_before = refused + 1
    spans = _spans(damage.segments, cuts, limits.min_frames) if split else damage.segments
    clean, total = sum(b - a for a, b in spans), damage.total_frames
    if clean < MIN_CLEAN_FRACTION * total or not spans:
        raise VideoRejected(
            f"{path}: damaged video, {damage.describe()}; only {clean} of {total} frames are clean and "
            f"readable, too few to keep: replace it with an undamaged copy or re-export it from the "
            "original.", "damaged_video")
    warning = (f"{path}: damaged video, {damage.describe()}; trimmed to {clean} of {total} frames in "
               f"{len(spans)} clip(s): replace it with an undamaged copy to use all of it.")
    return spans, warning
