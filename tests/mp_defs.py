"""Definitions for the multiprocess-executor test, importable by the step processes (reconstructable):
the story file, data root and tiny generator come from environment variables."""

import os

import dagster as dg

from story_pipeline.assets.stories import build_story_assets, part_keys
from story_pipeline.definitions import ASSETS, make_resources
from story_pipeline.resources import GeneratorResource, PersonalizationResource, ShotChecksResource


def _job(name: str, pick) -> dg.JobDefinition:
    assets = build_story_assets(os.environ["MP_STORY_FILE"])
    resources = {**make_resources(os.environ["STORY_DATA_ROOT"]),
                 "generator": GeneratorResource(folder=os.environ["STORY_GENERATOR_FOLDER"], steps=2),
                 "personalization": PersonalizationResource(steps=2, sample_every=0, sample_steps=2),
                 "shot_checks": ShotChecksResource(attempts=1)}
    job = dg.define_asset_job(name, selection=dg.AssetSelection.assets(*pick()))
    return dg.Definitions(assets=ASSETS + assets, resources=resources, jobs=[job]).resolve_job_def(name)


def corpus_job():
    return _job("corpus", lambda: ASSETS)


def character_job():
    return _job("characters", lambda: part_keys("tabby_adventure", "character", "tabby"))


def shot_job():
    return _job("shots", lambda: part_keys("tabby_adventure", "shot", "leap"))
