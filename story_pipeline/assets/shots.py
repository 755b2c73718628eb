"""The assets of one shot of a story (built by ``assets/stories.py`` for every shot).

    <story>/shots/<shot>_spec       the validated shot record, data version = content hash
    <story>/shots/<shot>_retrieval  top-k long-enough clips and the chosen one (memoised)
    <story>/shots/<shot>_depth      the chosen clip's depth: the shot's motion structure (memoised)
    <story>/shots/<shot>_render     the shot rendered from its depth + prompt: mp4, GIF, frames (memoised),
                                    checked and healed; depends on the characters it names
"""

import json
from dataclasses import asdict
from pathlib import Path

import dagster as dg

from story_pipeline import progress as progress_hook
from story_pipeline.assets._story_common import load_for_run, shot_key, shot_of, user_errors
from story_pipeline.assets.corpus import clip_index
from story_pipeline.fsutil import atomic_write_text
from story_pipeline.previews import gif_data_uri
from story_pipeline.resources import (
    ClipIndexResource, DepthEstimatorResource, GeneratorResource, ShotChecksResource, StorageResource,
)

CHECK_NAMES = ("depth_adherence", "id", "sem", "flicker", "kind")
CHECK_DESCRIPTIONS = {
    "depth_adherence": "si-RMSE of the depth net on the frames vs the conditioning depth is below the threshold",
    "id": "toy-CLIP similarity of the frames to the shot's characters' reference images is above the threshold",
    "sem": "toy-CLIP similarity of the frames to the prompt (class words) is above the threshold",
    "flicker": "frame-to-frame change of pixels whose depth did not move is below the threshold",
    "kind": "toy-CLIP recognises the shot's characters' kind (class word) in the frames",
}


def _candidates_md(cands: list[dict], chosen_id: str) -> str:
    lines = ["| | clip | score | frames | s | caption |", "|---|---|---|---|---|---|"]
    for c in cands:
        mark = "**→**" if c["clip_id"] == chosen_id else ""
        w = c.get("window") or {}
        of = f" of {w['clip_start_frame']}–{w['clip_end_frame']}" if w else ""
        lines.append(f"| {mark} | {c['clip_id']} | {c['score']:.3f} | {c['start_frame']}–{c['end_frame']}{of} "
                     f"| {c['duration_s']:.1f} | {c['caption'].replace('|', '/')} |")
    return "\n".join(lines)


def _attempts_md(best, attempts) -> str:
    rows = ["| attempt | seed | clip | " + " | ".join(CHECK_NAMES) + " | failed |",
            "|---|---|---|" + "---|" * len(CHECK_NAMES) + "---|"]
    for i, a in enumerate(attempts):
        values = " | ".join(f"{a.report.values[k]:.3f}" if k in a.report.values else "-" for k in CHECK_NAMES)
        rows.append(f"| {i + 1}{' **kept**' if a is best else ''} | {a.seed} | {a.clip_id} | {values} "
                    f"| {', '.join(a.report.failed) or '-'} |")
    return "\n".join(rows)


def shot_asset_defs(story_file: Path, story, group: str, the_shot, char_deps: list,
                    plan_deps: list = ()) -> list[dg.AssetsDefinition]:
    """spec, retrieval, depth and render of ``the_shot`` of the story in ``story_file`` (``char_deps``: the
    timeinv assets of the characters it names; ``plan_deps``: the story_plan asset of a script)."""
    sid, shot_id = story.id, the_shot.id

    @dg.asset(
        key=shot_key(sid, shot_id, "spec"), group_name=group, kinds={"yaml"}, deps=list(plan_deps),
        description=f"Shot {shot_id!r} of {story_file.name} ({story.title or sid}), validated.",
        metadata={"story_file": dg.MetadataValue.path(str(story_file))},
    )
    def spec(storage: StorageResource) -> dg.MaterializeResult:
        from story_pipeline.story.spec import shot_content_hash

        story = load_for_run(story_file)
        shot = shot_of(story, story_file, shot_id)
        settings = story.resolved(shot)
        digest = shot_content_hash(story, shot)
        record = {"story": story.id, "shot": shot.id, "prompt": shot.prompt, "query": story.shot_query(shot),
                  "clip": shot.clip, "settings": settings.model_dump(mode="json"), "content_hash": digest,
                  "characters": [c.token for c in story.characters_in(shot)], "story_file": str(story_file)}
        out = storage.settings().artifacts_dir / "story_shots" / story.id / f"{shot.id}.json"
        atomic_write_text(out, json.dumps(record, indent=1, sort_keys=True))
        return dg.MaterializeResult(
            metadata={"prompt": shot.prompt, "query": record["query"], "frames": settings.frames,
                      "fps": settings.fps, "tau": settings.tau, "content_hash": digest,
                      "record": dg.MetadataValue.path(str(out))},
            data_version=dg.DataVersion(digest[:16]),
        )

    @dg.asset(
        key=shot_key(sid, shot_id, "retrieval"), group_name=group, kinds={"lancedb"},
        deps=[spec, clip_index],
        description="Top-k corpus clips long enough for the shot (hybrid search), and the chosen one.",
    )
    def retrieval(storage: StorageResource,
                        clip_index_store: ClipIndexResource) -> dg.MaterializeResult:
        from story_pipeline.corpus.retrieve import retrieval_dir, retrieve_shot_cached

        story = load_for_run(story_file)
        shot = shot_of(story, story_file, shot_id)
        art = retrieval_dir(storage.settings().artifacts_dir, story.id)
        with user_errors():
            r = retrieve_shot_cached(clip_index_store.open(), story, shot, cache_dir=art / ".memo")
        out = art / f"{shot.id}.json"
        atomic_write_text(out, r.to_json())
        chosen = r.chosen
        return dg.MaterializeResult(
            metadata={"query": r.query, "chosen_clip": chosen["clip_id"], "chosen_caption": chosen["caption"],
                      "span": f"{chosen['start_frame']}–{chosen['end_frame']}", "score": float(chosen["score"]),
                      "why": "pinned in the story" if r.pinned else r.reason,
                      "kind_fit": chosen.get("kind_fit", "no character"),
                      "window": (chosen.get("window") or {}).get("why", "whole clip"),
                      "pinned": r.pinned, "cache_hit": r.cache_hit, "needed_seconds": r.needed_seconds,
                      "candidates": dg.MetadataValue.md(_candidates_md(r.candidates, chosen["clip_id"])),
                      "retrieval": dg.MetadataValue.path(str(out))},
            data_version=dg.DataVersion(r.memo_key or chosen["clip_id"]),
        )

    @dg.asset(
        key=shot_key(sid, shot_id, "depth"), group_name=group, kinds={"pytorch", "safetensors"},
        deps=[retrieval],
        description="Per-frame depth of the chosen clip span, normalised to [-1, 1]: the shot's motion structure.",
    )
    def depth(storage: StorageResource,
                   depth_estimator: DepthEstimatorResource) -> dg.MaterializeResult:
        from story_pipeline.depth.stage import shot_depth_for

        story = load_for_run(story_file)
        shot = shot_of(story, story_file, shot_id)
        with user_errors():
            d = shot_depth_for(storage.settings().artifacts_dir, story, shot, depth_estimator.load,
                               depth_estimator.normalise)
        return dg.MaterializeResult(
            metadata={"clip": d.metadata["clip_id"], "frame_indices": str(d.metadata["frame_indices"]),
                      "model_id": d.metadata["model_id"], "normalisation": d.metadata["normalisation"],
                      "cache_hit": d.cache_hit, "estimator_calls": d.estimator_calls,
                      "depth": dg.MetadataValue.path(str(d.depth_path)),
                      "preview_gif": dg.MetadataValue.path(str(d.preview_path)),
                      "preview": dg.MetadataValue.md(f"![depth]({gif_data_uri(d.preview_path)})")},
            data_version=dg.DataVersion(d.depth_path.stem),
        )

    rendered_key = shot_key(sid, shot_id, "render")

    @dg.asset(
        key=rendered_key, group_name=group, kinds={"pytorch", "mp4"},
        deps=[depth, *char_deps], pool="model_heavy",
        check_specs=[dg.AssetCheckSpec(name, asset=rendered_key, description=CHECK_DESCRIPTIONS[name])
                     for name in CHECK_NAMES],
        description="The shot rendered by the video generator from its depth and prompt (mp4 + GIF), "
                    "checked, and re-rendered with another seed or clip when a check fails.",
    )
    def render(storage: StorageResource, generator: GeneratorResource,
                       depth_estimator: DepthEstimatorResource, shot_checks: ShotChecksResource) -> dg.MaterializeResult:
        from story_pipeline.render.stage import render_shot_checked

        story = load_for_run(story_file)
        shot = shot_of(story, story_file, shot_id)
        thresholds = shot_checks.thresholds()
        with user_errors():
            r = render_shot_checked(storage.settings().artifacts_dir, story, shot, generator.identity(),
                                    depth_estimator.load, depth_estimator.normalise, thresholds,
                                    shot_checks.heal_attempts(), load_generator=generator.load,
                                    progress=lambda i, n: progress_hook.report("sampling", i, n))
        best, attempts, m = r.best, r.attempts, r.best.rendered.metadata
        limits = asdict(thresholds)
        checks = [dg.AssetCheckResult(
            check_name=k, passed=k not in best.report.failed, asset_key=rendered_key,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"value": best.report.values.get(k, float("nan")), "threshold": limits[k],
                      "applies": k in best.report.values}) for k in CHECK_NAMES]
        return dg.MaterializeResult(
            metadata={"prompt": m["render_prompt"], "personalization": m["personalization"] or "none", "seed": m["seed"],
                      "tau": m["tau"], "strength": m["strength"], "structure_guidance": r.guidance, "guidance": m["guidance"], "steps": m["steps"],
                      "sampler": m["sampler"], "structure_steps": m["structure_steps"], "frames": m["frames"],
                      "fps": m["fps"], "size": f"{m['width']}x{m['height']}", "model_id": m["model_id"],
                      "backend": m["backend"], "render_seconds": round(m["seconds"], 2),
                      "clip": best.clip_id, "attempts": len(attempts), "checks_passed": best.report.passed,
                      "failed_checks": ", ".join(best.report.failed) or "none",
                      "cache_hit": all(a.rendered.cache_hit for a in attempts),
                      "generator_calls": sum(a.rendered.generator_calls for a in attempts),
                      "attempt_log": dg.MetadataValue.md(_attempts_md(best, attempts)),
                      "video": dg.MetadataValue.path(str(best.rendered.video_path)),
                      "preview": dg.MetadataValue.md(f"![shot]({gif_data_uri(best.rendered.gif_path)})")},
            data_version=dg.DataVersion(m["memo_key"]),
            check_results=checks,
        )

    return [spec, retrieval, depth, render]
