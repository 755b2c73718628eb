"""The story video (paper's final step): rendered shots in order -> one mp4, a GIF and a storyboard.

    from story_pipeline.render.assemble import ShotPiece, assemble_story
    out = assemble_story("Tabby's Snow Day", pieces, Path("data/outputs/tabby_adventure.mp4"), fps=8)
    out.video, out.gif, out.storyboard, out.seconds

Shots are upscaled (``scale``, nearest: the toy frames are 64 px) onto one canvas (the largest
shot; smaller ones are centred on black), resampled to the story's fps, optionally joined by short
cross-fades, after a title card. A shot that failed its checks is still in the video, with a red
"check failed" band, and named in the result. The mp4 (H.264 yuv420p, even sides, faststart:
plays in browsers) is written to a temporary name and renamed, so a previous good video is only
replaced by a complete new one.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from story_pipeline.fsutil import atomic_path, atomic_write_text
from story_pipeline.render.text import draw, width, wrap
from story_pipeline.video_io import write_gif, write_mp4


@dataclass
class ShotPiece:
    shot_id: str
    prompt: str
    frames: np.ndarray  # (F, H, W, 3) uint8 rendered frames
    fps: float
    clip_frame: np.ndarray | None = None  # a frame of the retrieved clip (storyboard)
    depth_frame: np.ndarray | None = None  # (H, W) in [-1, 1]: the middle conditioning depth (storyboard)
    clip_id: str = ""
    flagged: list = field(default_factory=list)  # names of failed checks


@dataclass
class Assembled:
    video: Path
    gif: Path
    storyboard: Path
    seconds: float
    frames: int
    size: tuple
    flagged: dict  # shot id -> failed checks


def _text_card(text: str, size: tuple[int, int], frames: int) -> np.ndarray:
    h, w = size
    img = Image.new("RGB", (w, h), (16, 16, 24))
    d = ImageDraw.Draw(img)
    lines = wrap(d, text, w - 16, 12)
    y = h // 2 - 8 * len(lines)
    for ln in lines:
        draw(d, ((w - int(width(d, ln, 12))) // 2, y), ln, (240, 240, 240), 12)
        y += 16
    return np.repeat(np.asarray(img)[None], frames, axis=0)


def _fit(frames: np.ndarray, size: tuple[int, int], scale: int) -> np.ndarray:
    """Upscale by ``scale`` (nearest) and centre on a black canvas of ``size`` (H, W)."""
    up = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    H, W = size
    out = np.zeros((len(up), H, W, 3), np.uint8)
    h, w = up.shape[1:3]
    y, x = (H - h) // 2, (W - w) // 2
    out[:, y:y + h, x:x + w] = up
    return out


def _resample(frames: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
    if abs(src_fps - dst_fps) < 1e-6:
        return frames
    n = max(1, round(len(frames) * dst_fps / src_fps))
    idx = np.minimum((np.arange(n) * src_fps / dst_fps).astype(int), len(frames) - 1)
    return frames[idx]


def _flag_band(frames: np.ndarray, text: str) -> np.ndarray:
    out = frames.copy()
    band = max(10, frames.shape[1] // 12)
    out[:, -band:] = (out[:, -band:] * 0.3 + np.array([180, 20, 20]) * 0.7).astype(np.uint8)
    img = [Image.fromarray(f) for f in out]
    for im in img:
        draw(ImageDraw.Draw(im), (3, im.height - band), text, (255, 255, 255), max(9, band - 2))
    return np.stack([np.asarray(im) for im in img])


def storyboard_png(pieces: list[ShotPiece], path: Path, tile: int = 128) -> Path:
    """Per shot a row: retrieved clip frame | its depth | rendered frame | shot id, clip and prompt."""
    rows = []
    text_w = 420
    for p in pieces:
        mid = p.frames[len(p.frames) // 2]
        tiles = []
        for img in (p.clip_frame, p.depth_frame, mid):
            if img is None:
                tiles.append(Image.new("RGB", (tile, tile), (40, 40, 40)))
                continue
            if img.ndim == 2:  # depth in [-1, 1] -> grey, near = bright
                img = ((img + 1) * 127.5).clip(0, 255).astype(np.uint8)[..., None].repeat(3, -1)
            im = Image.fromarray(img)
            tiles.append(im.resize((round(im.width * tile / im.height), tile), Image.NEAREST))
        w = sum(t.width for t in tiles) + 6 * len(tiles) + text_w
        row = Image.new("RGB", (w, tile + 6), "white")
        x = 0
        for t in tiles:
            row.paste(t, (x, 3))
            x += t.width + 6
        d = ImageDraw.Draw(row)
        draw(d, (x, 6), f"{p.shot_id}  (clip {p.clip_id})", "black")
        for i, line in enumerate(wrap(d, p.prompt, text_w - 10)):
            draw(d, (x, 26 + 14 * i), line, "black")
        if p.flagged:
            draw(d, (x, tile - 14), "check failed: " + ", ".join(p.flagged), (200, 0, 0))
        rows.append(row)
    header = Image.new("RGB", (max(r.width for r in rows), 18), "white")
    draw(ImageDraw.Draw(header), (4, 2), "retrieved clip | its depth (motion structure) | rendered shot", "black")
    board = Image.new("RGB", (header.width, 18 + sum(r.height for r in rows)), "white")
    board.paste(header, (0, 0))
    y = 18
    for r in rows:
        board.paste(r, (0, y))
        y += r.height
    with atomic_path(path) as tmp:
        board.save(tmp, format="PNG")
    return Path(path)


def assemble_story(title: str, pieces: list[ShotPiece], out_video: Path, fps: float, scale: int = 4,
                   crossfade_frames: int = 0, title_seconds: float = 1.0) -> Assembled:
    if not pieces:
        raise ValueError("a story video needs at least one rendered shot.")
    H = max(p.frames.shape[1] for p in pieces) * scale
    W = max(p.frames.shape[2] for p in pieces) * scale
    H, W = H + H % 2, W + W % 2
    parts = [_text_card(title, (H, W), max(1, round(title_seconds * fps)))] if title else []
    for p in pieces:
        f = _fit(_resample(p.frames, p.fps, fps), (H, W), scale)
        parts.append(_flag_band(f, "check failed: " + ", ".join(p.flagged)) if p.flagged else f)
    video = parts[0]
    for nxt in parts[1:]:
        k = min(crossfade_frames, len(video) - 1, len(nxt) - 1)
        if k > 0:
            a = np.linspace(0, 1, k + 2)[1:-1, None, None, None]
            blend = (video[-k:] * (1 - a) + nxt[:k] * a).astype(np.uint8)
            video = np.concatenate([video[:-k], blend, nxt[k:]])
        else:
            video = np.concatenate([video, nxt])
    out_video = Path(out_video)
    write_mp4(out_video, video, fps=fps, crf=18)
    gif = write_gif(out_video.with_suffix(".gif"), video[:, ::2, ::2], fps=fps)
    board = storyboard_png(pieces, out_video.with_name(out_video.stem + "_storyboard.png"))
    return Assembled(out_video, gif, board, len(video) / fps, len(video), (H, W),
                     {p.shot_id: p.flagged for p in pieces if p.flagged})


ASSEMBLE_VERSION = 1  # bump when the same renders would assemble differently


def video_record(artifacts_dir: Path, story_id: str) -> Path:
    """``<artifacts>/story_video/<story>.json``: the key of the inputs the story video was assembled from."""
    return Path(artifacts_dir) / "story_video" / f"{story_id}.json"


def video_key(story, artifacts_dir: Path, crossfade_frames: int = 2, scale: int = 4) -> str | None:
    """Identity of the story video's inputs (title, fps, each shot's prompt, kept render, depth and
    flags, the cross-fade); None while a shot has no render."""
    import hashlib
    import json

    from story_pipeline.render.shot import render_dir

    parts = []
    for shot in story.shots:
        try:
            r = json.loads((render_dir(artifacts_dir, story.id) / f"{shot.id}.json").read_text())
        except (OSError, ValueError):
            return None
        parts.append([shot.id, shot.prompt, r.get("memo_key"), Path(r.get("depth", "")).stem, r.get("clip_id"),
                      r.get("failed", [])])
    payload = json.dumps([ASSEMBLE_VERSION, story.title or story.id, story.defaults.fps, crossfade_frames, scale,
                          parts], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def assemble_story_video(story, settings, crossfade_frames: int = 2, scale: int = 4) -> Assembled:
    """The story's current renders (``rendered_shots/<story>/<shot>.json``) -> data/outputs/<story>.mp4."""
    import json

    from story_pipeline.depth.structure import load_motion_structure
    from story_pipeline.errors import StoryPipelineError
    from story_pipeline.previews import middle_frame
    from story_pipeline.render.shot import load_frames, render_dir
    from story_pipeline.corpus.retrieve import retrieval_dir

    pieces = []
    for shot in story.shots:
        pointer = render_dir(settings.artifacts_dir, story.id) / f"{shot.id}.json"
        if not pointer.exists():
            raise StoryPipelineError(f"Shot {shot.id!r} of {story.source or story.id} has not been rendered yet "
                                     f"({pointer} is missing); run `story run {story.source or story.id}`.")
        r = json.loads(pointer.read_text())
        clip_frame = None
        try:
            ret = json.loads((retrieval_dir(settings.artifacts_dir, story.id) / f"{shot.id}.json").read_text())
            c = next(c for c in ret["candidates"] + [ret["chosen"]] if c["clip_id"] == r.get("clip_id"))
            clip_frame = middle_frame(c["path"], c["start_frame"], c["end_frame"])
        except Exception:  # the storyboard shows a grey tile rather than failing the video
            pass
        depth = load_motion_structure(r["depth"]).depth
        pieces.append(ShotPiece(shot.id, shot.prompt, load_frames(Path(r["frames_path"])), float(r["fps"]), clip_frame,
                                depth[len(depth) // 2], r.get("clip_id", ""), list(r.get("failed", []))))
    key = video_key(story, settings.artifacts_dir, crossfade_frames, scale)
    out = Path(settings.outputs_dir) / f"{story.id}.mp4"
    out.parent.mkdir(parents=True, exist_ok=True)
    done = assemble_story(story.title or story.id, pieces, out, fps=float(story.defaults.fps), scale=scale,
                          crossfade_frames=crossfade_frames)
    atomic_write_text(video_record(settings.artifacts_dir, story.id), json.dumps(
        {"key": key, "video": str(done.video), "storyboard": str(done.storyboard), "flagged": done.flagged}, indent=1))
    return done
