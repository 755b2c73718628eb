from typing import Optional

import dagster as dg

from story_pipeline.config import Settings


def pick(field, setting):
    """A resource field, or the setting when the field is unset (None)."""
    return setting if field is None else field


class GeneratorResource(dg.ConfigurableResource):
    """The video generator. ``backend``: toyworld | diffusers; ``folder``: local weights (empty: the
    shipped ToyWorld video model); for diffusers, ``motion_adapter`` and ``controlnet`` name the
    AnimateDiff motion adapter and depth ControlNet folders (empty: inside ``folder``) and ``dtype`` the
    weights' dtype (float16 on a GPU). Unset fields come from ``Settings`` at run time
    (STORY_GENERATOR_BACKEND, STORY_GENERATOR_FOLDER, STORY_GENERATOR_MOTION_ADAPTER,
    STORY_GENERATOR_CONTROLNET, STORY_GENERATOR_DEVICE, STORY_GENERATOR_DTYPE, STORY_RENDER_STEPS)."""

    backend: Optional[str] = None
    folder: Optional[str] = None
    device: Optional[str] = None
    motion_adapter: Optional[str] = None
    controlnet: Optional[str] = None
    dtype: Optional[str] = None
    steps: Optional[int] = None  # sampling steps of shots that set none; 0: the backend's

    def _args(self) -> tuple[str, Optional[str], dict]:
        s = Settings()
        steps = pick(self.steps, s.render_steps)
        options = {k: v for k, v in (("motion_adapter", pick(self.motion_adapter, s.generator_motion_adapter)),
                                     ("controlnet", pick(self.controlnet, s.generator_controlnet)),
                                     ("dtype", pick(self.dtype, s.generator_dtype)),
                                     ("default_steps", steps)) if v}
        folder = pick(self.folder, s.generator_folder)
        return self.backend or s.generator_backend, folder or None, options

    def load(self):
        from story_pipeline.render.generator import load_generator

        backend, folder, options = self._args()
        return load_generator(backend, folder, device=pick(self.device, Settings().generator_device), **options)

    def identity(self):
        """What the loaded generator's renders are keyed by, without loading it."""
        from story_pipeline.render.generator import generator_identity

        backend, folder, options = self._args()
        return generator_identity(backend, folder, **options)
