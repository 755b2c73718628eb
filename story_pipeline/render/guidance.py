"""Adaptive structure guidance: how strongly a shot's render follows its clip's depth.

The retrieved clip gives a shot its motion as per-frame depth, and with it its actor's silhouette. When
the actor is not the character's kind (the corpus has no clip of that kind doing the motion, and
retrieval took the nearest body type; ``corpus/retrieve.py`` records ``kind_fit`` per candidate), full
guidance paints the character in the actor's shape. The paper names "a better cooperation between
character control and structure control" as future work; here the render relaxes structure guidance for
such a clip — weaker depth features (strength; depth on fewer sampling steps, tau, measured worse) —
except what the story sets itself. ``bench/structure_guidance.py`` measured the values below.

    g = structure_guidance(story, shot, clip)      # clip: a retrieval candidate (dict)
    g.tau, g.strength, g.reason, g.overrides       # overrides: {} when nothing is relaxed
"""

from dataclasses import dataclass, field

# Relaxed guidance for a clip whose actor is another kind. bench/structure_guidance.py, 24 held-out
# ToyWorld clips rendered with a prompt naming another species (toy CLIP recognises it / depth si-RMSE
# of the frames against the clip's depth; the depth net's own error on real clips is ~0.03):
#   tau 1 strength 1: 0.17 / 0.021    tau 0.7: 0.17 / 0.041    tau 0.5: 0.25 / 0.055    tau 0.3: 0.21 / 0.073
#   strength 0.7: 0.21 / 0.026        strength 0.5: 0.33 / 0.040   strength 0.3: 0.33 / 0.082
#   tau 0.7 strength 0.5: 0.25 / 0.058   tau 0.5 strength 0.5: 0.25 / 0.069
# Weaker depth features on every step beat fewer steps with depth on both counts.
RELAXED_TAU = 1.0
RELAXED_STRENGTH = 0.5


@dataclass(frozen=True)
class Guidance:
    tau: float
    strength: float
    reason: str
    overrides: dict = field(default_factory=dict)  # render settings that differ from the story's


def structure_guidance(story, shot, clip: dict) -> Guidance:
    """The tau and strength a shot renders with on ``clip``, and why."""
    s = story.resolved(shot)
    kinds = " and ".join(c.class_word for c in story.characters_in(shot))
    if not kinds:
        return Guidance(s.tau, s.strength, "as the story sets it (no character in the shot)")
    if clip.get("kind_fit") is not False:
        return Guidance(s.tau, s.strength, f"as the story sets it (the clip shows a {kinds})")
    actor = f"the clip's actor is not a {kinds} ({clip.get('caption', clip.get('clip_id', ''))!r})"
    relaxed = {"tau": min(s.tau, RELAXED_TAU), "strength": min(s.strength, RELAXED_STRENGTH)}
    fixed = [k for k in relaxed if story.sets(shot, k) and relaxed[k] != getattr(s, k)]
    overrides = {k: v for k, v in relaxed.items() if v != getattr(s, k) and k not in fixed}
    if not overrides:
        why = f"kept as the story sets {' and '.join(fixed)}" if fixed else "the story's guidance is already this loose"
        return Guidance(s.tau, s.strength, f"{actor}; {why}")
    tau, strength = overrides.get("tau", s.tau), overrides.get("strength", s.strength)
    return Guidance(tau, strength, f"{actor}: structure relaxed to tau {tau:g}, strength {strength:g} "
                                   "so the character keeps its own shape", overrides)
