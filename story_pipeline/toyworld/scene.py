"""Static background of a clip: pinhole camera, sky, textured ground plane and props per setting.

Depth is metric z (distance along the optical axis). The ground is the plane y = -camera height:
row r below the horizon sees it at z = focal * height / (r - horizon), so depth grows toward the
horizon; the sky is at FAR.
"""

from dataclasses import dataclass

import numpy as np

from story_pipeline.toyworld.characters import B, E, Tr
from story_pipeline.toyworld.shapes import make_batch, rasterize, S, T

FAR = 40.0  # metres: sky and the far ground are clamped here


@dataclass(frozen=True)
class Camera:
    size: int  # square image side in pixels
    height: float = 0.8  # metres above the ground: low, like a toy-world camera at character height
    fov_scale: float = 1.2  # focal length in image widths (~45 degree field of view)
    horizon_frac: float = 0.40  # horizon row as a fraction of the height (camera looks level)

    @property
    def focal(self) -> float:
        return self.fov_scale * self.size

    @property
    def horizon(self) -> float:
        return self.horizon_frac * self.size

    def feet_row(self, z):
        """Image row of a ground point at depth z."""
        return self.horizon + self.focal * self.height / z

    def screen_x(self, x, z):
        return self.size / 2 + self.focal * x / z

    def half_width_m(self, z):
        """Half the visible ground width (metres) at depth z."""
        return (self.size / 2) * z / self.focal

    def min_depth(self):
        """Nearest depth whose ground point is still inside the image."""
        return self.focal * self.height / (self.size - self.horizon)


# Per setting: sky top / horizon colours, ground near / far colours, texture, light level, props.
SETTING_STYLES = {
    "meadow": dict(sky=((90, 150, 235), (190, 220, 250)), ground=((80, 165, 60), (120, 180, 90)),
                   texture="flowers", light=1.0, props=("tree", "tree", "rock", "fence", "house", "bush")),
    "snowy_field": dict(sky=((150, 170, 200), (220, 228, 238)), ground=((238, 242, 250), (205, 215, 232)),
                        texture="snow", light=1.0, props=("snowpine", "snowpine", "snowman", "snowpine", "fence")),
    "desert": dict(sky=((120, 170, 230), (240, 220, 180)), ground=((225, 190, 120), (210, 170, 110)),
                   texture="ripples", light=1.05, props=("cactus", "cactus", "redrock", "cactus", "redrock")),
    "beach": dict(sky=((60, 150, 240), (170, 215, 245)), ground=((240, 215, 160), (230, 205, 150)),
                  texture="beach", light=1.05, props=("palm", "umbrella", "palm", "rock")),
    "night_street": dict(sky=((10, 12, 35), (40, 45, 80)), ground=((70, 70, 78), (45, 45, 55)),
                         texture="street", light=0.7, props=("building", "building", "lamp", "lamp", "building")),
    "forest": dict(sky=((110, 160, 200), (180, 210, 200)), ground=((70, 95, 45), (55, 80, 40)),
                   texture="litter", light=0.9, props=("pine", "tree", "pine", "pine", "tree", "pine", "bush")),
    "autumn_park": dict(sky=((120, 160, 215), (230, 210, 190)), ground=((150, 120, 60), (175, 130, 70)),
                        texture="leaves", light=1.0, props=("autumntree", "autumntree", "bench", "autumntree", "fence")),
}


def _hash(a, b, salt=0.0):
    """Deterministic pseudo-random value in [0,1) per integer cell (vectorised)."""
    x = np.sin(a * 127.1 + b * 311.7 + salt * 74.7) * 43758.5453
    return x - np.floor(x)


def _sky(cam: Camera, style, rng):
    n = cam.size
    rows = np.arange(n, dtype=np.float32)[:, None, None] + 0.5
    t = np.clip(rows / max(cam.horizon, 1), 0, 1)
    top, hor = (np.array(c, np.float32) / 255 for c in style["sky"])
    sky = np.broadcast_to(top * (1 - t) + hor * t, (n, n, 3)).copy()
    ys, xs = np.mgrid[0:n, 0:n].astype(np.float32) + 0.5
    if style["light"] < 0.8:  # night: stars and a moon
        stars = (_hash(np.floor(xs), np.floor(ys), rng.uniform(0, 9)) > 0.992) & (ys < cam.horizon * 0.9)
        sky[stars] = 0.9
        mx, my, mr = rng.uniform(0.15, 0.85) * n, rng.uniform(0.08, 0.22) * n, 0.06 * n
        sky[(xs - mx) ** 2 + (ys - my) ** 2 < mr * mr] = (0.95, 0.93, 0.8)
    else:  # day: a few soft clouds
        for _ in range(rng.integers(1, 4)):
            cx, cy = rng.uniform(0, 1) * n, rng.uniform(0.05, 0.3) * n
            rx, ry = rng.uniform(0.08, 0.18) * n, rng.uniform(0.025, 0.05) * n
            d = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2
            a = np.clip(1.3 - d, 0, 1)[..., None] * 0.85
            sky = sky * (1 - a) + a * 0.98
    return sky


def _ground(cam: Camera, style, setting, rng):
    """Ground colour and depth for rows below the horizon; also world X, Z of each pixel."""
    n = cam.size
    ys, xs = np.mgrid[0:n, 0:n].astype(np.float32) + 0.5
    below = ys > cam.horizon + 0.5
    z = np.where(below, cam.focal * cam.height / np.maximum(ys - cam.horizon, 1e-3), FAR)
    z = np.minimum(z, FAR).astype(np.float32)
    X = (xs - n / 2) * z / cam.focal  # world x of the ground point
    near, far = (np.array(c, np.float32) / 255 for c in style["ground"])
    w = np.clip((z - 2) / 18, 0, 1)[..., None]
    col = near * (1 - w) + far * w
    tex, off = style["texture"], rng.uniform(0, 100)
    cell = _hash(np.floor(X * 5 + off), np.floor(z * 5))  # perspective-correct noise: coarse near, fine far
    col = col * (0.92 + 0.1 * cell)[..., None]
    if tex == "flowers":
        f = _hash(np.floor(X * 9 + off), np.floor(z * 9), 1.0) > 0.97
        col[f] = np.array([(1.0, 0.95, 0.3), (1.0, 0.5, 0.7), (0.95, 0.95, 0.95)])[
            (_hash(np.floor(X * 9), np.floor(z * 9), 2.0)[f] * 3).astype(int)]
    elif tex == "ripples":
        col = col * (0.95 + 0.05 * np.sin(z * 6 + np.sin(X * 1.5) * 2))[..., None]
    elif tex == "snow":
        col = np.where((_hash(np.floor(X * 12 + off), np.floor(z * 12)) > 0.985)[..., None], 1.0, col)
    elif tex == "leaves":
        h = _hash(np.floor(X * 7 + off), np.floor(z * 7), 3.0)
        leaf = np.array([(0.85, 0.35, 0.1), (0.9, 0.6, 0.15), (0.6, 0.2, 0.1)])
        col = np.where((h > 0.75)[..., None], leaf[(h * 7 % 3).astype(int)], col)
    elif tex == "litter":
        col = np.where((_hash(np.floor(X * 8 + off), np.floor(z * 8), 4.0) > 0.8)[..., None], (0.35, 0.27, 0.15), col)
    elif tex == "beach":  # sand near, sea far, a foam line between
        sea_z = rng.uniform(7, 11)
        wave = 0.9 + 0.1 * np.sin(z * 4 + X * 0.8)
        sea = np.stack([0.15 * wave, 0.45 * wave, 0.7 * wave], -1)
        col = np.where((z > sea_z)[..., None], sea, col)
        col = np.where((np.abs(z - sea_z - 0.25 * np.sin(X * 2)) < 0.35)[..., None], (0.97, 0.97, 0.95), col)
    elif tex == "street":  # dashed centre line and a kerb running toward the horizon
        line_x = rng.uniform(-1.8, -0.8)
        dash = (np.abs(X - line_x) < 0.06) & (np.floor(z / 1.5) % 2 == 0)
        col = np.where(dash[..., None], (0.85, 0.8, 0.45), col)
        kerb_x = rng.uniform(1.5, 2.5)
        col = np.where((X > kerb_x)[..., None], (0.42, 0.42, 0.46), col)
    # haze toward the horizon (aerial perspective)
    hor = np.array(style["sky"][1], np.float32) / 255
    haze = (1 - np.exp(-z / 30))[..., None] * 0.7
    col = col * (1 - haze) + hor * haze
    return col.astype(np.float32), z, below


def _prop_parts(kind, rng):
    """(parts, colours, height_m) for one prop, local frame: base at y=0, about 1 unit tall."""
    leaf = np.array(rng.choice([(0.25, 0.55, 0.2), (0.3, 0.62, 0.25), (0.2, 0.48, 0.2)]))
    c = {"trunk": (0.45, 0.3, 0.18), "leaf": leaf, "dark": (0.15, 0.15, 0.15), "white": (0.97, 0.97, 1.0)}
    if kind in ("tree", "autumntree"):
        if kind == "autumntree":
            c["leaf"] = np.array(rng.choice([(0.85, 0.45, 0.1), (0.8, 0.25, 0.1), (0.9, 0.7, 0.2)]))
        parts = [B(0, 0.25, 0.05, 0.25, role="trunk"),
                 E(-0.16, 0.6, 0.22, 0.2, role="leaf", bulge=0.2), E(0.17, 0.62, 0.22, 0.2, role="leaf", bulge=0.2),
                 E(0.0, 0.76, 0.3, 0.24, role="leaf", bulge=0.25)]
        return parts, c, rng.uniform(2.5, 4.0)
    if kind in ("pine", "snowpine"):
        c["leaf"] = np.array((0.12, 0.38, 0.2))
        parts = [B(0, 0.1, 0.04, 0.1, role="trunk")]
        for i, (y, w) in enumerate(((0.3, 0.32), (0.52, 0.25), (0.72, 0.18))):
            parts.append(Tr(0, y, w, 0.18, role="leaf", bulge=0.1))
            if kind == "snowpine":
                parts.append(Tr(0, y + 0.09, w * 0.5, 0.09, role="white"))
        return parts, c, rng.uniform(3.0, 5.0)
    if kind in ("rock", "redrock"):
        c["rock"] = (0.55, 0.55, 0.55) if kind == "rock" else (0.7, 0.4, 0.25)
        return [E(0, 0.3, 0.6, 0.35, role="rock", bulge=0.4, shade=0.9)], c, rng.uniform(0.4, 1.0)
    if kind == "bush":
        return [E(-0.3, 0.35, 0.4, 0.35, role="leaf", bulge=0.3), E(0.25, 0.4, 0.45, 0.4, role="leaf", bulge=0.3)], \
            c, rng.uniform(0.6, 1.0)
    if kind == "house":
        c.update(wall=rng.choice([(0.9, 0.85, 0.7), (0.85, 0.6, 0.5), (0.75, 0.8, 0.9)]), roof=(0.6, 0.2, 0.15),
                 win=(0.6, 0.8, 0.95))
        parts = [B(0, 0.35, 0.45, 0.35, role="wall", shade=0.2), Tr(0, 0.85, 0.55, 0.15, role="roof", shade=0.2),
                 B(0.15, 0.15, 0.09, 0.15, role="trunk"), B(-0.2, 0.42, 0.1, 0.08, role="win")]
        return parts, c, rng.uniform(2.5, 3.5)
    if kind == "fence":
        c["wood"] = (0.75, 0.6, 0.4)
        parts = [B(0, 0.6, 1.6, 0.05, role="wood"), B(0, 0.3, 1.6, 0.05, role="wood")]
        parts += [B(x, 0.4, 0.05, 0.4, role="wood") for x in np.linspace(-1.55, 1.55, 7)]
        return parts, c, rng.uniform(0.8, 1.1)
    if kind == "cactus":
        c["leaf"] = (0.25, 0.55, 0.3)
        parts = [E(0, 0.5, 0.12, 0.5, role="leaf", bulge=0.1), E(-0.2, 0.55, 0.07, 0.18, role="leaf"),
                 B(-0.11, 0.4, 0.1, 0.05, role="leaf"), E(0.2, 0.65, 0.07, 0.15, role="leaf"),
                 B(0.11, 0.52, 0.1, 0.05, role="leaf")]
        return parts, c, rng.uniform(1.2, 2.2)
    if kind == "palm":
        c["leaf"] = (0.2, 0.6, 0.25)
        lean = rng.uniform(-10, 10)
        parts = [B(0.05, 0.4, 0.035, 0.42, rot=lean, role="trunk")]
        parts += [E(0.05 + 0.2 * np.cos(a), 0.82 + 0.08 * np.sin(a), 0.24, 0.05, rot=np.rad2deg(a) * 0.5,
                    role="leaf") for a in np.linspace(-0.6, 3.7, 6)]
        return parts, c, rng.uniform(3.0, 4.5)
    if kind == "umbrella":
        c["canopy"] = rng.choice([(0.9, 0.2, 0.2), (0.2, 0.4, 0.9), (0.95, 0.75, 0.1)])
        return [B(0, 0.45, 0.02, 0.45, role="white"), Tr(0, 0.95, 0.6, 0.15, role="canopy")], c, rng.uniform(1.8, 2.2)
    if kind == "snowman":
        c["nose"] = (0.95, 0.5, 0.1)
        return [E(0, 0.2, 0.22, 0.2, role="white", bulge=0.2, shade=0.4),
                E(0, 0.52, 0.16, 0.15, role="white", bulge=0.15, shade=0.4),
                E(0, 0.77, 0.11, 0.11, role="white", bulge=0.1, shade=0.4),
                E(0.04, 0.8, 0.015, 0.015, role="dark"), Tr(0.1, 0.76, 0.015, 0.06, rot=-90, role="nose")], \
            c, rng.uniform(1.0, 1.4)
    if kind == "building":
        c.update(wall=rng.choice([(0.25, 0.22, 0.3), (0.3, 0.25, 0.22), (0.2, 0.25, 0.3)]), win=(1.0, 0.85, 0.4),
                 off=(0.12, 0.12, 0.18))
        parts = [B(0, 0.5, 0.5, 0.5, role="wall", shade=0.1)]
        for i in range(3):
            for j in range(4):
                role = "win" if rng.uniform() < 0.55 else "off"
                parts.append(B(-0.3 + 0.3 * i, 0.2 + 0.2 * j, 0.07, 0.06, role=role, shade=0.0))
        return parts, c, rng.uniform(5.0, 8.0)
    if kind == "lamp":
        c.update(pole=(0.25, 0.25, 0.28), glow=(1.0, 0.95, 0.6))
        return [B(0, 0.47, 0.02, 0.47, role="pole"), B(0.05, 0.93, 0.07, 0.012, role="pole"),
                E(0.1, 0.9, 0.05, 0.04, role="glow", shade=0.0)], c, rng.uniform(3.0, 3.6)
    if kind == "bench":
        c["wood"] = (0.55, 0.35, 0.2)
        return [B(-0.4, 0.2, 0.04, 0.2, role="dark"), B(0.4, 0.2, 0.04, 0.2, role="dark"),
                B(0, 0.42, 0.55, 0.04, role="wood"), B(0, 0.65, 0.55, 0.05, role="wood")], c, rng.uniform(0.8, 1.0)
    raise ValueError(f"unknown prop {kind!r}")


def render_background(setting: str, cam: Camera, rng):
    """-> rgb (H,W,3) float32 0..1, depth (H,W) float32 metres, ground mask (H,W) bool."""
    style = SETTING_STYLES[setting]
    rgb = _sky(cam, style, rng)
    gcol, gz, below = _ground(cam, style, setting, rng)
    rgb = np.where(below[..., None], gcol, rgb).astype(np.float32)
    depth = np.where(below, gz, FAR).astype(np.float32)
    # props at varying depths, mostly behind the stage where characters act (z ~ 2-4 m)
    kinds = list(style["props"])
    rng.shuffle(kinds)
    n_props = int(rng.integers(3, len(kinds) + 1))
    placed = []
    for i, kind in enumerate(kinds[:n_props]):
        z = {"fence": (4.0, 9.0), "bench": (4.0, 8.0), "rock": (4.0, 9.0), "redrock": (4.0, 9.0),
             "building": (12.0, 22.0)}.get(kind, (4.5, 16.0))
        z = float(rng.uniform(*z))
        hw = cam.half_width_m(z)
        x = float(rng.uniform(-1.1, 1.1) * hw)
        placed.append((z, x, kind))
    light = style["light"]
    for z, x, kind in sorted(placed, reverse=True):  # far to near (the z-buffer would also do it)
        parts, colours, height = _prop_parts(kind, rng)
        colours = {k: np.clip(np.asarray(v, float) * (light if k not in ("glow", "win") else 1.0), 0, 1)
                   for k, v in colours.items()}
        scale = cam.focal / z * height  # pixels per local unit
        M = T(cam.screen_x(x, z), cam.feet_row(z)) @ S(scale, -scale)
        batch = make_batch(parts, [M] * len(parts), colours, z, min(height, 1.5))  # bulge capped
        rasterize(rgb, depth, batch, outline=0.8)
    ground = below & (depth >= gz - 1e-4)
    return rgb, depth, ground
