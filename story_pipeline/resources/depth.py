from typing import Optional

import dagster as dg

from story_pipeline.config import Settings


class DepthEstimatorResource(dg.ConfigurableResource):
    """The depth estimator (motion structure). ``backend``: toyworld | controlnet_aux |
    transformers; ``folder``: local weights (empty: the shipped ToyWorld depth net). Unset fields come
    from ``Settings`` at run time (STORY_DEPTH_BACKEND, STORY_DEPTH_FOLDER, STORY_DEPTH_DEVICE)."""

    backend: Optional[str] = None
    folder: Optional[str] = None
    device: Optional[str] = None
    normalise: str = "clip"  # clip | frame | clip_aligned (see story_pipeline/depth/structure.py)

    def _args(self) -> tuple[str, Optional[str]]:
        s = Settings()
        folder = s.depth_folder if self.folder is None else self.folder
        return self.backend or s.depth_backend, folder or None

    def load(self):
        from story_pipeline.depth.estimators import load_estimator

        backend, folder = self._args()
        return load_estimator(backend, folder, device=Settings().depth_device if self.device is None else self.device)

    def model_id(self) -> str:
        """The loaded estimator's ``model_id``, from its weight files (nothing is loaded)."""
        from story_pipeline.depth.estimators import estimator_id

        backend, folder = self._args()
        return estimator_id(backend, folder)
