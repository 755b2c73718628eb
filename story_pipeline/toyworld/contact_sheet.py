"""Contact sheet of random ToyWorld clips: middle frame next to its depth, with a short label.

    python -m story_pipeline.toyworld.contact_sheet out.png [--n 16] [--seed 0] [--size 128]
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from story_pipeline.fsutil import atomic_path
from story_pipeline.toyworld.corpus import sample_specs
from story_pipeline.toyworld.render import render_clip

# 8 anchor colours of a perceptual ramp (near = bright yellow ... far = dark purple, like magma/viridis)
_RAMP = np.array([(253, 231, 37), (180, 222, 44), (94, 201, 98), (33, 145, 140), (44, 114, 142),
                  (59, 82, 139), (72, 40, 120), (68, 1, 84)], np.float32)


def depth_to_rgb(depth: np.ndarray, near: float = 1.5, far: float = 40.0) -> np.ndarray:
    """(H,W) metres -> (H,W,3) uint8, log-scaled between near and far (near = yellow, far = purple)."""
    t = np.clip(np.log(np.maximum(depth, 1e-3) / near) / np.log(far / near), 0, 1) * (len(_RAMP) - 1)
    i = np.minimum(t.astype(int), len(_RAMP) - 2)
    f = (t - i)[..., None]
    return (_RAMP[i] * (1 - f) + _RAMP[i + 1] * f).astype(np.uint8)


def _label(spec) -> str:
    """Two short lines: what happens where, then the identity."""
    ch = spec.character
    look = ch.colour if not ch.uses_colour2 else f"{ch.colour}/{ch.colour2}"
    look = look if ch.pattern == "plain" else f"{ch.pattern} {look}"
    look = look if ch.accessory == "none" else f"{look}, {ch.accessory}"
    return f"{ch.species} {spec.motion} {spec.setting}\n{look}"


def contact_sheet(n: int = 16, seed: int = 0, out_png: str | Path = "contact_sheet.png", size: int = 128) -> Path:
    """Render n random clips (sample_specs(n, seed)) and save a grid of (rgb | depth) middle frames."""
    specs = sample_specs(n, seed, size=size)
    cols = 4
    rows = (n + cols - 1) // cols
    label_h = 24
    tile_w, tile_h = 2 * size + 6, size + label_h + 4
    sheet = Image.new("RGB", (cols * tile_w, rows * tile_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for j, spec in enumerate(specs):
        clip = render_clip(spec)
        mid = spec.num_frames // 2
        x, y = (j % cols) * tile_w, (j // cols) * tile_h
        sheet.paste(Image.fromarray(clip.rgb[mid]), (x, y))
        sheet.paste(Image.fromarray(depth_to_rgb(clip.depth[mid])), (x + size + 2, y))
        draw.multiline_text((x + 2, y + size + 1), _label(spec), fill=(0, 0, 0), spacing=1)
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        sheet.save(tmp, format="PNG")
    return out_png


def main(argv=None):
    p = argparse.ArgumentParser(description="Write a ToyWorld contact sheet (middle frames + depth).")
    p.add_argument("out_png", type=Path)
    p.add_argument("--n", type=int, default=16, help="number of clips")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--size", type=int, default=128, help="frame size in pixels")
    args = p.parse_args(argv)
    print(contact_sheet(args.n, args.seed, args.out_png, args.size))


if __name__ == "__main__":
    main()
