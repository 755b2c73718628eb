from typing import Optional

import dagster as dg

from story_pipeline.config import Settings
from story_pipeline.render.checks import CheckThresholds


class ShotChecksResource(dg.ConfigurableResource):
    """Thresholds of the per-shot checks and the self-healing budget (renders per shot, >= 1;
    unset: STORY_HEAL_ATTEMPTS, default 3). """

    depth_adherence: float = CheckThresholds.depth_adherence
    id: float = CheckThresholds.id
    sem: float = CheckThresholds.sem
    flicker: float = CheckThresholds.flicker
    kind: bool = CheckThresholds.kind  # the frames must show the characters' kind (toy-CLIP zero-shot)
    attempts: Optional[int] = None  # 1 = no healing; else the next seed, then the next retrieval candidate, ...
    crossfade_frames: int = 2  # story video: frames of cross-fade between shots (0 = hard cuts)

    def thresholds(self) -> CheckThresholds:
        return CheckThresholds(depth_adherence=self.depth_adherence, id=self.id, sem=self.sem, flicker=self.flicker,
                               kind=self.kind)

    def heal_attempts(self) -> int:
        return Settings().heal_attempts if self.attempts is None else max(1, self.attempts)
