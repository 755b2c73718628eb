"""Writing frames people watch: H.264 mp4 (browser-playable) and GIF previews, atomically.

    from story_pipeline.video_io import write_mp4, write_gif
    write_mp4("shot.mp4", frames, fps=8)      # (F, H, W, 3) uint8; odd sizes are padded to even
    write_gif("shot.gif", frames, fps=8, scale=2)
"""

from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image

from .fsutil import atomic_path


def write_mp4(path: str | Path, rgb: np.ndarray, fps: float, crf: int = 16) -> Path:
    """(F,H,W,3) uint8 -> H.264 yuv420p mp4, single-threaded and bitexact so bytes are reproducible.
    yuv420p needs even sides: an odd height/width is padded by one edge row/column."""
    rgb = np.asarray(rgb, np.uint8)
    if rgb.ndim != 4 or rgb.shape[-1] != 3 or len(rgb) == 0:
        raise ValueError(f"write_mp4 takes (F, H, W, 3) uint8 frames, got {rgb.shape}.")
    pad_h, pad_w = rgb.shape[1] % 2, rgb.shape[2] % 2
    if pad_h or pad_w:
        rgb = np.pad(rgb, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    F, H, W, _ = rgb.shape
    with atomic_path(path) as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (W, H), fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=None,
            macro_block_size=1, ffmpeg_log_level="error",
            output_params=["-crf", str(crf), "-preset", "medium", "-threads", "1", "-map_metadata", "-1",
                           "-fflags", "+bitexact", "-flags:v", "+bitexact", "-movflags", "+faststart", "-f", "mp4"],
        )
        writer.send(None)
        for frame in rgb:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
    return Path(path)


def write_gif(path: str | Path, rgb: np.ndarray, fps: float, scale: int = 1) -> Path:
    """(F,H,W,3) uint8 -> looping GIF, each frame upscaled ``scale`` times (nearest: pixels stay crisp)."""
    images = [Image.fromarray(np.ascontiguousarray(f)) for f in np.asarray(rgb, np.uint8)]
    if scale > 1:
        images = [im.resize((im.width * scale, im.height * scale), Image.NEAREST) for im in images]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=max(20, int(round(1000 / fps))), loop=0)
    return Path(path)
