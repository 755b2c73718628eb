"""Text on title cards, flag bands and storyboards: a font that covers what story files are written in.

PIL's default font has ASCII only, so "Zoë's Café" or "雪" came out as boxes. DejaVu Sans (shipped with
matplotlib, which the stack installs) covers Latin, Greek, Cyrillic and many symbols; a character it
lacks (CJK, for one) is drawn as its code point, ``[U+96EA]``, visibly, not as an empty box.
"""

import functools
import importlib.util
from pathlib import Path

from PIL import ImageDraw, ImageFont


@functools.cache
def _font_file() -> Path | None:
    spec = importlib.util.find_spec("matplotlib")  # found without importing matplotlib
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return path
    debian = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    return debian if debian.is_file() else None


@functools.cache
def font(size: int = 11):
    path = _font_file()
    return ImageFont.truetype(str(path), size) if path else ImageFont.load_default()


@functools.cache
def _covered() -> frozenset:
    path = _font_file()
    if path is None:
        return frozenset(range(32, 127))
    from fontTools.ttLib import TTFont

    return frozenset(TTFont(str(path)).getBestCmap())


def drawable(text: str) -> str:
    """``text`` with every character the font lacks written as ``[U+XXXX]``."""
    covered = _covered()
    return "".join(c if ord(c) in covered or c.isspace() else f"[U+{ord(c):04X}]" for c in text)


def draw(d: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, fill, size: int = 11) -> None:
    d.text(xy, drawable(text), fill=fill, font=font(size))


def width(d: ImageDraw.ImageDraw, text: str, size: int = 11) -> float:
    return d.textlength(drawable(text), font=font(size))


def wrap(d: ImageDraw.ImageDraw, text: str, max_width: float, size: int = 11) -> list[str]:
    """Words of ``text`` in lines no wider than ``max_width`` pixels (a longer word gets a line of its own)."""
    lines, line = [], ""
    for word in text.split():
        trial = (line + " " + word).strip()
        if line and width(d, trial, size) > max_width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + [line]
