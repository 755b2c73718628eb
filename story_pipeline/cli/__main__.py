from story_pipeline.cli import app

app()
