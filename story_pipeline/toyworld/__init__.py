"""ToyWorld: the embedded procedural world (captioned clips with ground-truth depth).

    from story_pipeline.toyworld import Character, ClipSpec, render_clip
    clip = render_clip(ClipSpec(Character("cat", "orange", "black", "striped"), "jump", "meadow", seed=0))
    clip.rgb.shape, clip.depth.shape   # (32, 128, 128, 3) uint8, (32, 128, 128) float32 metres

See /work/shared/design/toyworld.md for why it exists.
"""

from story_pipeline.toyworld.captions import caption_agrees, caption_for, make_caption, paraphrase_query
from story_pipeline.toyworld.world import (
    ACCESSORIES, COLOURS, CORPUS_COLOURS, MOTIONS, NOVEL_COLOURS, PATTERNS, SETTINGS, SPECIES,
    Character, ClipSpec,
)
from story_pipeline.toyworld.render import ToyClip, render_clip, render_still
from story_pipeline.toyworld.corpus import NOVEL_CHARACTERS, sample_specs, write_reference_images, write_toyworld_corpus
