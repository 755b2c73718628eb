"""Templated ToyWorld captions and held-out query paraphrases.

    from story_pipeline.toyworld.captions import make_caption, paraphrase_query
    make_caption(spec.attributes(), random.Random(0))
    # 'in the desert, a blue robot strolls to the left'
    paraphrase_query("cat", "jump", random.Random(1))   # 'kitty jumping up'

Captions draw synonyms and word order at random so retrieval has to be semantic, not keyword
matching. Queries use a different phrase set (QUERY_*) wherever the language allows, but keep a
species word (or a close synonym) and a recognisable motion verb. The tables are public so other
modules (eval, tests) can check that a caption agrees with its attributes.
"""

import random

# species -> words captions may use (the first is the canonical name)
SPECIES_SYNONYMS = {
    "cat": ("cat", "kitten", "cat"),
    "dog": ("dog", "puppy", "dog"),
    "fox": ("fox", "little fox"),
    "rabbit": ("rabbit", "bunny"),
    "bear": ("bear", "bear cub"),
    "robot": ("robot", "toy robot"),
    "bird": ("bird", "little bird", "songbird"),
    "duck": ("duck", "duckling"),
    "frog": ("frog", "little frog"),
    "penguin": ("penguin", "baby penguin"),
}

# motion -> (third-person phrase, gerund phrase) pairs used in captions
MOTION_PHRASES = {
    "walk_left": (("walks to the left", "walking to the left"), ("strolls to the left", "strolling to the left"),
                  ("walks left", "walking left")),
    "walk_right": (("walks to the right", "walking to the right"), ("strolls to the right", "strolling to the right"),
                   ("walks right", "walking right")),
    "run": (("runs across the scene", "running across the scene"), ("runs", "running"),
            ("sprints past", "sprinting past"), ("dashes across", "dashing across")),
    "jump": (("jumps up high", "jumping up high"), ("leaps into the air", "leaping into the air"),
             ("jumps", "jumping")),
    "hop": (("hops along", "hopping along"), ("hops around", "hopping around"),
            ("bounces along in little hops", "bouncing along in little hops")),
    "approach": (("walks toward the camera", "walking toward the camera"),
                 ("approaches the camera", "approaching the camera"),
                 ("comes closer to the camera", "coming closer to the camera")),
    "walk_away": (("walks away from the camera", "walking away from the camera"),
                  ("walks off into the distance", "walking off into the distance"),
                  ("moves away from the camera", "moving away from the camera")),
    "turn_around": (("turns around", "turning around"), ("turns to face the other way", "turning to face the other way"),
                    ("turns back around", "turning back around")),
    "spin": (("spins in circles", "spinning in circles"), ("twirls", "twirling"),
             ("spins on the spot", "spinning on the spot")),
    "fall_over": (("falls over", "falling over"), ("tumbles over", "tumbling over"),
                  ("topples over", "toppling over")),
    "sit_down": (("sits down", "sitting down"), ("takes a seat", "taking a seat"),
                 ("sits down to rest", "sitting down to rest")),
    "wave": (("waves hello", "waving hello"), ("waves", "waving"),
             ("gives a friendly wave", "giving a friendly wave")),
}

# setting -> phrases ("in the desert") and the keywords one of which every phrase contains
SETTING_PHRASES = {
    "meadow": ("in a meadow", "in a grassy meadow", "on a green meadow", "in a flowery meadow"),
    "snowy_field": ("in a snowy field", "in the snow", "on a snowy field", "in a winter snow field"),
    "desert": ("in the desert", "in a sandy desert", "among desert dunes", "in the dry desert"),
    "beach": ("on the beach", "on a sunny beach", "on the seashore", "on a beach by the sea"),
    "night_street": ("on a street at night", "on a dark city street at night", "in a town street at night",
                     "on a night street"),
    "forest": ("in the forest", "in a dense forest", "in the woods", "in a pine forest"),
    "autumn_park": ("in an autumn park", "in a park in autumn", "among autumn leaves in a park",
                    "in a park full of autumn leaves"),
}
SETTING_KEYWORDS = {
    "meadow": ("meadow",),
    "snowy_field": ("snow", "snowy"),
    "desert": ("desert",),
    "beach": ("beach", "seashore"),
    "night_street": ("night",),
    "forest": ("forest", "woods"),
    "autumn_park": ("autumn",),
}

PATTERN_WORDS = {"striped": "striped", "spotted": "spotted", "two-tone": "two-tone"}
PATTERN_NOUNS = {"striped": "stripes", "spotted": "spots"}
ACCESSORY_WORDS = {"hat": ("{c} hat", "little {c} hat", "{c} wool hat"),
                   "scarf": ("{c} scarf", "woolly {c} scarf")}

# Held-out query phrasing (used for the recall test; differs from the caption phrases where possible)
QUERY_SPECIES = {
    "cat": ("kitty", "cat", "house cat"),
    "dog": ("doggy", "dog", "pup"),
    "fox": ("fox", "young fox"),
    "rabbit": ("bunny rabbit", "rabbit", "bunny"),
    "bear": ("bear", "big bear", "bear cub"),
    "robot": ("robot", "little robot", "robot toy"),
    "bird": ("bird", "small bird", "songbird"),
    "duck": ("duck", "ducky", "little duck"),
    "frog": ("frog", "froggy", "small frog"),
    "penguin": ("penguin", "little penguin"),
}
QUERY_MOTIONS = {
    "walk_left": ("walking leftwards", "moving to the left", "going left"),
    "walk_right": ("walking rightwards", "moving to the right", "going right"),
    "run": ("running fast", "sprinting", "running at full speed"),
    "jump": ("jumping up", "making a big jump", "jumping in the air"),
    "hop": ("hopping", "hopping about", "doing small hops"),
    "approach": ("coming toward the camera", "walking toward the viewer", "approaching the viewer"),
    "walk_away": ("walking away into the distance", "going away from the camera", "walking away from the viewer"),
    "turn_around": ("turning round", "turning its back", "turning to look the other direction"),
    "spin": ("spinning around in circles", "spinning round", "spinning"),
    "fall_over": ("falling down", "tripping and falling over", "falling over on the ground"),
    "sit_down": ("sitting down on its bottom", "sitting on the ground", "sitting down on the ground"),
    "wave": ("waving a greeting", "waving hi", "waving at the camera"),
}


def _pick(rng, seq):
    """Choose from a sequence with either a random.Random or a numpy Generator."""
    if hasattr(rng, "integers"):
        return seq[int(rng.integers(len(seq)))]
    return seq[rng.randrange(len(seq))]


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def describe_character(attrs: dict, rng) -> str:
    """Noun phrase with article, e.g. 'a striped orange cat' or 'an orange cat with black stripes'."""
    species = _pick(rng, SPECIES_SYNONYMS[attrs["species"]])
    colour, colour2, pattern = attrs["colour"], attrs["colour2"], attrs["pattern"]
    if pattern == "plain":
        phrase = _article(f"{colour} {species}")
    elif pattern in PATTERN_NOUNS and _pick(rng, (0, 1)):
        phrase = _article(f"{colour} {species} with {colour2} {PATTERN_NOUNS[pattern]}")
    elif pattern == "two-tone":
        phrase = _article(_pick(rng, (f"two-tone {colour} and {colour2} {species}",
                                      f"{colour} and {colour2} {species}")))
    else:
        phrase = _article(f"{PATTERN_WORDS[pattern]} {colour} {species}")
    if attrs["accessory"] != "none":
        acc = _pick(rng, ACCESSORY_WORDS[attrs["accessory"]]).format(c=colour2)
        verb = _pick(rng, ("wearing", "in") if " with " in phrase else ("wearing", "in", "with"))
        phrase += f" {verb} {_article(acc)}"
    return phrase


def make_caption(attrs: dict, rng) -> str:
    """Templated caption naming species (or synonym), colour(s), pattern, accessory, motion, setting.

    attrs: dict with species, colour, colour2, pattern, accessory, motion, setting (ClipSpec.attributes()).
    rng: random.Random or numpy Generator; the wording is a pure function of its state.
    """
    who = describe_character(attrs, rng)
    does, doing = _pick(rng, MOTION_PHRASES[attrs["motion"]])
    where = _pick(rng, SETTING_PHRASES[attrs["setting"]])
    template = _pick(rng, range(5))
    if template == 0:
        return f"{who} {does} {where}"
    if template == 1:
        return f"{where}, {who} {does}"
    if template == 2:
        return f"{who} {doing} {where}"
    if template == 3:
        return f"{where}: {who} {doing}"
    return f"a video of {who} {doing} {where}"


def caption_for(spec) -> str:
    """The caption render_clip gives a ClipSpec (no rendering needed: for index/retrieval tests)."""
    return make_caption(spec.attributes(), random.Random(f"caption-{spec.seed}"))


def paraphrase_query(species: str, motion: str, rng) -> str:
    """A held-out user query for (species, motion), e.g. 'kitty jumping up', 'a dog trotting leftwards'."""
    who = _pick(rng, QUERY_SPECIES[species])
    doing = _pick(rng, QUERY_MOTIONS[motion])
    template = _pick(rng, range(4))
    if template == 0:
        return f"{who} {doing}"
    if template == 1:
        return f"{_article(who)} {doing}"
    if template == 2:
        return f"clip of {_article(who)} {doing}"
    return f"the {who} is {doing}"


def caption_agrees(caption: str, attrs: dict) -> bool:
    """True when the caption names the species (or a synonym), the colour and the setting of attrs."""
    text = f" {caption.lower()} "
    species_ok = any(f" {w} " in text for w in SPECIES_SYNONYMS[attrs["species"]])
    colour_ok = f" {attrs['colour']} " in text
    setting_ok = any(k in text.replace(",", " ").replace(":", " ").split() for k in SETTING_KEYWORDS[attrs["setting"]])
    return species_ok and colour_ok and setting_ok
