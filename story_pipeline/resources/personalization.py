import dagster as dg

from story_pipeline.config import env_int
from story_pipeline.personalize.timeinv import PersonalizeConfig


class PersonalizationResource(dg.ConfigurableResource):
    """Training settings of character personalization (the method comes from each character in
    the story file). Defaults: ~70 s per character on 2 CPU cores."""

    steps: int = env_int("STORY_PERSONALIZE_STEPS", PersonalizeConfig.steps, minimum=1)
    buckets: int = PersonalizeConfig.buckets
    shared_table: bool = PersonalizeConfig.shared_table
    lora_rank: int = PersonalizeConfig.lora_rank
    lr_embed: float = PersonalizeConfig.lr_embed
    lr_lora: float = PersonalizeConfig.lr_lora
    frames: int = PersonalizeConfig.frames
    batch: int = PersonalizeConfig.batch
    sample_every: int = PersonalizeConfig.sample_every
    seed: int = PersonalizeConfig.seed
    prior_clips: int = env_int("STORY_PERSONALIZE_PRIOR_CLIPS", PersonalizeConfig.prior_clips)
    prior_weight: float = PersonalizeConfig.prior_weight

    def config(self) -> PersonalizeConfig:
        return PersonalizeConfig(steps=self.steps, buckets=self.buckets, shared_table=self.shared_table,
                                 lora_rank=self.lora_rank,
                                 lr_embed=self.lr_embed, lr_lora=self.lr_lora, frames=self.frames,
                                 batch=self.batch, sample_every=self.sample_every, seed=self.seed,
                                 prior_clips=self.prior_clips, prior_weight=self.prior_weight)
