"""Which runs bring a story up to date: the parts ``status.story_status`` finds stale, plus parts this
Dagster instance has never materialized. ``story run`` and the story sensor both use it, so the CLI,
the sensor and a click in the UI agree on what is current (the stage memos decide)."""

from dataclasses import dataclass, field

import dagster as dg

from story_pipeline.assets.stories import part_keys


@dataclass
class StoryRuns:
    characters: list = field(default_factory=list)  # status.Part, in story order
    shots: list = field(default_factory=list)
    video: object = None  # status.Part or None

    @property
    def empty(self) -> bool:
        return not (self.characters or self.shots or self.video)

    @property
    def parts(self) -> list:
        """Every part that needs a run, in dependency order (characters, shots, the video)."""
        return self.characters + self.shots + ([self.video] if self.video is not None else [])


def story_runs(instance: dg.DagsterInstance, status) -> StoryRuns:
    """The parts of ``status``'s story that need a run on ``instance``: stale, or a last stage (timeinv,
    render, the video) this instance never materialized."""
    sid = status.story.id
    parts = status.characters + status.shots + [status.video]
    last = [part_keys(sid, p.kind, p.key)[-1] for p in parts]
    records = instance.get_asset_records(last)
    done = {r.asset_entry.asset_key for r in records if r.asset_entry.last_materialization is not None}
    stale = [p for p, key in zip(parts, last) if not p.current or key not in done]
    return StoryRuns(characters=[p for p in stale if p.kind == "character"],
                     shots=[p for p in stale if p.kind == "shot"],
                     video=next((p for p in stale if p.kind == "video"), None))
