"""Generators of bad (and oddly good) inputs: story files, reference images, videos. Nothing is
committed; every file is made in a temporary folder, cheaply (the 20000x20000 PNG is a few
hundred bytes: a real small PNG whose header is rewritten, CRC fixed)."""

import io
import os
import struct
import subprocess
import zlib
from fractions import Fraction
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
from PIL import Image

from story_pipeline.toyworld import render_clip, sample_specs
from story_pipeline.video_io import write_mp4

# --- story files ------------------------------------------------------------------------------
STORY = """\
title: Bad inputs
characters:
  - token: <tabby>
    class_word: cat
    images: [refs/a.png]
shots:
  - id: leap
    prompt: a <tabby> leaps into the air
  - id: walk
    prompt: a <tabby> walks to the left
"""
IMAGES_LINE = "    images: [refs/a.png]\n"


def png_bytes(size=(64, 64), colour=(200, 40, 40), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


def story_folder(folder: Path, text: str = STORY, name: str = "story.yaml") -> Path:
    """A story folder with its reference image; returns the story file's path."""
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "a.png").write_bytes(png_bytes())
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def with_images(*paths: str) -> str:
    """The story with the character's image list replaced (paths written as YAML flow items)."""
    return STORY.replace(IMAGES_LINE, f"    images: [{', '.join(paths)}]\n")


def on_shot(line: str) -> str:
    """The story with one more key on its last shot."""
    return STORY + f"    {line}\n"


# --- reference images ------------------------------------------------------------------------------
def saved(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A valid 64x64 PNG whose IHDR claims width x height: a decompression bomb's header, 200 bytes."""
    data = bytearray(png_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def corrupt_png() -> bytes:
    data = bytearray(png_bytes(colour=(1, 2, 3)))
    i = data.index(b"IDAT") + 6
    data[i:i + 4] = b"\x00\xff\x00\xff"  # the chunk's CRC no longer matches
    return bytes(data)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return saved(frames[0], "GIF", save_all=True, append_images=frames[1:])


def cmyk_jpeg() -> bytes:
    return saved(Image.new("CMYK", (64, 64), (0, 255, 255, 0)), "JPEG")  # red ink


def png_16bit() -> bytes:
    return saved(Image.fromarray(np.full((64, 64), 40000, np.uint16)), "PNG")


# --- videos ----------------------------------------------------------------------------------------
FPS = 12


def toy_frames(num_frames: int = 24, size: int = 128, seed: int = 3) -> np.ndarray:
    """(F, size, size, 3) uint8: one ToyWorld clip (a character moving on a backdrop)."""
    spec = sample_specs(1, seed=seed, num_frames=num_frames, size=size)[0]
    return render_clip(spec).rgb


def good_video(path: Path, num_frames: int = 24, size: int = 128, fps: int = FPS, seed: int = 3) -> Path:
    """A header-first (faststart) H.264 mp4, as ToyWorld writes it."""
    return write_mp4(path, toy_frames(num_frames, size, seed), fps)


def ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", *args], check=True)


def header_last_video(path: Path, frames: np.ndarray, fps: int = FPS) -> Path:
    """Plain ffmpeg output: the moov header is written at the end of the file."""
    writer = imageio_ffmpeg.write_frames(str(path), frames.shape[2:0:-1], fps=fps, codec="libx264",
                                         pix_fmt_out="yuv420p", macro_block_size=16,
                                         output_params=["-threads", "1"], ffmpeg_log_level="error")
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


def truncated_video(path: Path) -> Path:
    """Header at the end, file cut in half: the container cannot be opened."""
    header_last_video(path, toy_frames())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def header_claims_more_frames(path: Path) -> Path:
    """Header first, frame data cut: the header promises 48 frames, far fewer exist."""
    good_video(path, num_frames=48)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def audio_only(path: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", "-f", "mp4", str(path))
    return path


def variable_frame_rate(path: Path) -> Path:
    """24 frames whose gaps alternate 1/30 s and 1/10 s (PyAV, millisecond timestamps)."""
    frames = toy_frames()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 128, 128, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        pts = 0
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            pts += 33 if i % 2 == 0 else 100
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def matroska_named_mp4(path: Path) -> Path:
    """A real video in a Matroska container under an .mp4 name (decoders sniff the content)."""
    mkv = path.with_suffix(".mkv.tmp")
    good_video(path.with_suffix(".src.mp4"))
    ffmpeg("-i", str(path.with_suffix(".src.mp4")), "-c", "copy", "-f", "matroska", str(mkv))
    os.replace(mkv, path)
    path.with_suffix(".src.mp4").unlink()
    return path


def png_named_mp4(path: Path) -> Path:
    path.write_bytes(saved(Image.fromarray(toy_frames(2)[0]), "PNG"))
    return path


def caption(video: Path, text: str | bytes) -> Path:
    """The sidecar caption of a video (``clip.mp4`` + ``clip.txt``)."""
    side = video.with_suffix(".txt")
    side.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return video
