"""Text on title cards and storyboards: accented letters drawn with a font that has them, characters it
lacks written as their code point (not as an empty box)."""

import numpy as np
from PIL import Image, ImageDraw

from story_pipeline.render.assemble import _text_card
from story_pipeline.render.text import draw, drawable


def test_story_text_is_drawn_or_named_never_boxed():
    assert drawable("Zoë's café, señor") == "Zoë's café, señor"
    assert drawable("雪 day") == "[U+96EA] day"
    # the accented word draws as many pixels as its plain twin (a box would draw an outline instead)
    ink = []
    for word in ("Zoë", "Zoe"):
        im = Image.new("L", (80, 24), 0)
        draw(ImageDraw.Draw(im), (2, 2), word, 255, 16)
        ink.append(int((np.asarray(im) > 128).sum()))
    assert abs(ink[0] - ink[1]) < 0.2 * ink[1]
    card = _text_card("Zoë 雪", (64, 128), 2)
    assert card.shape == (2, 64, 128, 3) and card.max() > 200  # the text is on the card
