"""Training scripts for the project's small models; each runs with `python -m story_pipeline.train.<name>`."""
