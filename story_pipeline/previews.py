"""Small previews for humans: thumbnail strips of clips (PNG), shown in asset metadata."""

import base64
from pathlib import Path

import numpy as np
from PIL import Image

from story_pipeline.fsutil import atomic_path


def middle_frame(path: str, start_frame: int, end_frame: int) -> np.ndarray:
    """Decode the middle frame of a clip span with decord. Returns (H, W, 3) uint8."""
    import decord

    vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
    idx = min(len(vr) - 1, (int(start_frame) + int(end_frame)) // 2)
    return vr[idx].asnumpy()


def thumbnail_strip(clips, out_png: Path, n: int = 8, height: int = 64) -> Path:
    """Write a horizontal strip of the middle frames of the first ``n`` clips of a clip table."""
    tiles = []
    for r in clips.slice(0, n).to_pylist():
        try:
            tiles.append(Image.fromarray(middle_frame(r["path"], r["start_frame"], r["end_frame"])))
        except Exception:  # a preview must never fail the stage
            continue
    return _strip(tiles, out_png, height)


def reference_strip(image_paths: list, out_png: Path, height: int = 64) -> Path | None:
    """Write a horizontal strip of a character's reference images (already checked by load_story)."""
    from story_pipeline.story.images import load_reference_image

    return _strip([load_reference_image(p) for p in image_paths], out_png, height)


def _strip(images: list, out_png: Path, height: int) -> Path | None:
    if not images:
        return None
    tiles = [im.resize((max(1, round(im.width * height / im.height)), height)) for im in images]
    strip = Image.new("RGB", (sum(t.width for t in tiles) + 2 * (len(tiles) - 1), height), "white")
    x = 0
    for t in tiles:
        strip.paste(t, (x, 0))
        x += t.width + 2
    with atomic_path(out_png) as tmp:
        strip.save(tmp, format="PNG")
    return Path(out_png)


def png_data_uri(png_path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(png_path).read_bytes()).decode()


def gif_data_uri(gif_path: Path) -> str:
    return "data:image/gif;base64," + base64.b64encode(Path(gif_path).read_bytes()).decode()
