"""Dagster assets: thin bodies that validate, call the library, and report metadata."""

from story_pipeline.assets.corpus import clip_corpus, clip_index

__all__ = ["clip_corpus", "clip_index"]
