"""Evaluation scripts (not imported by runtime code): the video model's gates, retrieval recall."""
