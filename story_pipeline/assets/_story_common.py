"""Helpers the per-story asset modules share: loading the story of a run and one-sentence failures."""

import contextlib
from pathlib import Path

import dagster as dg

from story_pipeline.errors import StoryPipelineError


def group_name(story_id: str) -> str:
    return "story_" + story_id.replace("-", "_")  # Dagster group names: [A-Za-z0-9_]+


# The asset graph labels a node with the key's last part, so that part names the shot or character.
def shot_key(story_id: str, shot_id: str, stage: str) -> dg.AssetKey:
    """``<story>/shots/<shot>_<stage>``: one asset per stage of each shot."""
    return dg.AssetKey([story_id, "shots", f"{shot_id}_{stage}"])


def character_key(story_id: str, name: str, stage: str) -> dg.AssetKey:
    """``<story>/characters/<name>_<stage>``: one asset per stage of each character."""
    return dg.AssetKey([story_id, "characters", f"{name}_{stage}"])


def video_key(story_id: str) -> dg.AssetKey:
    return dg.AssetKey([story_id, "story_video"])


@contextlib.contextmanager
def user_errors():
    """An error the user can fix (a story file, an image, a missing upstream step) fails the step with
    its one sentence, shown as the run's error in the UI, not as a traceback."""
    try:
        yield
    except StoryPipelineError as e:
        raise dg.Failure(description=str(e)) from None


def load_for_run(path: Path):
    from story_pipeline.story_file import load_story

    with user_errors():
        return load_story(path)


def shot_of(story, path: Path, shot_id: str):
    try:
        return story.shot(shot_id)
    except KeyError:
        raise dg.Failure(
            f"{path} no longer has shot {shot_id!r}; reload the definitions (Deployment → Reload) "
            "so the assets match the story file."
        ) from None


def character_of(story, name: str):
    try:
        return next(c for c in story.characters if c.name == name)
    except StopIteration:
        raise dg.Failure(f"{story.source} no longer has character <{name}>; reload the definitions "
                         "(Deployment → Reload) so the assets match the story file.") from None

