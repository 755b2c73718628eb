"""How personalization is configured (no torch import: the Dagster resources read these defaults)."""

import hashlib
import json
from dataclasses import asdict, dataclass

from story_pipeline.errors import InvalidInput

METHODS = {  # name -> (TimeInv buckets or 1 for one vector, LoRA)
    "timeinv_lora": ("table", True),
    "timeinv": ("table", False),
    "textual_inversion": ("vector", False),
    "textual_inversion_lora": ("vector", True),
}
NUM_TRAIN_TIMESTEPS = 1000


class PersonalizationError(InvalidInput):
    """A character that cannot be learnt (no usable image, a token or class word the encoder can't take)."""


@dataclass
class PersonalizeConfig:
    method: str = "timeinv_lora"
    buckets: int = 2  # TimeInv rows B; the paper's form is B = T = 1000. At 100 steps B = 10 lost ID against
    # Textual Inversion (-0.028 +- 0.006), B = 2 ties it with higher Sem: docs/results.md (bench/table2.py)
    shared_table: bool = False  # rows as V = v + R (see TokenTable): more drift, not more ID (docs/results.md)
    steps: int = 100  # ~70 s on 2 CPU cores; 50 -> 100 steps moved ID by +0.005..0.011 (bench/table2.py)
    lr_embed: float = 2e-2  # the table rows (TI on small text encoders wants a high rate)
    lr_lora: float = 2e-3
    lora_rank: int = 4
    frames: int = 4  # L: frames of each concept video (the still repeated)
    batch: int = 2  # concept videos per step
    size: int = 64  # generation resolution of the toy model
    augment: bool = True
    class_in_prompt: bool = True  # DreamBooth's "a [V] dog": captions and render prompts say "<tabby> cat", so the
    # kind stays in the prompt and the token learns the look (robot seen in 10-11 of 12 shots, not 5: docs/results.md)
    seed: int = 0
    sample_every: int = 0  # steps between sample GIFs logged to MLflow (0: final only; mid-run samples made the
    # demo's personalization several times slower)
    sample_steps: int = 12  # sampler steps of the sample shots
    eval_every: int = 20  # steps between losses on the fixed probe (MLflow `eval_loss`; 0: none)
    checkpoint_every: int = 25  # steps between resumable checkpoints (when a checkpoint path is given)
    prior_clips: int = 0  # regularisation (LoRA methods): corpus clips retrieved for the class word; 0 = off here
    # (a library call has no index); the pipeline's default is Settings.personalize_prior_clips (4)
    prior_weight: float = 1.0  # weight of their loss (one clip per step, captioned without the token)

    @property
    def num_buckets(self) -> int:
        return self.buckets if METHODS[self.method][0] == "table" else 1

    @property
    def lora(self) -> bool:
        return METHODS[self.method][1]

    @property
    def uses_prior(self) -> bool:
        """Regularisation clips apply: a LoRA method (the prior trains only the adapter) and prior_clips > 0."""
        return self.lora and self.prior_clips > 0

    def check(self) -> None:
        if self.method not in METHODS:
            raise PersonalizationError(f"personalization method must be one of {', '.join(METHODS)}, got {self.method!r}.")
        if not 1 <= self.buckets <= NUM_TRAIN_TIMESTEPS:
            raise PersonalizationError(f"buckets must be in [1, {NUM_TRAIN_TIMESTEPS}], got {self.buckets}.")
        if self.steps < 1 or self.frames < 1 or self.batch < 1 or self.lora_rank < 1:
            raise PersonalizationError("steps, frames, batch and lora_rank must be >= 1.")
        if self.prior_clips < 0 or self.prior_weight < 0 or self.eval_every < 0:
            raise PersonalizationError("prior_clips, prior_weight and eval_every must be >= 0.")


def config_digest(config: PersonalizeConfig) -> str:
    return hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:16]
