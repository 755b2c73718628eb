"""Settings for every stage, read from the environment (prefix ``STORY_``) or passed explicitly: the one
source of configuration. The Dagster resources take their defaults from here at run time.

Every path hangs off one data root so a run is relocatable; every limit on untrusted input
lives here so it can be checked *before* anything is decoded.
"""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from story_pipeline.errors import ConfigError


SHIPPED_MODELS_DIR = Path(__file__).resolve().parent.parent / "data" / "models"



class DecodeLimits(BaseModel):
    """Limits applied to every video before it is decoded (untrusted input)."""

    max_file_bytes: int = Field(2 * 1024**3, description="reject files larger than this (2 GiB)")
    max_width: int = Field(3840, description="reject wider videos (4K is the largest accepted)")
    max_height: int = Field(2160, description="reject taller videos")
    max_duration_s: float = Field(1800.0, description="reject videos longer than 30 minutes")
    max_frames: int = Field(100_000, description="reject videos claiming more frames")
    min_frames: int = Field(8, description="clips shorter than this cannot drive a shot")


class StoryLimits(BaseModel):
    """Limits on untrusted story input, checked before anything is decoded or rendered.

    Set with ``STORY_STORY_LIMITS__MAX_SHOTS=...`` etc. (``Settings.story_limits``)."""

    max_story_bytes: int = Field(1024**2, description="story files are text; 1 MiB is thousands of shots")
    max_shots: int = Field(500, description="each shot is a render; more belongs in several stories")
    max_characters: int = Field(32, description="each character is one personalization run")
    max_prompt_chars: int = Field(1000, description="text encoders read ~77 tokens; more is a mistake")
    min_frames: int = Field(2, description="one frame is an image, not a shot")
    max_frames: int = Field(64, description="memory grows with frames; a longer event is several shots")
    max_fps: int = Field(60, description="rendered frames per second")
    min_side: int = Field(32, description="smallest width/height in pixels")
    max_side: int = Field(1024, description="largest width/height; SD-1.5-class models are trained at 512")
    side_multiple: int = Field(8, description="latent diffusion works on a 1/8 grid (VAE downsampling)")
    max_images: int = Field(50, description="personalization uses a few; more is a mistake")
    max_image_bytes: int = Field(50 * 1024**2, description="reject larger reference files before opening")
    max_image_pixels: int = Field(50_000_000, description="width*height from the header; a 48 MP photo passes")
    min_image_side: int = Field(32, description="smaller images carry no identity")
    image_formats: tuple[str, ...] = Field(("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"),
                                           description="Pillow format names accepted")




class Settings(BaseSettings):
    """Project settings. ``STORY_DATA_ROOT=/somewhere story demo`` relocates everything."""

    model_config = SettingsConfigDict(env_prefix="STORY_", env_nested_delimiter="__")

    data_root: Path = Field(Path("data"), description="root of all runtime state")
    # Shipped weights live in the repository's data/models (tracked in git), whatever the data root.
    models_dir: Path = Field(SHIPPED_MODELS_DIR, description="folder of the shipped ToyWorld model weights")
    limits: DecodeLimits = Field(default_factory=DecodeLimits)
    story_limits: StoryLimits = Field(default_factory=StoryLimits)
    # ANN index only pays off past a few thousand rows; below it, exact (flat) search is
    # both fast (~1 ms per 1k rows) and exact.
    ann_threshold: int = Field(5000, description="build an ANN vector index at this many rows")
    # The defaults of the Dagster resources (each can be overridden in the launchpad).
    generator_backend: str = Field("toyworld", description="video generator backend: toyworld | diffusers")
    generator_folder: str = Field("", description="generator weights folder (empty: the shipped ToyWorld model)")
    generator_motion_adapter: str = Field("", description="diffusers: the AnimateDiff motion adapter folder "
                                                          "(empty: motion_adapter/ inside the generator folder)")
    generator_controlnet: str = Field("", description="diffusers: the depth ControlNet folder (empty: controlnet/ "
                                                      "inside the generator folder)")
    generator_device: str = Field("cpu", description="torch device of the generator: cpu, cuda, cuda:1, ...")
    generator_dtype: str = Field("", description="diffusers: dtype of the weights, float32 | float16 | bfloat16 "
                                                 "(empty: float32; float16 on a GPU halves memory)")
    depth_backend: str = Field("toyworld", description="depth estimator backend: toyworld | controlnet_aux | "
                                                       "transformers")
    depth_folder: str = Field("", description="depth weights folder (empty: the shipped ToyWorld depth net)")
    depth_device: str = Field("cpu", description="torch device of the depth estimator")
    render_steps: int = Field(0, ge=0, description="sampling steps of shots that set none (0: the backend's default)")
    heal_attempts: int = Field(3, ge=1, description="renders per shot when its checks fail (1: no healing)")
    personalize_steps: int = Field(100, ge=1, description="training steps per character")
    personalize_prior_clips: int = Field(4, ge=0, description="regularisation clips of the class word (0: none); 4 "
                                         "kept the kind in 83% of the gates' shots, not 75% (docs/results.md)")
    personalize_sample_steps: int = Field(12, ge=1, description="sampler steps of the sample shots scored after training")
    mlflow_uri: str = Field("", description="MLflow tracking URI (empty: sqlite under the data root)")
    mlflow_ui: str = Field("http://127.0.0.1:5000", description="where `story mlflow-ui` serves MLflow (run links)")
    reindex_cron: str = Field("0 3 * * *", description="when the nightly corpus reindex runs")
    # `story plan --lm`: an OpenAI-compatible chat endpoint that splits a story script into shots (default off)
    plan_lm_url: str = Field("", description="base URL of the endpoint, e.g. http://127.0.0.1:8000/v1 (empty: off)")
    plan_lm_model: str = Field("", description="model name the endpoint serves")
    plan_lm_key_env: str = Field("", description="name of the environment variable holding its API key (empty: none)")
    plan_lm_timeout_s: float = Field(60.0, gt=0, description="seconds to wait for the endpoint's reply")
    # How Dagster runs things (`story ui` writes them into <data>/dagster_home/dagster.yaml).
    executor: Literal["in_process", "multiprocess"] = Field(
        "in_process", description="steps of a run in its one process (each step process would import torch "
                                  "and load the models again), or one process per step")
    max_concurrent_runs: int = Field(2, ge=1, description="runs in progress at once; the rest wait in the queue")
    model_heavy_limit: int = Field(1, ge=1, description="model_heavy steps (training, rendering) at once")

    def __init__(self, *args, **values):
        # A bad STORY_* variable is a user error: one sentence naming it, not a pydantic report.
        try:
            super().__init__(*args, **values)
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            name = "STORY_" + "__".join(str(p).upper() for p in err["loc"])
            got = str(err["input"])[:80]
            if err["type"] in ("int_parsing", "int_from_float"):
                raise ConfigError(f"Setting {name} must be a whole number, got {got!r}; fix or unset it.") from None
            raise ConfigError(f"Setting {name} is invalid ({err['msg']}, got {got!r}); fix or unset it.") from None
        except SettingsError as e:
            raise ConfigError(f"A STORY_* setting cannot be parsed ({' '.join(str(e).split())}); "
                              "fix or unset it.") from None
        if self.data_root.exists() and not self.data_root.is_dir():
            raise ConfigError(f"The data root {self.data_root} (STORY_DATA_ROOT) is a file, not a folder; "
                              "point STORY_DATA_ROOT at a folder.")

    @property
    def corpus_dir(self) -> Path:
        return self.data_root / "corpus"

    @property
    def toyworld_corpus_dir(self) -> Path:
        return self.corpus_dir / "toyworld"

    @property
    def stories_dir(self) -> Path:
        """Stories the Dagster code location shows: story files under it, plus registered ones."""
        return self.data_root / "stories"

    @property
    def lancedb_dir(self) -> Path:
        return self.data_root / "lancedb"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_root / "artifacts"


    @property
    def outputs_dir(self) -> Path:
        return self.data_root / "outputs"

    @property
    def dagster_home(self) -> Path:
        return self.data_root / "dagster_home"

    @property
    def mlflow_dir(self) -> Path:
        return self.data_root / "mlflow"


def get_settings(**overrides) -> Settings:
    return Settings(**overrides)
