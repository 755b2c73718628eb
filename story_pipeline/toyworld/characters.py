"""Species templates: each species is a list of parts in a local frame (facing +x, feet at y=0,
about 1 unit tall) plus the pivots its animation needs. ``pose_matrices`` turns a pose (leg swing,
sit, wave, ...) into one local->local matrix per part.

Silhouettes are meant to be told apart at 128x128: cat (pointy ears, upright tail), dog (floppy
ears, snout), fox (huge ears, bushy white-tipped tail), rabbit (long ears), bear (big, round ears),
robot (boxes, antenna, visor), bird (small, round, pointed beak), duck (long neck, flat bill),
frog (squat, eyes on top), penguin (upright oval, white belly).
"""

from dataclasses import dataclass, field

import numpy as np

from story_pipeline.toyworld.shapes import BOX, ELLIPSE, TRI, Part, R, S, T, about

FAR_DIM = 0.72  # far-side legs are darker so the four legs read as two pairs


def E(cx, cy, rx, ry, rot=0.0, **kw):
    return Part(ELLIPSE, cx, cy, rx, ry, rot, **kw)


def B(cx, cy, rx, ry, rot=0.0, **kw):
    return Part(BOX, cx, cy, rx, ry, rot, **kw)


def Tr(cx, cy, rx, ry, rot=0.0, **kw):
    return Part(TRI, cx, cy, rx, ry, rot, **kw)


@dataclass
class Template:
    parts: list  # [Part], drawn in order (last on top)
    height_m: float  # metres per local unit (the species' size in the world)
    pivots: dict  # group -> (x, y) rotation centre
    gait: str  # "quad" | "biped" | "low": how legs swing and how it sits
    wave: tuple  # (group, raised angle rad, oscillation amplitude rad)
    head_top: tuple  # (x, y, half width) where a hat sits
    neck: tuple  # (x, y, half width) where a scarf sits
    front_x: float  # local x of the front foot (pivot for falling over)
    two_tone_y: float  # patterned pixels below this local y take colour2 in "two-tone"
    extra: dict = field(default_factory=dict)


def _legs(xs_front, xs_hind, top, width, role="body", patterned=True, foot_role=None):
    """Four legs: far pair (darker, behind) and near pair; returns (far, near)."""
    far, near = [], []
    for x, g in ((xs_hind, "leg_h"), (xs_front, "leg_f")):
        for side, lst, dz, dim in (("f", far, 0.06, FAR_DIM), ("n", near, -0.06, 1.0)):
            dx = 0.04 if side == "f" else 0.0
            lst.append(B(x + dx, top / 2, width, top / 2, role=role, group=g + side, z=dz,
                         patterned=patterned, dim=dim, bulge=width))
            if foot_role:
                lst.append(B(x + dx, 0.035, width * 1.05, 0.035, role=foot_role, group=g + side, z=dz - 0.001,
                             dim=dim))
    return far, near


def cat():
    far, near = _legs(0.26, -0.26, 0.26, 0.045)
    parts = [
        E(-0.52, 0.66, 0.045, 0.26, rot=18, group="tail", patterned=True, bulge=0.04),
        *far,
        E(0.0, 0.42, 0.40, 0.17, patterned=True, bulge=0.15),
        *near,
        Tr(0.33, 0.83, 0.07, 0.10, rot=8, group="head", patterned=True),
        Tr(0.51, 0.83, 0.07, 0.10, rot=-8, group="head", patterned=True),
        Tr(0.33, 0.81, 0.035, 0.06, rot=8, role="pink", group="head"),
        Tr(0.51, 0.81, 0.035, 0.06, rot=-8, role="pink", group="head"),
        E(0.42, 0.64, 0.17, 0.16, group="head", patterned=True, bulge=0.14),
        E(0.49, 0.67, 0.028, 0.04, role="eye", group="head", z=-0.2),
        E(0.585, 0.615, 0.022, 0.016, role="pink", group="head", z=-0.2),
    ]
    return Template(parts, 0.62, {"tail": (-0.40, 0.47), "head": (0.32, 0.55), "leg_hf": (-0.22, 0.26),
                                  "leg_hn": (-0.26, 0.26), "leg_ff": (0.30, 0.26), "leg_fn": (0.26, 0.26)},
                    "quad", ("leg_fn", 2.2, 0.35), (0.42, 0.79, 0.12), (0.30, 0.52, 0.09), 0.32, 0.38)


def dog():
    far, near = _legs(0.27, -0.26, 0.28, 0.055)
    parts = [
        E(-0.45, 0.62, 0.045, 0.15, rot=-35, group="tail", patterned=True, bulge=0.04),
        *far,
        E(0.0, 0.45, 0.40, 0.18, patterned=True, bulge=0.16),
        *near,
        E(0.42, 0.70, 0.16, 0.15, group="head", patterned=True, bulge=0.14),
        E(0.585, 0.655, 0.11, 0.07, role="muzzle", group="head", bulge=0.06),
        E(0.68, 0.68, 0.035, 0.03, role="dark", group="head", z=-0.2),
        E(0.47, 0.74, 0.026, 0.034, role="eye", group="head", z=-0.2),
        E(0.35, 0.66, 0.06, 0.13, rot=-12, role="ear", group="head", z=-0.15),
    ]
    return Template(parts, 0.70, {"tail": (-0.38, 0.52), "head": (0.32, 0.58), "leg_hf": (-0.22, 0.28),
                                  "leg_hn": (-0.26, 0.28), "leg_ff": (0.31, 0.28), "leg_fn": (0.27, 0.28)},
                    "quad", ("leg_fn", 2.2, 0.35), (0.42, 0.85, 0.12), (0.31, 0.55, 0.10), 0.33, 0.40)


def fox():
    far, near = _legs(0.24, -0.24, 0.25, 0.035, foot_role="dark")
    parts = [
        E(-0.58, 0.40, 0.30, 0.12, rot=22, group="tail", patterned=True, bulge=0.08),
        E(-0.82, 0.30, 0.10, 0.075, rot=22, role="light", group="tail", z=-0.01),
        *far,
        E(0.0, 0.41, 0.35, 0.14, patterned=True, bulge=0.12),
        *near,
        Tr(0.34, 0.86, 0.07, 0.14, rot=10, group="head", patterned=True),
        Tr(0.47, 0.86, 0.07, 0.14, rot=-6, group="head", patterned=True),
        Tr(0.35, 0.84, 0.03, 0.08, rot=10, role="dark", group="head"),
        E(0.40, 0.64, 0.14, 0.12, group="head", patterned=True, bulge=0.12),
        Tr(0.56, 0.60, 0.055, 0.12, rot=-96, group="head", patterned=True),
        E(0.44, 0.58, 0.09, 0.05, role="light", group="head", z=-0.1),
        E(0.665, 0.595, 0.022, 0.02, role="dark", group="head", z=-0.2),
        E(0.45, 0.67, 0.024, 0.03, role="eye", group="head", z=-0.2),
    ]
    return Template(parts, 0.62, {"tail": (-0.33, 0.45), "head": (0.30, 0.52), "leg_hf": (-0.20, 0.25),
                                  "leg_hn": (-0.24, 0.25), "leg_ff": (0.28, 0.25), "leg_fn": (0.24, 0.25)},
                    "quad", ("leg_fn", 2.2, 0.35), (0.41, 0.75, 0.11), (0.29, 0.52, 0.08), 0.30, 0.36)


def rabbit():
    parts = [
        E(0.18, 0.04, 0.11, 0.045, group="leg_hf", patterned=True, dim=FAR_DIM, z=0.06),
        E(0.10, 0.10, 0.035, 0.09, group="leg_ff", patterned=True, dim=FAR_DIM, z=0.06),
        E(-0.30, 0.30, 0.075, 0.075, role="light", z=0.02),
        E(-0.04, 0.28, 0.26, 0.23, rot=20, patterned=True, bulge=0.2),
        E(0.06, 0.045, 0.15, 0.05, group="leg_hn", patterned=True, z=-0.05),
        E(0.16, 0.13, 0.04, 0.10, rot=-5, group="leg_fn", patterned=True, z=-0.08),
        E(0.15, 0.83, 0.05, 0.21, rot=12, group="head", patterned=True, dim=0.85),
        E(0.25, 0.82, 0.05, 0.21, rot=-4, group="head", patterned=True),
        E(0.25, 0.82, 0.022, 0.15, rot=-4, role="pink", group="head"),
        E(0.22, 0.52, 0.15, 0.14, group="head", patterned=True, bulge=0.13),
        E(0.27, 0.55, 0.026, 0.034, role="eye", group="head", z=-0.2),
        E(0.365, 0.50, 0.02, 0.016, role="pink", group="head", z=-0.2),
    ]
    return Template(parts, 0.62, {"head": (0.14, 0.42), "leg_hn": (-0.02, 0.12), "leg_hf": (0.10, 0.12),
                                  "leg_fn": (0.15, 0.22), "leg_ff": (0.10, 0.19)},
                    "quad", ("leg_fn", 2.5, 0.35), (0.21, 0.64, 0.11), (0.12, 0.41, 0.10), 0.26, 0.22)


def bear():
    far, near = _legs(0.25, -0.25, 0.24, 0.085)
    parts = [
        E(-0.42, 0.46, 0.05, 0.05, group="tail", patterned=True),
        *far,
        E(0.0, 0.43, 0.42, 0.25, patterned=True, bulge=0.22),
        *near,
        E(0.31, 0.84, 0.06, 0.06, group="head", patterned=True),
        E(0.49, 0.84, 0.06, 0.06, group="head", patterned=True),
        E(0.31, 0.84, 0.03, 0.03, role="muzzle", group="head"),
        E(0.49, 0.84, 0.03, 0.03, role="muzzle", group="head"),
        E(0.40, 0.68, 0.19, 0.18, group="head", patterned=True, bulge=0.16),
        E(0.55, 0.64, 0.08, 0.06, role="muzzle", group="head", bulge=0.05),
        E(0.615, 0.66, 0.03, 0.025, role="dark", group="head", z=-0.2),
        E(0.46, 0.72, 0.024, 0.03, role="eye", group="head", z=-0.2),
    ]
    return Template(parts, 1.0, {"tail": (-0.40, 0.46), "head": (0.30, 0.55), "leg_hf": (-0.21, 0.24),
                                 "leg_hn": (-0.25, 0.24), "leg_ff": (0.29, 0.24), "leg_fn": (0.25, 0.24)},
                    "quad", ("leg_fn", 2.2, 0.35), (0.40, 0.85, 0.13), (0.28, 0.56, 0.12), 0.34, 0.36)


def robot():
    parts = [
        B(0.04, 0.42, 0.045, 0.15, role="metal", group="arm_f", dim=FAR_DIM, z=0.08),
        B(0.05, 0.14, 0.05, 0.14, role="metal", group="leg_f", dim=FAR_DIM, z=0.06),
        B(-0.03, 0.14, 0.05, 0.14, role="metal", group="leg_n", z=-0.06),
        B(0.0, 0.43, 0.19, 0.16, patterned=True, bulge=0.1),
        B(0.03, 0.47, 0.06, 0.05, role="visor", z=-0.12),
        B(0.0, 0.615, 0.04, 0.03, role="metal"),
        B(0.0, 0.89, 0.012, 0.07, role="metal", group="head"),
        E(0.0, 0.965, 0.04, 0.04, role="bulb", group="head"),
        B(0.0, 0.74, 0.16, 0.12, group="head", patterned=True, bulge=0.1),
        B(0.07, 0.75, 0.08, 0.035, role="visor", group="head", z=-0.12),
        E(-0.14, 0.75, 0.025, 0.04, role="metal", group="head", z=-0.12),
        B(-0.03, 0.41, 0.045, 0.15, role="metal", group="arm_n", z=-0.14),
        E(-0.03, 0.25, 0.06, 0.05, role="bulb", group="arm_n", z=-0.15),
    ]
    return Template(parts, 0.95, {"head": (0.0, 0.62), "leg_n": (-0.03, 0.27), "leg_f": (0.05, 0.27),
                                  "arm_n": (-0.03, 0.54), "arm_f": (0.04, 0.54)},
                    "biped", ("arm_n", 2.0, 0.5), (0.0, 0.86, 0.12), (0.0, 0.60, 0.13), 0.17, 0.43)


def bird():
    parts = [
        B(-0.04, 0.11, 0.014, 0.11, role="beak", group="leg_f", dim=FAR_DIM, z=0.05),
        B(0.05, 0.11, 0.014, 0.11, role="beak", group="leg_n", z=-0.05),
        Tr(-0.34, 0.36, 0.09, 0.16, rot=115, patterned=True, dim=0.85),
        E(0.0, 0.44, 0.28, 0.24, rot=15, patterned=True, bulge=0.22),
        E(0.06, 0.38, 0.16, 0.13, role="light", z=-0.05, bulge=0.1),
        E(0.24, 0.70, 0.16, 0.155, group="head", patterned=True, bulge=0.14),
        Tr(0.45, 0.69, 0.045, 0.10, rot=-90, role="beak", group="head", z=-0.1),
        E(0.29, 0.74, 0.03, 0.035, role="eye", group="head", z=-0.2),
        E(-0.06, 0.47, 0.19, 0.11, rot=18, group="wing_n", patterned=True, dim=0.8, z=-0.12),
    ]
    return Template(parts, 0.6, {"head": (0.18, 0.58), "leg_n": (0.05, 0.22), "leg_f": (-0.04, 0.22),
                                 "wing_n": (0.08, 0.52)},
                    "low", ("wing_n", -1.3, 0.6), (0.24, 0.85, 0.11), (0.16, 0.56, 0.10), 0.0, 0.42)


def duck():
    parts = [
        B(-0.02, 0.09, 0.015, 0.09, role="beak", group="leg_f", dim=FAR_DIM, z=0.05),
        E(0.02, 0.015, 0.07, 0.025, role="beak", group="leg_f", dim=FAR_DIM, z=0.05),
        Tr(-0.38, 0.40, 0.07, 0.12, rot=62, patterned=True),
        E(-0.05, 0.30, 0.35, 0.17, patterned=True, bulge=0.16),
        B(0.20, 0.51, 0.055, 0.14, rot=-8, patterned=True, group="head"),
        E(0.23, 0.71, 0.12, 0.115, group="head", patterned=True, bulge=0.1),
        E(0.38, 0.675, 0.12, 0.04, role="beak", group="head", z=-0.1),
        E(0.27, 0.74, 0.024, 0.03, role="eye", group="head", z=-0.2),
        E(-0.08, 0.33, 0.21, 0.095, rot=8, group="wing_n", patterned=True, dim=0.82, z=-0.12),
        B(0.06, 0.09, 0.015, 0.09, role="beak", group="leg_n", z=-0.05),
        E(0.10, 0.015, 0.07, 0.025, role="beak", group="leg_n", z=-0.05),
    ]
    return Template(parts, 0.62, {"head": (0.18, 0.40), "leg_n": (0.06, 0.17), "leg_f": (-0.02, 0.17),
                                  "wing_n": (0.08, 0.36)},
                    "low", ("wing_n", -1.3, 0.6), (0.23, 0.83, 0.1), (0.20, 0.50, 0.08), 0.1, 0.30)


def frog():
    parts = [
        E(-0.22, 0.14, 0.17, 0.11, rot=25, group="leg_hf", patterned=True, dim=FAR_DIM, z=0.06),
        E(0.0, 0.24, 0.34, 0.19, rot=12, patterned=True, bulge=0.18),
        E(0.06, 0.16, 0.22, 0.09, role="light", z=-0.05),
        E(0.25, 0.50, 0.09, 0.09, group="head", patterned=True),
        E(0.27, 0.52, 0.06, 0.06, role="white", group="head", z=-0.05),
        E(0.29, 0.52, 0.03, 0.04, role="eye", group="head", z=-0.1),
        E(0.22, 0.34, 0.17, 0.13, group="head", patterned=True, bulge=0.1),
        B(0.29, 0.30, 0.09, 0.007, rot=-8, role="dark", group="head", z=-0.12),
        E(-0.20, 0.12, 0.19, 0.11, rot=25, group="leg_hn", patterned=True, z=-0.1),
        E(-0.06, 0.025, 0.16, 0.03, group="leg_hn", patterned=True, z=-0.1),
        B(0.22, 0.09, 0.03, 0.09, rot=-10, group="leg_fn", patterned=True, z=-0.1),
    ]
    return Template(parts, 0.62, {"head": (0.12, 0.30), "leg_hn": (-0.12, 0.18), "leg_hf": (-0.14, 0.18),
                                  "leg_fn": (0.21, 0.18), "leg_ff": (0.21, 0.18)},
                    "low", ("leg_fn", 2.5, 0.35), (0.24, 0.57, 0.08), (0.20, 0.25, 0.01), 0.3, 0.2)


def penguin():
    parts = [
        E(0.0, 0.02, 0.09, 0.03, role="beak", group="leg_f", dim=FAR_DIM, z=0.05),
        E(0.0, 0.43, 0.22, 0.38, patterned=True, bulge=0.2),
        E(0.07, 0.40, 0.14, 0.30, role="white", z=-0.05, bulge=0.15),
        E(0.03, 0.82, 0.15, 0.14, group="head", patterned=True, bulge=0.13),
        E(0.09, 0.80, 0.06, 0.07, role="white", group="head", z=-0.1),
        Tr(0.20, 0.79, 0.035, 0.07, rot=-90, role="beak", group="head", z=-0.15),
        E(0.10, 0.83, 0.022, 0.028, role="eye", group="head", z=-0.2),
        E(-0.06, 0.46, 0.055, 0.21, rot=-10, group="arm_n", patterned=True, dim=0.85, z=-0.14),
        E(0.06, 0.02, 0.09, 0.03, role="beak", group="leg_n", z=-0.05),
    ]
    return Template(parts, 0.8, {"head": (0.02, 0.70), "leg_n": (0.04, 0.06), "leg_f": (0.0, 0.06),
                                 "arm_n": (-0.04, 0.64)},
                    "biped", ("arm_n", 2.0, 0.5), (0.03, 0.95, 0.11), (0.03, 0.70, 0.12), 0.2, 0.42)


TEMPLATES = {"cat": cat, "dog": dog, "fox": fox, "rabbit": rabbit, "bear": bear, "robot": robot,
             "bird": bird, "duck": duck, "frog": frog, "penguin": penguin}


def build_template(species: str, accessory: str) -> Template:
    """Species parts plus the accessory (drawn on the head or neck, coloured colour2)."""
    t = TEMPLATES[species]()
    if accessory == "hat":
        x, y, w = t.head_top
        t.parts += [B(x, y + 0.1, w * 0.8, 0.1, role="acc", group="head", z=-0.25),
                    B(x, y + 0.04, w * 0.8, 0.025, role="hatband", group="head", z=-0.26),
                    B(x, y + 0.008, w * 1.35, 0.022, role="acc", group="head", z=-0.26)]
    elif accessory == "scarf":
        x, y, w = t.neck
        t.parts += [B(x, y, max(w, 0.06) * 1.1, 0.035, rot=-10, role="acc", group="body", z=-0.25, bulge=0.05),
                    B(x - 0.03, y - 0.08, 0.025, 0.07, rot=-8, role="acc", group="body", z=-0.26)]
    return t


def pose_matrices(t: Template, pose: dict) -> list:
    """One local->local (3,3) matrix per part for a pose.

    pose keys: leg (swing angle rad, signed), sit (0..1), fall (0..1, animals that fall flat),
    wave (0..1 raised), wave_phase (rad), tail (rad), head (rad).
    """
    swing, sit = pose.get("leg", 0.0), pose.get("sit", 0.0)
    group_m = {}
    for g, sign in (("leg_fn", 1), ("leg_ff", -1), ("leg_hn", -1), ("leg_hf", 1), ("leg_n", 1), ("leg_f", -1),
                    ("arm_n", -1), ("arm_f", 1)):
        if g in t.pivots:
            group_m[g] = about(t.pivots[g], R(sign * swing * (0.6 if g.startswith("arm") else 1.0)))
    if "wing_n" in t.pivots:
        group_m["wing_n"] = about(t.pivots["wing_n"], R(-0.25 * abs(swing)))
    if "tail" in t.pivots:
        group_m["tail"] = about(t.pivots["tail"], R(pose.get("tail", 0.0)))
    group_m["head"] = about(t.pivots["head"], R(pose.get("head", 0.0)))
    # wave: one limb goes up and swings back and forth
    wave = pose.get("wave", 0.0)
    if wave > 0:
        g, raised, amp = t.wave
        ang = wave * (raised + amp * np.sin(pose.get("wave_phase", 0.0)))
        group_m[g] = about(t.pivots[g], R(ang))
    # sit: quadrupeds tilt the body back about the front shoulder and fold the hind legs;
    # bipeds drop the body and swing the legs forward; low animals crouch
    upper = np.eye(3)
    fall = pose.get("fall", 0.0)
    if fall > 0 and t.gait != "biped":
        # four-legged fall: belly flat on the ground, legs splayed forward and back
        leg_top = max(t.pivots.get("leg_fn", (0, 0.2))[1], t.pivots.get("leg_hn", (0, 0.2))[1])
        upper = T(0, -0.8 * leg_top * fall)
        for g, sign in (("leg_fn", 1), ("leg_ff", 1), ("leg_hn", -1), ("leg_hf", -1)):
            if g in t.pivots:
                group_m[g] = upper @ about(t.pivots[g], R(sign * 1.3 * fall))
    elif sit > 0:
        if t.gait == "quad":
            sh = t.pivots["leg_fn"]
            th = 0.5 * sit
            upper = about(sh, R(th))
            group_m["head"] = upper @ about(t.pivots["head"], R(-th)) @ group_m["head"]
            for g in ("leg_hn", "leg_hf"):
                if g in t.pivots:
                    foot = (t.pivots[g][0], 0.0)
                    group_m[g] = about(foot, S(1.0, 1 - 0.85 * sit)) @ group_m.get(g, np.eye(3))
        elif t.gait == "biped":  # drop onto the bottom, lean back a little, legs forward
            leg_top = t.pivots["leg_n"][1]
            hip = (0.0, leg_top)
            upper = T(0, -0.75 * leg_top * sit) @ about(hip, R(0.3 * sit) @ S(1 + 0.1 * sit, 1 - 0.2 * sit))
            for g in ("leg_n", "leg_f"):
                group_m[g] = upper @ about(t.pivots[g], R(1.4 * sit))
        else:
            upper = about((0.0, 0.0), S(1 + 0.08 * sit, 1 - 0.18 * sit))
    mats = []
    for p in t.parts:
        g = p.group
        if fall > 0 and t.gait != "biped":
            mats.append(group_m[g] if g.startswith("leg_") and g in group_m else upper @ group_m.get(g, np.eye(3)))
            continue
        if g in ("leg_fn", "leg_ff", "leg_f", "leg_n"):
            m = group_m.get(g, np.eye(3))
            if t.gait != "quad" and sit > 0 and g in ("leg_n", "leg_f"):
                mats.append(m)
                continue
            if t.gait == "low" and sit > 0:
                m = upper @ m
        elif g in ("leg_hn", "leg_hf"):
            m = group_m.get(g, np.eye(3))
            if t.gait == "low" and sit > 0:
                m = upper @ m
        elif g == "head" and sit > 0 and t.gait == "quad":
            m = group_m["head"]
        else:
            m = upper @ group_m.get(g, np.eye(3))
        mats.append(m)
    return mats
