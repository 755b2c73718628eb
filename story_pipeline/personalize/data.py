"""Training data of personalization (paper step 7): static concept videos from the reference images,
and regularisation clips of the class retrieved from the corpus.

Concept videos: each reference image, augmented (random scale/crop, horizontal flip: Custom
Diffusion's augmentation), repeated L frames, with its depth (the depth net on the still, per
frame) as structure guidance, so the model learns appearance and is not taught to stand still.
"""

import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

TEMPLATES = ("a {}", "a photo of a {}", "a picture of a {}", "a {} standing", "a close-up of a {}",
             "a {} in a scene", "a good photo of a {}", "a {} outdoors")


# --- data ---------------------------------------------------------------------------------------------
def concept_bank(images: list, depth_net, size: int, n_aug: int, augment: bool, rng: random.Random):
    """(frames (N, 3, S, S) in [-1, 1], depth (N, S, S) in [-1, 1]): augmented stills and their depth.
    ``depth_net``: a ``DepthNet`` or a depth estimator ((F, H, W, 3) uint8 -> (F, H, W) inverse depth)."""
    from PIL import Image

    from story_pipeline.depth.structure import normalise_depth
    from story_pipeline.models.depth_net import predict_depth

    frames = []
    for im in images:
        for k in range(n_aug if augment else 1):
            w, h = im.size
            side = min(w, h)
            if augment and k:  # Custom Diffusion-style: random scale and crop, flip
                s = int(side * rng.uniform(0.7, 1.0))
                x0, y0 = rng.randint(0, w - s), rng.randint(0, h - s)
                crop = im.crop((x0, y0, x0 + s, y0 + s))
                if rng.random() < 0.5:
                    crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            else:
                crop = im.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
            frames.append(np.asarray(crop.resize((size, size), Image.BOX)))
    frames = np.stack(frames)  # (N, S, S, 3) uint8
    with torch.no_grad():
        is_net = isinstance(depth_net, torch.nn.Module)
        depth = predict_depth(depth_net, frames) if is_net else depth_net(frames)  # (N, S, S)
    depth = np.stack([normalise_depth(d[None], "frame")[0] for d in depth])
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x, torch.from_numpy(depth)


@dataclass
class PriorBank:
    """Regularisation clips (Custom Diffusion's / DreamBooth's prior preservation, with retrieved corpus
    videos of the class word instead of generated images): frames, their depth and caption states."""
    x: torch.Tensor  # (N, 3, L, S, S) in [-1, 1]
    depth: torch.Tensor  # (N, 1, L, S, S) in [-1, 1]
    captions: list[str]
    ids: list[str]  # clip ids (part of the memo key: other clips, another concept)


def prior_bank(clips: list[tuple[np.ndarray, np.ndarray, str, str]], size: int) -> PriorBank:
    """``clips``: (frames (L, h, w, 3) uint8, depth (L, S, S) in [-1, 1], caption, clip id) each."""
    xs, ds = [], []
    for frames, depth, _, _ in clips:
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1
        xs.append(F.interpolate(x, size=(size, size), mode="area").permute(1, 0, 2, 3))  # (3, L, S, S)
        ds.append(torch.from_numpy(np.ascontiguousarray(depth, np.float32))[None])
    return PriorBank(torch.stack(xs), torch.stack(ds), [c[2] for c in clips], [c[3] for c in clips])


