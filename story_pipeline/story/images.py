"""Reference images: checked from their header before anything is decoded, then opened as RGB."""


import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from story_pipeline.config import StoryLimits, get_settings
from story_pipeline.story.spec import StoryError




# --- 5. Reference images ------------------------------------------------------------------------
def _size(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB" if n >= 1024**2 else f"{n} bytes"


def image_problem(path: Path, limits: StoryLimits) -> str | None:
    """Why the file can't be a reference image, or None. Header checks come before any decoding."""
    try:
        size = path.stat().st_size
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if size == 0:
        return "is an empty file; re-export the image"
    if size > limits.max_image_bytes:
        return f"is {_size(size)}, above the {_size(limits.max_image_bytes)} limit for reference images; downscale it"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)  # reads the header only
    except Image.DecompressionBombError:
        return (f"claims more than {limits.max_image_pixels / 1e6:.0f} MP (a decompression bomb or a huge "
                "image); downscale it")
    except UnidentifiedImageError:
        return "is not an image Pillow can read; save it as PNG or JPEG"
    except OSError as e:
        return f"cannot be read ({e}); re-export it as PNG or JPEG"
    with im:
        w, h = im.size
        if im.format not in limits.image_formats:
            return f"is a {im.format} file; save it as one of {', '.join(limits.image_formats)}"
        if w * h > limits.max_image_pixels:
            return (f"is {w}x{h} pixels ({w * h / 1e6:.0f} MP), above the {limits.max_image_pixels / 1e6:.0f} MP "
                    "limit; downscale it (512-1024 px per side is plenty)")
        if min(w, h) < limits.min_image_side:
            return f"is only {w}x{h} pixels; use at least {limits.min_image_side} px per side"
        if getattr(im, "is_animated", False):
            return "is animated (more than one frame); save the frame that shows the character as PNG"
        try:
            im.verify()  # checksums and structure, without decoding pixels
        except Exception as e:  # Pillow raises many types here (SyntaxError, struct.error, OSError...)
            return f"is corrupt ({e or type(e).__name__}); re-export it"
    try:
        with Image.open(path) as im:
            im.load()  # bounded by the pixel limit above; catches truncated JPEG data verify() skips
    except Exception as e:
        return f"is corrupt or truncated ({e or type(e).__name__}); re-export it"
    return None


def load_reference_image(path: str | os.PathLike, limits: StoryLimits | None = None) -> Image.Image:
    """Check and open a reference image as 8-bit RGB (EXIF rotation applied).

    Palette, grey, CMYK and 16-bit images are converted; transparency is composited on white;
    animated images (GIF, APNG, WebP) are rejected, not reduced to a frame."""
    path = Path(path)
    limits = limits or get_settings().story_limits
    if (problem := image_problem(path, limits)) is not None:
        raise StoryError(f"{path}: {problem}.", file=str(path), problem=problem)
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode.startswith("I") or im.mode == "F":  # 16/32-bit grey: rescale instead of clipping
            a = np.asarray(im, dtype=np.float64)
            if im.mode == "F":
                a = a * 255 if a.max() <= 1.0 else a
            elif im.mode.startswith("I;16") or a.max() > 255:
                a = a / 257
            return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
        if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return im.convert("RGB")


