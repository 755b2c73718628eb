import os

import dagster as dg

from story_pipeline.config import env_int
from story_pipeline.render.generator import load_generator


class GeneratorResource(dg.ConfigurableResource):
    """The video generator. ``backend``: toyworld | diffusers; ``folder``: local weights (empty:
    the shipped ToyWorld video model); for diffusers, ``motion_adapter`` and ``controlnet`` name
    the AnimateDiff motion adapter and depth ControlNet folders (empty: inside ``folder``)."""

    backend: str = os.environ.get("STORY_GENERATOR_BACKEND", "toyworld")
    folder: str = os.environ.get("STORY_GENERATOR_FOLDER", "")
    device: str = "cpu"
    motion_adapter: str = ""
    controlnet: str = ""
    steps: int = env_int("STORY_RENDER_STEPS", 0)  # sampling steps of shots that set none; 0: the backend's

    def load(self):
        options = {k: v for k, v in (("motion_adapter", self.motion_adapter), ("controlnet", self.controlnet),
                                     ("default_steps", self.steps)) if v}
        return load_generator(self.backend, self.folder or None, device=self.device, **options)
