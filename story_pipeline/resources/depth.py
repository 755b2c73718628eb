import dagster as dg


class DepthEstimatorResource(dg.ConfigurableResource):
    """The depth estimator (motion structure). ``backend``: toyworld | controlnet_aux |
    transformers; ``folder``: local weights (empty: the shipped ToyWorld depth net)."""

    backend: str = "toyworld"
    folder: str = ""
    device: str = "cpu"
    normalise: str = "clip"  # clip | frame | clip_aligned (see story_pipeline/depth/structure.py)

    def load(self):
        from story_pipeline.depth.estimators import load_estimator

        return load_estimator(self.backend, self.folder or None, device=self.device)

    def model_id(self) -> str:
        """The loaded estimator's ``model_id``, from its weight files (nothing is loaded)."""
        from story_pipeline.depth.estimators import estimator_id

        return estimator_id(self.backend, self.folder or None)
