"""Shot retrieval as a story uses it: does the chosen clip show the shot's motion and its character's kind?

    from story_pipeline.eval.shot_retrieval import kind_motion_accuracy
    r = kind_motion_accuracy(index, attrs, tmp_dir)     # attrs: {clip_id: ToyWorld attributes}
    r["both"], r["motion"], r["kind"], r["misses"]
    r["absent_motion"]     # shots whose kind has no clip of the motion: chosen clip shows the motion

One shot per (kind, motion) pair whose corpus holds a clip of that kind doing that motion, long
enough for the shot, written as stories are: "a <x> walks to the right in an autumn park" with the
character's class word = the kind. ``retrieve_shot`` picks the clip; a shot scores when that clip
shows both. Motion phrases and places rotate over the caption phrasings of ToyWorld; the query
drops the place as ``Story.shot_query`` does.
"""

import itertools
import random
from pathlib import Path

from story_pipeline.toyworld.captions import MOTION_PHRASES, SETTING_PHRASES
from story_pipeline.toyworld.world import MOTIONS, SPECIES


def story_yaml(pairs: list[tuple[str, str]], frames: int, fps: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines = ["id: kind_motion", f"defaults: {{frames: {frames}, fps: {fps}, resolution: 64}}", "characters:"]
    for s in sorted({s for s, _ in pairs}):
        lines.append(f"  - {{token: '<{s}x>', class_word: {s}, images: [refs/{s}.png]}}")
    lines.append("shots:")
    for i, (s, m) in enumerate(pairs):
        does = MOTION_PHRASES[m][i % len(MOTION_PHRASES[m])][0]
        where = rng.choice(SETTING_PHRASES[rng.choice(sorted(SETTING_PHRASES))])
        lines.append(f"  - {{id: s{i:03d}, prompt: 'a <{s}x> {does} {where}'}}")
    return "\n".join(lines) + "\n"


def achievable_pairs(attrs: dict[str, dict], durations: dict[str, float], seconds: float) -> list[tuple[str, str]]:
    """(kind, motion) pairs with at least one clip of that kind doing that motion, >= ``seconds`` long."""
    have = {(a["species"], a["motion"]) for cid, a in attrs.items() if durations[cid] + 1e-6 >= seconds}
    return [p for p in itertools.product(SPECIES, MOTIONS) if p in have]


def kind_motion_accuracy(index, attrs: dict[str, dict], work_dir: Path, frames: int = 16, fps: int = 8) -> dict:
    """Fractions of achievable (kind, motion) shots whose chosen clip shows both / the motion / the kind."""
    from story_pipeline.corpus.retrieve import retrieve_shot
    from story_pipeline.story_file import load_story

    table = index.table.to_arrow().select(["clip_id", "duration_s"])
    durations = dict(zip(table["clip_id"].to_pylist(), table["duration_s"].to_pylist()))
    pairs = achievable_pairs(attrs, durations, frames / fps)
    moves = {m for s, m in pairs}
    absent = [(s, m) for s, m in itertools.product(SPECIES, MOTIONS) if (s, m) not in pairs and m in moves]
    work_dir = Path(work_dir)
    (work_dir / "refs").mkdir(parents=True, exist_ok=True)
    for s in SPECIES:
        (work_dir / "refs" / f"{s}.png").write_bytes(s.encode())  # never opened (check_images=False)
    (work_dir / "story.yaml").write_text(story_yaml(pairs + absent, frames, fps))
    story = load_story(work_dir / "story.yaml", check_images=False)
    both = motion = kind = 0
    misses = []
    fallback = 0  # shots whose kind has no clip of the motion: the chosen clip should still show the motion
    fit_right = 0  # shots whose chosen clip's kind_fit (render/guidance.py relaxes on False) is its actor's truth
    for (s, m), shot in zip(absent, story.shots[len(pairs):]):
        got = retrieve_shot(index, story, shot).chosen
        fallback += attrs[got["clip_id"]]["motion"] == m
        fit_right += got["kind_fit"] == (attrs[got["clip_id"]]["species"] == s)
    for (s, m), shot in zip(pairs, story.shots):
        got = retrieve_shot(index, story, shot).chosen
        chosen = attrs[got["clip_id"]]
        fit_right += got["kind_fit"] == (chosen["species"] == s)
        ok_kind, ok_motion = chosen["species"] == s, chosen["motion"] == m
        both += ok_kind and ok_motion
        kind += ok_kind
        motion += ok_motion
        if not (ok_kind and ok_motion):
            misses.append((shot.prompt, chosen["species"], chosen["motion"]))
    n = max(1, len(pairs))
    return {"shots": len(pairs), "both": both / n, "motion": motion / n, "kind": kind / n, "misses": misses,
            "absent_shots": len(absent), "absent_motion": fallback / max(1, len(absent)),
            "kind_fit_right": fit_right / max(1, len(pairs) + len(absent))}
