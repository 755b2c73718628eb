"""The judge of generated shots: the shipped toy CLIP (frame encoder + MiniLM) for the paper's Sem
and ID, and the depth net for depth adherence. Used by the shot checks and by personalization's
sample scores (and, extended with zero-shot labels, by ``eval/video.py``).

    from story_pipeline.models.judge import get_judge
    judge = get_judge()                                   # loads once per process
    judge.adherence(frames, depth)                        # si-RMSE vs the conditioning depth
"""

import functools
from pathlib import Path

import numpy as np

from story_pipeline.config import get_settings


class Judge:
    """The models the checks use: toy CLIP (the frame encoder + MiniLM) for Sem and ID, the depth net
    for adherence; from the shipped weights (``<models_dir>``, STORY_MODELS_DIR)."""

    def __init__(self, models_dir: Path | None = None):
        from story_pipeline.models.depth_net import load_depth_net
        from story_pipeline.models.frame_encoder import load_frame_encoder
        from story_pipeline.models.text_encoder import get_text_encoder

        models_dir = Path(models_dir or get_settings().models_dir)
        self.fe = load_frame_encoder(models_dir / "toyworld_frame_encoder")
        self.dn = load_depth_net(models_dir / "toyworld_depth")
        self.text = get_text_encoder()
        self._kinds = None

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds the judge can tell apart: ToyWorld's species (what its frame encoder was trained on)."""
        from story_pipeline.toyworld import SPECIES

        return SPECIES

    def kind_of(self, frames: np.ndarray) -> str:
        """The kind the toy CLIP sees in (F, H, W, 3) uint8 frames: zero-shot over "a photo of a <kind>"
        with the frames' mean embedding (the zero-shot label the issue-18 gates read)."""
        from story_pipeline.models.frame_encoder import encode_frames

        return self.kind_from(encode_frames(self.fe, frames))

    def kind_from(self, emb: np.ndarray) -> str:
        """``kind_of`` from the frames' (F, D) embeddings (``encode_frames(judge.fe, frames)``)."""
        if self._kinds is None:
            self._kinds = self.text.encode([f"a photo of a {k}" for k in self.kinds])  # (K, D)
        mean = emb.mean(0)
        return self.kinds[int(np.argmax(self._kinds @ (mean / np.linalg.norm(mean))))]

    def adherence(self, frames: np.ndarray, cond: np.ndarray) -> float:
        from story_pipeline.models.depth_net import predict_depth

        return si_rmse_inv(predict_depth(self.dn, frames), cond)


def judge_id(models_dir: Path | None = None) -> str:
    """What the judge's scores depend on (its weight files and the text encoder), without loading it."""
    from story_pipeline.fsutil import content_digest
    from story_pipeline.models.loading import CONFIG_NAME, WEIGHTS_NAME
    from story_pipeline.models.text_encoder import model_id

    models_dir = Path(models_dir or get_settings().models_dir)
    files = [(f"{m}/{f}", models_dir / m / f) for m in ("toyworld_frame_encoder", "toyworld_depth")
             for f in (CONFIG_NAME, WEIGHTS_NAME)]
    return content_digest(files, extra=model_id())


@functools.cache
def get_judge() -> Judge:
    """The process-wide judge (its models load once)."""
    return Judge()


def si_rmse_inv(pred_inv: np.ndarray, target_inv: np.ndarray) -> float:
    """si-RMSE between two inverse-depth maps (F, H, W): the target min-max normalised per frame to
    [0, 1], the prediction aligned to it by least-squares scale and shift (as ``si_rmse`` does)."""
    from story_pipeline.models.depth_net import align_scale_shift

    t = np.asarray(target_inv, np.float64)
    lo, hi = t.min(axis=(1, 2), keepdims=True), t.max(axis=(1, 2), keepdims=True)
    t = (t - lo) / np.maximum(hi - lo, 1e-12)
    aligned = align_scale_shift(pred_inv, t)
    return float(np.sqrt(((aligned - t) ** 2).mean(axis=(1, 2))).mean())
