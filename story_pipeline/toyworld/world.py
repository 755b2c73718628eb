"""ToyWorld vocabularies and the two dataclasses every other module speaks: Character and ClipSpec.

    from story_pipeline.toyworld.world import Character, ClipSpec
    spec = ClipSpec(Character("cat", "orange", "black", "striped", "none"), "jump", "snowy_field", seed=3)

A character identity is species + colours + pattern + accessory. ``colour2`` paints the pattern
(stripes, spots, the second tone) and the accessory; a plain character without an accessory has
``colour2 == colour``.
"""

from dataclasses import asdict, dataclass

# Species templates drawn by render.py; each has a distinct silhouette (ears, tails, beaks, antennae).
SPECIES = ("cat", "dog", "fox", "rabbit", "bear", "robot", "bird", "duck", "frog", "penguin")

# Colour name -> sRGB. Corpus clips only use CORPUS_COLOURS; NOVEL_COLOURS are reserved for
# the novel identities of personalization (never seen in the corpus, so never learnt from it).
COLOURS = {
    "red": (200, 40, 40),
    "orange": (235, 130, 30),
    "yellow": (240, 210, 50),
    "green": (60, 160, 60),
    "blue": (45, 90, 210),
    "purple": (130, 60, 170),
    "pink": (240, 130, 180),
    "brown": (120, 75, 40),
    "white": (238, 238, 232),
    "black": (35, 35, 40),
    "grey": (130, 130, 135),
    # reserved for NOVEL_CHARACTERS
    "teal": (20, 150, 150),
    "gold": (215, 170, 40),
    "lavender": (175, 150, 230),
}
NOVEL_COLOURS = ("teal", "gold", "lavender")
CORPUS_COLOURS = tuple(c for c in COLOURS if c not in NOVEL_COLOURS)

PATTERNS = ("plain", "striped", "spotted", "two-tone")
ACCESSORIES = ("none", "hat", "scarf")

# One event per clip.
MOTIONS = (
    "walk_left", "walk_right", "run", "jump", "hop", "approach", "walk_away",
    "turn_around", "spin", "fall_over", "sit_down", "wave",
)

# A setting fixes the palette and the props (see render.SETTING_STYLES).
SETTINGS = ("meadow", "snowy_field", "desert", "beach", "night_street", "forest", "autumn_park")


@dataclass(frozen=True)
class Character:
    species: str  # one of SPECIES
    colour: str  # main body colour, a key of COLOURS
    colour2: str | None = None  # pattern / accessory colour; None -> same as colour
    pattern: str = "plain"  # one of PATTERNS
    accessory: str = "none"  # one of ACCESSORIES

    def __post_init__(self):
        if self.colour2 is None:
            object.__setattr__(self, "colour2", self.colour)
        check_choice("species", self.species, SPECIES)
        check_choice("colour", self.colour, COLOURS)
        check_choice("colour2", self.colour2, COLOURS)
        check_choice("pattern", self.pattern, PATTERNS)
        check_choice("accessory", self.accessory, ACCESSORIES)

    @property
    def uses_colour2(self) -> bool:
        """Whether colour2 is visible (a pattern or an accessory) and so part of the caption."""
        return self.pattern != "plain" or self.accessory != "none"

    def name(self) -> str:
        """Short human-readable identity, e.g. 'striped orange/black cat with hat'."""
        col = self.colour if not self.uses_colour2 else f"{self.colour}/{self.colour2}"
        pat = "" if self.pattern == "plain" else f"{self.pattern} "
        acc = "" if self.accessory == "none" else f" with {self.accessory}"
        return f"{pat}{col} {self.species}{acc}"


@dataclass(frozen=True)
class ClipSpec:
    character: Character
    motion: str  # one of MOTIONS
    setting: str  # one of SETTINGS
    seed: int  # everything random in the clip (layout, props, caption wording) derives from it
    num_frames: int = 32  # 32 frames at 12 fps = 2.7 s: long enough for one full event
    size: int = 128  # square frames; the tiny models train at 64 (downsampled) or 128
    fps: int = 12  # low fps keeps clips short in frames while motions still read as motion

    def __post_init__(self):
        check_choice("motion", self.motion, MOTIONS)
        check_choice("setting", self.setting, SETTINGS)
        if self.num_frames < 2:
            raise ValueError(f"ClipSpec.num_frames must be >= 2, got {self.num_frames}.")
        if self.size < 32:
            raise ValueError(f"ClipSpec.size must be >= 32 pixels, got {self.size}.")
        if self.fps < 1:
            raise ValueError(f"ClipSpec.fps must be >= 1, got {self.fps}.")

    def attributes(self) -> dict:
        """Ground-truth attributes: species, colour, colour2, pattern, accessory, motion, setting, seed."""
        return {**asdict(self.character), "motion": self.motion, "setting": self.setting,
                "seed": int(self.seed)}


def check_choice(field: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"Unknown ToyWorld {field} {value!r}; choose one of {', '.join(choices)}.")
