"""Dagster resources: one small ConfigurableResource per external system."""

from story_pipeline.resources.storage import StorageResource
from story_pipeline.resources.lancedb import ClipIndexResource
from story_pipeline.resources.depth import DepthEstimatorResource
from story_pipeline.resources.generator import GeneratorResource
from story_pipeline.resources.mlflow import MLflowResource
from story_pipeline.resources.personalization import PersonalizationResource
from story_pipeline.resources.checks import ShotChecksResource

__all__ = ["StorageResource", "ClipIndexResource", "DepthEstimatorResource", "GeneratorResource", "MLflowResource",
           "PersonalizationResource", "ShotChecksResource"]


def make_resources(data_root: str | None = None) -> dict:
    """The resources every asset, sensor and `story` command uses (defaults from ``Settings`` at run time)."""
    storage = StorageResource(data_root=data_root) if data_root else StorageResource()
    return {
        "storage": storage,
        "clip_index_store": ClipIndexResource(storage=storage),
        "depth_estimator": DepthEstimatorResource(),
        "generator": GeneratorResource(),
        "mlflow": MLflowResource(storage=storage),
        "personalization": PersonalizationResource(),
        "shot_checks": ShotChecksResource(),
    }


def stage_setup(storage: StorageResource, clip_index_store: ClipIndexResource, depth_estimator: DepthEstimatorResource,
                generator: GeneratorResource, personalization: PersonalizationResource,
                shot_checks: ShotChecksResource, index=None):
    """What decides the stages' outputs besides the story (``status.StageSetup``), from the resources'
    configuration: model identities, not loaded models. A missing index, weights folder or bad setting
    is one sentence (a StoryPipelineError) before anything is written."""
    from story_pipeline.personalize.character import class_clip_hits
    from story_pipeline.status import StageSetup

    index = index or clip_index_store.open()
    return StageSetup(
        artifacts_dir=storage.settings().artifacts_dir, index_version=index.data_version(),
        depth_model_id=depth_estimator.model_id(), normalise=depth_estimator.normalise,
        generator=generator.identity(), personalization=personalization.config(),
        thresholds=shot_checks.thresholds(), attempts=shot_checks.heal_attempts(),
        crossfade_frames=shot_checks.crossfade_frames,
        prior_ids=lambda word, n: tuple(h.clip_id for h in class_clip_hits(index, word, n)))
