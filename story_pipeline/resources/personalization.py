from typing import Optional

import dagster as dg

from story_pipeline.config import Settings
from story_pipeline.personalize.config import PersonalizeConfig


class PersonalizationResource(dg.ConfigurableResource):
    """Training settings of character personalization (the method comes from each character in
    the story file). Defaults: ~65 s per character on 2 CPU cores (100 steps, 4 class clips). Unset ``steps`` / ``prior_clips`` /
    ``sample_steps`` come from Settings at run time (STORY_PERSONALIZE_STEPS, STORY_PERSONALIZE_PRIOR_CLIPS,
    STORY_PERSONALIZE_SAMPLE_STEPS)."""

    steps: Optional[int] = None
    buckets: int = PersonalizeConfig.buckets
    shared_table: bool = PersonalizeConfig.shared_table
    lora_rank: int = PersonalizeConfig.lora_rank
    lr_embed: float = PersonalizeConfig.lr_embed
    lr_lora: float = PersonalizeConfig.lr_lora
    frames: int = PersonalizeConfig.frames
    batch: int = PersonalizeConfig.batch
    sample_every: int = PersonalizeConfig.sample_every
    sample_steps: Optional[int] = None  # sampler steps of the sample shots scored in MLflow
    seed: int = PersonalizeConfig.seed
    prior_clips: Optional[int] = None
    prior_weight: float = PersonalizeConfig.prior_weight

    def config(self) -> PersonalizeConfig:
        s = Settings()
        return PersonalizeConfig(steps=s.personalize_steps if self.steps is None else self.steps,
                                 buckets=self.buckets, shared_table=self.shared_table, lora_rank=self.lora_rank,
                                 lr_embed=self.lr_embed, lr_lora=self.lr_lora, frames=self.frames,
                                 batch=self.batch, sample_every=self.sample_every, sample_steps=s.personalize_sample_steps if self.sample_steps is None else self.sample_steps,
                                 seed=self.seed,
                                 prior_clips=s.personalize_prior_clips if self.prior_clips is None else self.prior_clips,
                                 prior_weight=self.prior_weight)
