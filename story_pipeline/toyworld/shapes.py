"""Vectorised 2.5-D rasteriser: objects made of ellipses, boxes and triangles with a z-buffer.

An object (a character or a prop) is a list of parts. Each part is a unit shape (unit circle,
unit square [-1,1]^2, or the triangle with apex (0,1) and base y=-1) mapped to the screen by a
3x3 affine matrix. All parts of an object are rasterised at once over the object's bounding box:
inside one object the last part wins (painter's order, like a cut-out), between objects the
z-buffer decides. Ellipses bulge toward the camera (depth = z - bulge * sqrt(1 - r^2)) so the
ground-truth depth is round like a body, not a flat card.
"""

from dataclasses import dataclass

import numpy as np

ELLIPSE, BOX, TRI = 0, 1, 2
LIGHT = np.array([-0.35, 0.55, 0.76]) / np.linalg.norm([-0.35, 0.55, 0.76])  # from upper left, toward camera


@dataclass
class Part:
    kind: int  # ELLIPSE, BOX or TRI
    cx: float  # centre in the object's local frame (y up, feet/base at y=0)
    cy: float
    rx: float  # half extents
    ry: float
    rot: float = 0.0  # degrees, counter-clockwise
    role: str = "body"  # colour role resolved by the owner (body, dark, light, beak, acc, ...)
    group: str = "body"  # animation group (legs swing, head counter-rotates, ...)
    z: float = 0.0  # depth offset in local units (negative = nearer the camera)
    bulge: float = 0.0  # how far the middle of the part pokes toward the camera (local units)
    patterned: bool = False  # stripes / spots / second tone apply to this part
    dim: float = 1.0  # brightness multiplier (far legs are darker)
    shade: float = 0.6  # strength of the lambert shading


# --- 3x3 affine helpers (column vectors, y up in local frames) ---------------------------------
def T(tx, ty):
    return np.array([[1.0, 0, tx], [0, 1.0, ty], [0, 0, 1.0]])


def R(theta):
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def S(sx, sy):
    return np.array([[sx, 0, 0], [0, sy, 0], [0, 0, 1.0]])


def about(pivot, M):
    """Apply M around a pivot point."""
    return T(*pivot) @ M @ T(-pivot[0], -pivot[1])


def unit_to_local(p: Part) -> np.ndarray:
    return T(p.cx, p.cy) @ R(np.deg2rad(p.rot)) @ S(p.rx, p.ry)


@dataclass
class Batch:
    """Parts of one object, ready to rasterise (P parts)."""

    kind: np.ndarray  # (P,) int
    to_screen: np.ndarray  # (P, 3, 3) unit -> screen pixels (x right, y down)
    to_local: np.ndarray  # (P, 3, 3) unit -> part-local frame (for patterns that stick to the body)
    colour: np.ndarray  # (P, 3) float 0..1
    z: np.ndarray  # (P,) metres
    bulge: np.ndarray  # (P,) metres
    patterned: np.ndarray  # (P,) bool
    shade: np.ndarray  # (P,) float


def rasterize(rgb, depth, batch: Batch, pattern=None, outline=0.55, mask_out=None):
    """Draw one object into rgb (H,W,3 float) / depth (H,W) in place, z-tested.

    pattern: optional callable (lx, ly, base_rgb (h,w,3)) -> rgb, applied on patterned parts.
    mask_out: optional (H,W) bool array set True where the object is visible.
    """
    H, W = depth.shape
    P = len(batch.kind)
    # 1. bounding box of all parts on screen
    corners = np.array([[-1, -1, 1], [1, -1, 1], [-1, 1, 1], [1, 1, 1]], float).T  # (3, 4)
    pts = batch.to_screen @ corners  # (P, 3, 4)
    x0, x1 = int(max(np.floor(pts[:, 0].min()), 0)), int(min(np.ceil(pts[:, 0].max()), W))
    y0, y1 = int(max(np.floor(pts[:, 1].min()), 0)), int(min(np.ceil(pts[:, 1].max()), H))
    if x1 <= x0 or y1 <= y0:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5  # (h, w) pixel centres
    # 2. every pixel in every part's unit frame
    inv = np.linalg.inv(batch.to_screen).astype(np.float32)  # (P, 3, 3)
    u = inv[:, 0, 0, None, None] * xs + inv[:, 0, 1, None, None] * ys + inv[:, 0, 2, None, None]  # (P, h, w)
    v = inv[:, 1, 0, None, None] * xs + inv[:, 1, 1, None, None] * ys + inv[:, 1, 2, None, None]
    kind = batch.kind[:, None, None]
    inside = np.where(
        kind == ELLIPSE, u * u + v * v <= 1.0,
        np.where(kind == BOX, (np.abs(u) <= 1) & (np.abs(v) <= 1),
                 (v >= -1) & (v <= 1) & (np.abs(u) <= (1 - v) * 0.5)),
    )
    hit = inside.any(0)  # (h, w)
    if not hit.any():
        return
    # 3. painter's order inside the object: the last covering part wins
    idx = (P - 1 - inside[::-1].argmax(0))[None]  # (1, h, w)
    uw = np.take_along_axis(u, idx, 0)[0]
    vw = np.take_along_axis(v, idx, 0)[0]
    idx = idx[0]
    kw = batch.kind[idx]
    nz = np.where(kw == ELLIPSE, np.sqrt(np.clip(1 - uw * uw - vw * vw, 0, 1)), 0.6)
    # lambert on the ellipsoid normal; boxes/triangles get a soft vertical gradient
    lam = np.where(kw == ELLIPSE, np.clip(uw * LIGHT[0] + vw * LIGHT[1] + nz * LIGHT[2], 0, 1),
                   0.75 + 0.2 * np.clip(vw, -1, 1))
    shade = 1 - batch.shade[idx] * (1 - (0.45 + 0.55 * lam))
    col = batch.colour[idx]  # (h, w, 3)
    if pattern is not None and batch.patterned.any():
        L = batch.to_local[idx]  # (h, w, 3, 3)
        lx = L[..., 0, 0] * uw + L[..., 0, 1] * vw + L[..., 0, 2]
        ly = L[..., 1, 0] * uw + L[..., 1, 1] * vw + L[..., 1, 2]
        col = np.where(batch.patterned[idx][..., None], pattern(lx, ly, col), col)
    col = col * shade[..., None]
    z = batch.z[idx] - batch.bulge[idx] * np.where(kw == ELLIPSE, nz, 0.5)
    # 4. cartoon outline: darken silhouette edges and edges between parts
    if outline:
        edge = np.zeros_like(hit)
        big = np.where(hit, idx, -1)
        edge[1:] |= big[1:] != big[:-1]
        edge[:-1] |= big[:-1] != big[1:]
        edge[:, 1:] |= big[:, 1:] != big[:, :-1]
        edge[:, :-1] |= big[:, :-1] != big[:, 1:]
        sil = np.zeros_like(hit)
        sil[1:] |= ~hit[:-1]
        sil[:-1] |= ~hit[1:]
        sil[:, 1:] |= ~hit[:, :-1]
        sil[:, :-1] |= ~hit[:, 1:]
        factor = np.where(sil, outline, np.where(edge, 0.5 + 0.5 * outline, 1.0))
        col = col * factor[..., None]
    # 5. z-test against what is already drawn
    zb = depth[y0:y1, x0:x1]
    write = hit & (z < zb)
    rgb[y0:y1, x0:x1][write] = col[write]
    zb[write] = z[write]
    if mask_out is not None:
        mask_out[y0:y1, x0:x1] |= write


def make_batch(parts, part_to_screen, colours, z0, metres_per_unit):
    """Build a Batch from parts, each with its own (3,3) local->screen matrix.

    colours: dict role -> rgb float (3,), each part multiplied by its dim.
    z0: the object's depth (metres); part.z / part.bulge are in local units.
    """
    to_local = np.stack([unit_to_local(p) for p in parts])  # (P, 3, 3)
    return Batch(
        kind=np.array([p.kind for p in parts]),
        to_screen=np.stack(part_to_screen) @ to_local,
        to_local=to_local,
        colour=np.stack([np.asarray(colours[p.role], float) * p.dim for p in parts]).astype(np.float32),
        z=np.array([z0 + p.z * metres_per_unit for p in parts], np.float32),
        bulge=np.array([p.bulge * metres_per_unit for p in parts], np.float32),
        patterned=np.array([p.patterned for p in parts]),
        shade=np.array([p.shade for p in parts], np.float32),
    )
