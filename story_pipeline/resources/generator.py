from typing import Optional

import dagster as dg

from story_pipeline.config import Settings


class GeneratorResource(dg.ConfigurableResource):
    """The video generator. ``backend``: toyworld | diffusers; ``folder``: local weights (empty: the
    shipped ToyWorld video model); for diffusers, ``motion_adapter`` and ``controlnet`` name the
    AnimateDiff motion adapter and depth ControlNet folders (empty: inside ``folder``). Unset fields
    come from ``Settings`` at run time (STORY_GENERATOR_BACKEND, STORY_GENERATOR_FOLDER,
    STORY_RENDER_STEPS)."""

    backend: Optional[str] = None
    folder: Optional[str] = None
    device: str = "cpu"
    motion_adapter: str = ""
    controlnet: str = ""
    steps: Optional[int] = None  # sampling steps of shots that set none; 0: the backend's

    def _args(self) -> tuple[str, Optional[str], dict]:
        s = Settings()
        steps = s.render_steps if self.steps is None else self.steps
        options = {k: v for k, v in (("motion_adapter", self.motion_adapter), ("controlnet", self.controlnet),
                                     ("default_steps", steps)) if v}
        folder = s.generator_folder if self.folder is None else self.folder
        return self.backend or s.generator_backend, folder or None, options

    def load(self):
        from story_pipeline.render.generator import load_generator

        backend, folder, options = self._args()
        return load_generator(backend, folder, device=self.device, **options)

    def identity(self):
        """What the loaded generator's renders are keyed by, without loading it."""
        from story_pipeline.render.generator import generator_identity

        backend, folder, options = self._args()
        return generator_identity(backend, folder, **options)
