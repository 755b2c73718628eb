"""Per-shot quality checks of a rendered shot, and self-healing renders.

    from story_pipeline.models.judge import get_judge
    from story_pipeline.render.checks import CheckThresholds, check_shot
    report = check_shot(frames, depth, prompt_text, reference_images, get_judge(), CheckThresholds())
    report.passed, report.values, report.failed   # {"depth_adherence": 0.08, "id": 0.71, "sem": 0.22, "flicker": 0.01}

- depth_adherence: si-RMSE between the depth net on the frames and the conditioning depth (lower is better);
- id: toy-CLIP cosine of the frames with the shot's characters' reference images (concept fidelity);
- sem: toy-CLIP cosine of the frames with the prompt (tokens as class words: text alignment);
- flicker: mean |frame-to-frame change| of the pixels whose depth did not change (the part of the
  change the depth motion does not explain), in [0, 1] units;
- kind: 1 when the toy CLIP recognises the shot's characters' kind (their class word, when they share
  one the judge knows) in the frames, else 0 (a robot drawn as a rabbit fails and is rendered again).

Self-healing (``render_with_healing``): a shot failing its checks is rendered again with the next
seed and/or the next retrieval candidate's depth, up to ``attempts`` renders; the best attempt
(fewest failed checks, then the best depth adherence) is kept and every attempt is recorded.
"""

from dataclasses import dataclass, field

import numpy as np



@dataclass
class CheckThresholds:
    depth_adherence: float = 0.20  # max si-RMSE (the depth net's own error on real clips is ~0.03)
    id: float = 0.40  # min ID (only for shots that name characters)
    sem: float = 0.05  # min Sem
    flicker: float = 0.06  # max mean |change| of static pixels
    static_depth: float = 0.02  # |depth change| below which a pixel counts as static
    kind: bool = True  # the frames must show the characters' kind (when they share one the judge knows)


@dataclass
class CheckReport:
    values: dict
    failed: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failed

    def badness(self) -> tuple:
        return (len(self.failed), self.values.get("depth_adherence", 0.0))


def flicker(frames: np.ndarray, depth: np.ndarray, static: float) -> float:
    """Mean |rgb change| (0..1) between consecutive frames over pixels whose depth changed < ``static``."""
    f = np.asarray(frames, np.float32) / 255.0
    if len(f) < 2:
        return 0.0
    drgb = np.abs(np.diff(f, axis=0)).mean(-1)  # (F-1, H, W)
    ddep = np.abs(np.diff(np.asarray(depth, np.float32), axis=0)) / 2.0  # depth in [-1, 1] -> [0, 1] units
    mask = ddep < static
    return float(drgb[mask].mean()) if mask.any() else 0.0


def check_shot(frames: np.ndarray, depth: np.ndarray, text: str, references: list, judge,
               t: CheckThresholds, kind: str | None = None) -> CheckReport:
    """``kind``: the class word the shot's characters share (None: no kind check)."""
    from story_pipeline.metrics import id_score, sem_score
    from story_pipeline.models.frame_encoder import encode_frames

    values = {"depth_adherence": judge.adherence(frames, depth)}
    emb = encode_frames(judge.fe, frames)
    values["sem"] = sem_score(emb, judge.text.encode([text]))
    if references:
        values["id"] = id_score(emb, encode_frames(judge.fe, np.stack([np.asarray(r) for r in references])))
    values["flicker"] = flicker(frames, depth, t.static_depth)
    if t.kind and kind in judge.kinds:
        values["kind"] = float(judge.kind_from(emb) == kind)  # the frames' embeddings, encoded once
    failed = [k for k, bad in (("depth_adherence", values["depth_adherence"] > t.depth_adherence),
                               ("sem", values["sem"] < t.sem),
                               ("id", "id" in values and values["id"] < t.id),
                               ("flicker", values["flicker"] > t.flicker),
                               ("kind", values.get("kind", 1.0) < 1.0)) if bad]
    return CheckReport({k: float(v) for k, v in values.items()}, failed)



@dataclass
class Attempt:
    seed: int
    candidate: int  # index of the retrieval candidate whose depth was used (0 = the chosen clip)
    clip_id: str
    report: CheckReport
    rendered: object  # render.RenderedShot


def healing_plan(seed: int, candidates: int, attempts: int) -> list[tuple[int, int]]:
    """(seed, candidate) per attempt: the shot as written, a new seed, the next clip, both, ..."""
    plan = []
    for c in range(max(1, candidates)):
        for s in (seed, seed + 1):
            plan.append((s, c))
    return plan[:max(1, attempts)]


def render_with_healing(plan: list[tuple[int, int]], render, check) -> tuple[Attempt, list[Attempt]]:
    """``render(seed, candidate) -> (RenderedShot, clip_id, depth)``, ``check(rendered, depth) -> CheckReport``.
    Stops at the first attempt that passes; returns (best attempt, all attempts)."""
    tried = []
    for seed, cand in plan:
        rendered, clip_id, depth = render(seed, cand)
        tried.append(Attempt(seed, cand, clip_id, check(rendered, depth), rendered))
        if tried[-1].report.passed:
            break
    best = min(tried, key=lambda a: a.report.badness())
    return best, tried
