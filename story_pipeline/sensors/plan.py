"""Which runs bring a story up to date: the parts ``status.story_status`` finds stale, plus parts this
Dagster instance has never materialized. ``story run`` and the story sensor both use it, so the CLI,
the sensor and a click in the UI agree on what is current (the stage memos decide)."""

from dataclasses import dataclass, field

import dagster as dg


@dataclass
class StoryRuns:
    characters: list = field(default_factory=list)  # status.Part, in story order
    shots: list = field(default_factory=list)
    video: object = None  # status.Part or None

    @property
    def empty(self) -> bool:
        return not (self.characters or self.shots or self.video)


def story_runs(instance: dg.DagsterInstance, status) -> StoryRuns:
    """The parts of ``status``'s story that need a run on ``instance``."""
    sid = status.story.id
    done_chars = instance.get_materialized_partitions(dg.AssetKey([sid, "character_timeinv"]))
    done_shots = instance.get_materialized_partitions(dg.AssetKey([sid, "rendered_shots"]))
    video_done = instance.get_latest_materialization_event(dg.AssetKey([sid, "story_video"])) is not None
    return StoryRuns(
        characters=[p for p in status.characters if not p.current or p.key not in done_chars],
        shots=[p for p in status.shots if not p.current or p.key not in done_shots],
        video=status.video if not status.video.current or not video_done else None,
    )
