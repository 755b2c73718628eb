"""Render ToyWorld clips: RGB frames, metric z-buffer depth, a caption and ground-truth attributes.

    python -c "from story_pipeline.toyworld import *; c = render_clip(ClipSpec(Character('cat','orange','black','striped'), 'jump', 'meadow', 0)); print(c.caption)"

The background (sky, ground, props) is rendered once per clip; each frame adds the character at
its pose. Everything random comes from numpy Generators seeded by the clip seed, so a ClipSpec
fully determines the output bytes.
"""

from dataclasses import dataclass

import numpy as np

from story_pipeline.toyworld.captions import caption_for
from story_pipeline.toyworld.characters import build_template, pose_matrices
from story_pipeline.toyworld.scene import SETTING_STYLES, Camera, render_background
from story_pipeline.toyworld.shapes import R, S, T, about, make_batch, rasterize
from story_pipeline.toyworld.world import COLOURS, Character, ClipSpec


@dataclass
class ToyClip:
    rgb: np.ndarray  # (F, H, W, 3) uint8
    depth: np.ndarray  # (F, H, W) float32 metres along the optical axis, larger = farther (sky = FAR)
    mask: np.ndarray  # (F, H, W) bool, where the character is visible
    caption: str
    attributes: dict  # species, colour, colour2, pattern, accessory, motion, setting, seed
    fps: int


# --- colours and patterns ---------------------------------------------------------------------
def _rgb(name):
    return np.array(COLOURS[name], float) / 255


def character_colours(ch: Character, light: float = 1.0) -> dict:
    body, second = _rgb(ch.colour), _rgb(ch.colour2)
    cols = {
        "body": body, "acc": second, "dark": np.array([0.1, 0.09, 0.1]), "eye": np.array([0.05, 0.05, 0.08]),
        "light": np.array([0.96, 0.95, 0.92]), "white": np.array([0.97, 0.97, 0.97]),
        "beak": np.array([0.98, 0.6, 0.1]), "pink": np.array([0.95, 0.6, 0.65]),
        "muzzle": body * 0.45 + 0.55 * np.array([0.95, 0.9, 0.8]), "ear": body * 0.55,
        "metal": np.array([0.62, 0.64, 0.68]), "visor": np.array([0.35, 0.95, 1.0]),
        "bulb": np.array([1.0, 0.25, 0.2]), "hatband": second * 0.5,
    }
    return {k: np.clip(v * (light if k not in ("visor", "bulb") else 1.0), 0, 1) for k, v in cols.items()}


def make_pattern(ch: Character, two_tone_y: float, light: float):
    """-> callable(lx, ly, base) painting stripes / spots / second tone in the part-local frame."""
    second = np.clip(_rgb(ch.colour2) * light, 0, 1).astype(np.float32)
    if ch.pattern == "plain":
        return None
    if ch.pattern == "striped":
        def paint(lx, ly, base):  # vertical bands that follow the body
            on = np.mod(lx * 9.0 + 0.3 * np.sin(ly * 12), 1.0) < 0.38
            return np.where(on[..., None], second, base)
    elif ch.pattern == "spotted":
        def paint(lx, ly, base):  # one jittered round spot per cell
            c = 0.13
            gx, gy = np.floor(lx / c), np.floor(ly / c)
            jx = np.sin(gx * 127.1 + gy * 311.7) * 43758.5453
            jy = np.sin(gx * 269.5 + gy * 183.3) * 43758.5453
            cx = (gx + 0.3 + 0.4 * (jx - np.floor(jx))) * c
            cy = (gy + 0.3 + 0.4 * (jy - np.floor(jy))) * c
            on = (lx - cx) ** 2 + (ly - cy) ** 2 < (0.038) ** 2
            return np.where(on[..., None], second, base)
    else:  # two-tone: the lower part of the body in the second colour
        def paint(lx, ly, base):
            return np.where((ly < two_tone_y)[..., None], second, base)
    return paint


# --- motions: per-frame pose tracks from normalised time t in [0, 1] --------------------------
def _smooth(t, a, b):
    x = np.clip((t - a) / (b - a), 0, 1)
    return x * x * (3 - 2 * x)


def motion_track(motion: str, t: np.ndarray, cam: Camera, gait: str, rng) -> dict:
    """Arrays (F,) for X, Z (metres), lift (local units), facing (x scale), roll (rad), squash,
    leg (swing angle), sit, fall, wave, wave_phase, tail. gait: the species' Template.gait."""
    F = len(t)
    z0 = float(rng.uniform(1.9, 2.7))  # close enough that ears, tails and patterns are visible
    hw = cam.half_width_m(z0)
    face = float(rng.choice([-1.0, 1.0]))
    k = dict(X=np.full(F, rng.uniform(-0.25, 0.25) * hw), Z=np.full(F, z0), lift=np.zeros(F),
             facing=np.full(F, face), roll=np.zeros(F), squash=1 + 0.02 * np.sin(2 * np.pi * 1.5 * t),
             leg=np.zeros(F), sit=np.zeros(F), fall=np.zeros(F), wave=np.zeros(F), wave_phase=np.zeros(F),
             tail=0.15 * np.sin(2 * np.pi * 1.5 * t + rng.uniform(0, 6)))
    steps = float(rng.uniform(2.5, 3.5))  # walk cycles per clip
    if motion in ("walk_left", "walk_right"):
        d = -1.0 if motion == "walk_left" else 1.0
        k["X"] = d * (t - 0.5) * 1.0 * hw
        k["facing"][:] = d
        k["leg"] = 0.45 * np.sin(2 * np.pi * steps * t)
        k["lift"] = 0.02 * np.abs(np.sin(2 * np.pi * steps * t))
    elif motion == "run":
        k["X"] = face * (t - 0.5) * 1.8 * hw
        k["leg"] = 0.85 * np.sin(2 * np.pi * 2 * steps * t)
        k["lift"] = 0.08 * np.abs(np.sin(2 * np.pi * 2 * steps * t))
        k["roll"][:] = -0.12
    elif motion == "jump":
        k["Z"] = np.maximum(k["Z"], 2.4)  # room above the head for the jump
        air = (t - 0.3) / 0.4  # 0..1 while airborne
        k["lift"] = np.where((air > 0) & (air < 1), 4 * air * (1 - air), 0.0) * 0.6
        crouch = np.exp(-((t - 0.25) / 0.06) ** 2) + np.exp(-((t - 0.75) / 0.05) ** 2)
        k["squash"] = 1 - 0.22 * crouch + 0.1 * k["lift"]
        k["leg"] = np.where(k["lift"] > 0, 0.6, 0.0)
        k["X"] = k["X"] + face * 0.15 * hw * _smooth(t, 0.3, 0.7)
    elif motion == "hop":
        hops = 4
        k["lift"] = 0.22 * np.abs(np.sin(np.pi * hops * t))
        k["squash"] = 1 + 0.1 * k["lift"] - 0.12 * np.exp(-(np.sin(np.pi * hops * t) / 0.25) ** 2)
        k["X"] = k["X"] - face * 0.2 * hw + face * 0.4 * hw * t
        k["leg"] = 0.35 * (k["lift"] > 0.05)
    elif motion in ("approach", "walk_away"):
        far, near = float(rng.uniform(5.0, 6.0)), max(cam.min_depth() * 1.2, 1.9)
        s = t if motion == "walk_away" else 1 - t
        k["Z"] = near + (far - near) * s
        x_far = float(rng.uniform(-0.6, 0.6))
        k["X"] = x_far * s
        k["leg"] = 0.45 * np.sin(2 * np.pi * steps * t)
        k["lift"] = 0.02 * np.abs(np.sin(2 * np.pi * steps * t))
    elif motion == "turn_around":
        k["facing"] = face * np.cos(np.pi * _smooth(t, 0.3, 0.7))
    elif motion == "spin":
        k["facing"] = face * np.cos(2 * np.pi * 2 * _smooth(t, 0.1, 0.9))
        k["lift"] = 0.03 * np.abs(np.sin(2 * np.pi * 2 * _smooth(t, 0.1, 0.9)))
    elif motion == "fall_over":
        s = np.clip((t - 0.25) / 0.3, 0, 1)
        bounce = np.where(t > 0.55, 0.08 * np.exp(-(t - 0.55) * 12) * np.sin((t - 0.55) * 40), 0.0)
        if gait == "biped":  # upright bodies topple forward onto their front
            k["roll"] = -(np.pi / 2) * s * s + bounce
        else:  # four-legged / low bodies trip: pitch forward, then land flat with legs splayed
            k["roll"] = -0.45 * np.sin(np.pi * s) + bounce
            k["fall"] = s * s
    elif motion == "sit_down":
        k["sit"] = _smooth(t, 0.25, 0.6)
    elif motion == "wave":
        k["wave"] = _smooth(t, 0.1, 0.3)
        k["wave_phase"] = 2 * np.pi * 3 * t
    return k


# --- rendering --------------------------------------------------------------------------------
def _draw_character(rgb, depth, mask, ground, cam, tmpl, colours, pattern, k, i):
    """Draw frame i's character (and its shadow) into rgb/depth in place."""
    X, Z, fx = k["X"][i], k["Z"][i], k["facing"][i]
    fx = np.sign(fx if fx != 0 else 1.0) * max(abs(fx), 0.12)  # edge-on cards still show a sliver
    s = cam.focal / Z * tmpl.height_m  # pixels per local unit
    x_scr, y_feet = cam.screen_x(X, Z), cam.feet_row(Z)
    # shadow on the ground under the character (does not change depth)
    ys, xs = np.ogrid[0:cam.size, 0:cam.size]
    shadow_r = 0.42 * s / (1 + 2 * k["lift"][i])
    d = ((xs + 0.5 - x_scr) / max(shadow_r, 1)) ** 2 + ((ys + 0.5 - y_feet) / max(0.16 * shadow_r, 0.7)) ** 2
    sh = (d < 1) & ground
    rgb[sh] *= 0.65
    sq = k["squash"][i]
    roll = about((tmpl.front_x, 0.0), R(k["roll"][i]))
    C = T(x_scr, y_feet) @ S(s * fx, -s) @ T(0, k["lift"][i]) @ S(1 / np.sqrt(sq), sq) @ roll
    pose = {key: k[key][i] for key in ("leg", "sit", "fall", "wave", "wave_phase", "tail")}
    mats = pose_matrices(tmpl, pose)
    batch = make_batch(tmpl.parts, [C @ m for m in mats], colours, Z, tmpl.height_m)
    rasterize(rgb, depth, batch, pattern=pattern, mask_out=mask)


def _prepare(spec_char: Character, setting: str, seed: int, size: int):
    cam = Camera(size)
    rng = np.random.default_rng([seed, 7])  # scene stream
    bg_rgb, bg_depth, ground = render_background(setting, cam, rng)
    light = max(SETTING_STYLES[setting]["light"], 0.9)  # characters stay readable at night (street lamps)
    tmpl = build_template(spec_char.species, spec_char.accessory)
    colours = character_colours(spec_char, light)
    pattern = make_pattern(spec_char, tmpl.two_tone_y, light)
    return cam, bg_rgb, bg_depth, ground, tmpl, colours, pattern


def render_clip(spec: ClipSpec) -> ToyClip:
    """Render a clip: rgb (F,H,W,3) uint8, depth (F,H,W) float32, mask, caption, attributes."""
    F, n = spec.num_frames, spec.size
    cam, bg_rgb, bg_depth, ground, tmpl, colours, pattern = _prepare(spec.character, spec.setting, spec.seed, n)
    track = motion_track(spec.motion, np.linspace(0, 1, F), cam, tmpl.gait,
                         np.random.default_rng([spec.seed, 11]))
    rgb = np.empty((F, n, n, 3), np.uint8)  # (F, H, W, 3)
    depth = np.empty((F, n, n), np.float32)  # (F, H, W)
    mask = np.zeros((F, n, n), bool)
    for i in range(F):
        fr, dp = bg_rgb.copy(), bg_depth.copy()
        _draw_character(fr, dp, mask[i], ground, cam, tmpl, colours, pattern, track, i)
        rgb[i] = np.clip(fr * 255 + 0.5, 0, 255).astype(np.uint8)
        depth[i] = dp
    attrs = spec.attributes()
    caption = caption_for(spec)
    return ToyClip(rgb, depth, mask, caption, attrs, spec.fps)


STILL_POSES = ("walk_right", "walk_left", "wave", "sit_down", "hop", "run")  # poses that show the whole body


def render_still(character: Character, setting: str, seed: int, size: int = 128):
    """One frame of the character in a seed-chosen pose: -> (rgb (H,W,3) uint8, depth (H,W) float32)."""
    rng = np.random.default_rng([seed, 13])
    motion = STILL_POSES[int(rng.integers(len(STILL_POSES)))]
    t = float(rng.uniform(0.35, 0.65))
    cam, bg_rgb, bg_depth, ground, tmpl, colours, pattern = _prepare(character, setting, seed, size)
    track = motion_track(motion, np.array([t]), cam, tmpl.gait, np.random.default_rng([seed, 11]))
    mask = np.zeros((size, size), bool)
    _draw_character(bg_rgb, bg_depth, mask, ground, cam, tmpl, colours, pattern, track, 0)
    return np.clip(bg_rgb * 255 + 0.5, 0, 255).astype(np.uint8), bg_depth
