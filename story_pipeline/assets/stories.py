"""Per-story assets, built by a factory: one asset group per story file, statically partitioned
by that story's shot ids (docs/decisions/0001-story-partitions.md says why).

    <story>/story_shots     one validated shot record per partition, data version = content hash
    <story>/shot_retrievals top-k long-enough clips per shot and the chosen one (memoised)
    <story>/shot_depth      the chosen clip's depth: the shot's motion structure (memoised)
    <story>/rendered_shots  the shot rendered from its depth + prompt: mp4, GIF, frames (memoised)
    <story>/story_characters one record per character (partitions = token names): checked
                            reference images, a contact strip, data version = content hash
    <story>/character_timeinv the character learnt by TimeInv (+ LoRA), an MLflow run per training;
                            rendered_shots depend on the characters they name (StaticPartitionMapping)
"""

import dataclasses
import json
import logging
from dataclasses import asdict
from pathlib import Path

import dagster as dg

from story_pipeline.errors import StoryPipelineError
from story_pipeline.fsutil import atomic_write_text
from story_pipeline.previews import gif_data_uri, png_data_uri, reference_strip
from story_pipeline import progress as progress_hook
from story_pipeline.render.assemble import assemble_story_video
from story_pipeline.personalize.character import (
    character_dir, class_clip_hits, config_for, personalize_character_cached, prior_clips, shot_personalization,
)
from story_pipeline.depth.structure import load_motion_structure
from story_pipeline.render.shot import load_frames
from story_pipeline.render.checks import check_shot, healing_plan, render_with_healing
from story_pipeline.eval.video import get_judge
from story_pipeline.render.shot import render_dir, render_shot_cached
from story_pipeline.resources import (
    ClipIndexResource, DepthEstimatorResource, GeneratorResource, MLflowResource, PersonalizationResource,
    ShotChecksResource, StorageResource,
)
from story_pipeline.corpus.retrieve import ShotRetrieval, retrieval_dir, retrieve_shot_cached
from story_pipeline.depth.stage import depth_dir, shot_depth_cached
from story_pipeline.story.spec import Story, character_content_hash, shot_content_hash
from story_pipeline.story.images import load_reference_image
from story_pipeline.story.loading import load_story

from story_pipeline.assets.corpus import clip_index

log = logging.getLogger(__name__)


def group_name(story_id: str) -> str:
    return "story_" + story_id.replace("-", "_")  # Dagster group names: [A-Za-z0-9_]+


def _load_for_run(path: Path, shot_id: str) -> tuple[Story, object]:
    story = load_story(path)
    try:
        return story, story.shot(shot_id)
    except KeyError:
        raise dg.Failure(
            f"{path} no longer has shot {shot_id!r}; reload the definitions (Deployment → Reload) "
            "so the partitions match the story file."
        ) from None


def _character(story: Story, name: str):
    try:
        return next(c for c in story.characters if c.name == name)
    except StopIteration:
        raise dg.Failure(f"{story.source} no longer has character <{name}>; reload the definitions "
                         "(Deployment → Reload) so the partitions match the story file.") from None


def learned_characters(artifacts_dir: Path, story: Story, shot) -> dict[str, Path]:
    """token -> learnt concept file of the personalized characters the shot names; one sentence
    (a Failure) for a character that has not been learnt yet."""
    out = {}
    for c in story.characters_in(shot):
        if c.personalization == "none":
            continue
        pointer = character_dir(artifacts_dir, story.id) / f"{c.name}.json"
        if not pointer.exists():
            raise dg.Failure(f"Character {c.token} of shot {shot.id!r} is not personalized yet; materialize "
                             f"{story.id}/character_timeinv for partition {c.name!r} first (`story run` does it).")
        out[c.token] = Path(json.loads(pointer.read_text())["path"])
    return out


def _candidates_md(cands: list[dict], chosen_id: str) -> str:
    lines = ["| | clip | score | frames | s | caption |", "|---|---|---|---|---|---|"]
    for c in cands:
        mark = "**→**" if c["clip_id"] == chosen_id else ""
        lines.append(f"| {mark} | {c['clip_id']} | {c['score']:.3f} | {c['start_frame']}–{c['end_frame']} "
                     f"| {c['duration_s']:.1f} | {c['caption'].replace('|', '/')} |")
    return "\n".join(lines)


def build_story_assets(story_file: Path) -> list[dg.AssetsDefinition]:
    """The shot assets of one story file (empty list if the file cannot be loaded)."""
    story_file = Path(story_file).resolve()
    story = load_story(story_file, check_images=False)
    sid = story.id
    shots = dg.StaticPartitionsDefinition([s.id for s in story.shots])
    group = group_name(sid)

    @dg.asset(
        key=[sid, "story_shots"], partitions_def=shots, group_name=group, kinds={"yaml"},
        description=f"Validated shots of {story_file.name} ({story.title or sid}), one per partition.",
        metadata={"story_file": dg.MetadataValue.path(str(story_file))},
    )
    def story_shots(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
        story, shot = _load_for_run(story_file, context.partition_key)
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

    characters = dg.StaticPartitionsDefinition([c.name for c in story.characters]) if story.characters else None

    @dg.asset(
        key=[sid, "story_characters"], partitions_def=characters, group_name=group, kinds={"yaml"},
        description=f"Characters of {story_file.name}: token, class word, checked reference images.",
        metadata={"story_file": dg.MetadataValue.path(str(story_file))},
    )
    def story_characters(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
        story = load_story(story_file)  # checks every reference image (size, mode, decodability)
        character = _character(story, context.partition_key)
        digest = character_content_hash(story, character)
        images = [str(p) for p in story.reference_images(character)]
        out_dir = storage.settings().artifacts_dir / "story_characters" / story.id
        record = {"story": story.id, "token": character.token, "class_word": character.class_word,
                  "personalization": character.personalization, "images": images, "content_hash": digest,
                  "shots": [s.id for s in story.shots if character in story.characters_in(s)]}
        atomic_write_text(out_dir / f"{character.name}.json", json.dumps(record, indent=1, sort_keys=True))
        strip = reference_strip(images, out_dir / f"{character.name}.png")
        return dg.MaterializeResult(
            metadata={"token": character.token, "class_word": character.class_word,
                      "personalization": character.personalization, "images": len(images),
                      "shots": ", ".join(record["shots"]) or "(none)", "content_hash": digest,
                      "references": dg.MetadataValue.md(f"![references]({png_data_uri(strip)})")},
            data_version=dg.DataVersion(digest[:16]),
        )

    char_deps = []
    if characters:
        @dg.asset(
            key=[sid, "character_timeinv"], partitions_def=characters, group_name=group, kinds={"pytorch", "mlflow"},
            deps=[story_characters], pool="model_heavy",
            description="The character learnt from its reference images: TimeInv table (+ LoRA), tracked in MLflow.",
        )
        def character_timeinv(context: dg.AssetExecutionContext, storage: StorageResource,
                              generator: GeneratorResource, mlflow: MLflowResource,
                              personalization: PersonalizationResource, clip_index_store: ClipIndexResource,
                              depth_estimator: DepthEstimatorResource) -> dg.MaterializeResult:
            story = load_story(story_file)
            character = _character(story, context.partition_key)
            out_dir = character_dir(storage.settings().artifacts_dir, story.id)
            if character.personalization == "none":
                (out_dir / f"{character.name}.json").unlink(missing_ok=True)
                return dg.MaterializeResult(metadata={"method": "none", "note": "rendered with its class word"},
                                            data_version=dg.DataVersion("none"))
            config, prior = personalization.config(), None
            if config_for(character, config).uses_prior:  # regularisation: class clips
                hits = class_clip_hits(clip_index_store.open(), character.class_word, config.prior_clips)
                prior = prior_clips(hits, depth_estimator.load(), config.frames, config.size)
            r = personalize_character_cached(
                story, character, generator.load(), config, cache_dir=out_dir / ".memo", prior=prior,
                tracker=mlflow.tracker(), progress=lambda i, n: progress_hook.report("personalize", i, n),
                tags={"dagster.run_id": context.run_id, "dagster.partition": context.partition_key,
                      "story": story.id, "token": character.token})
            atomic_write_text(out_dir / f"{character.name}.json", json.dumps(
                {"path": str(r.path), "token": character.token, "metrics": r.metrics, "run_url": r.run_url}, indent=1))
            m = r.metrics
            return dg.MaterializeResult(
                metadata={"method": character.personalization, "steps": m["steps"], "sem": round(m["sem"], 4),
                          "id": round(m["id"], 4), "final_loss": round(m["final_loss"], 4),
                          "train_seconds": round(m["train_seconds"], 1), "cache_hit": r.cache_hit,
                          "trained": r.trained, "concept": dg.MetadataValue.path(str(r.path)),
                          "prior_clips": ", ".join(prior.ids) if prior is not None else "none",
                          **({"mlflow_run": dg.MetadataValue.url(r.run_url)} if r.run_url else {})},
                data_version=dg.DataVersion(r.path.stem),
            )

        shots_of = {c.name: {s.id for s in story.shots if c in story.characters_in(s)} for c in story.characters}
        char_deps = [dg.AssetDep(character_timeinv, partition_mapping=dg.StaticPartitionMapping(
            {name: ids for name, ids in shots_of.items() if ids}))] if any(shots_of.values()) else []

    @dg.asset(
        key=[sid, "shot_retrievals"], partitions_def=shots, group_name=group, kinds={"lancedb"},
        deps=[story_shots, clip_index],
        description="Top-k corpus clips long enough for the shot (hybrid search), and the chosen one.",
    )
    def shot_retrievals(context: dg.AssetExecutionContext, storage: StorageResource,
                        clip_index_store: ClipIndexResource) -> dg.MaterializeResult:
        story, shot = _load_for_run(story_file, context.partition_key)
        art = retrieval_dir(storage.settings().artifacts_dir, story.id)
        r = retrieve_shot_cached(clip_index_store.open(), story, shot, cache_dir=art / ".memo")
        out = art / f"{shot.id}.json"
        atomic_write_text(out, r.to_json())
        chosen = r.chosen
        return dg.MaterializeResult(
            metadata={"query": r.query, "chosen_clip": chosen["clip_id"], "chosen_caption": chosen["caption"],
                      "span": f"{chosen['start_frame']}–{chosen['end_frame']}", "score": float(chosen["score"]),
                      "pinned": r.pinned, "cache_hit": r.cache_hit, "needed_seconds": r.needed_seconds,
                      "candidates": dg.MetadataValue.md(_candidates_md(r.candidates, chosen["clip_id"])),
                      "retrieval": dg.MetadataValue.path(str(out))},
            data_version=dg.DataVersion(r.memo_key or chosen["clip_id"]),
        )

    @dg.asset(
        key=[sid, "shot_depth"], partitions_def=shots, group_name=group, kinds={"pytorch", "safetensors"},
        deps=[shot_retrievals],
        description="Per-frame depth of the chosen clip span, normalised to [-1, 1]: the shot's motion structure.",
    )
    def shot_depth(context: dg.AssetExecutionContext, storage: StorageResource,
                   depth_estimator: DepthEstimatorResource) -> dg.MaterializeResult:
        story, shot = _load_for_run(story_file, context.partition_key)
        settings = story.resolved(shot)
        art = storage.settings().artifacts_dir
        retrieval = ShotRetrieval.from_json((retrieval_dir(art, story.id) / f"{shot.id}.json").read_text())
        width, height = settings.resolution
        d = shot_depth_cached(retrieval, settings.frames, (height, width), depth_estimator.load(),
                              cache_dir=depth_dir(art, story.id) / ".memo",
                              normalise=depth_estimator.normalise)
        atomic_write_text(depth_dir(art, story.id) / f"{shot.id}.json",  # the current depth of the shot
                          json.dumps({"depth": str(d.depth_path), "preview": str(d.preview_path)}))
        return dg.MaterializeResult(
            metadata={"clip": d.metadata["clip_id"], "frame_indices": str(d.metadata["frame_indices"]),
                      "model_id": d.metadata["model_id"], "normalisation": d.metadata["normalisation"],
                      "cache_hit": d.cache_hit, "estimator_calls": d.estimator_calls,
                      "depth": dg.MetadataValue.path(str(d.depth_path)),
                      "preview_gif": dg.MetadataValue.path(str(d.preview_path)),
                      "preview": dg.MetadataValue.md(f"![depth]({gif_data_uri(d.preview_path)})")},
            data_version=dg.DataVersion(d.depth_path.stem),
        )

    check_names = ("depth_adherence", "id", "sem", "flicker")

    @dg.asset(
        key=[sid, "rendered_shots"], partitions_def=shots, group_name=group, kinds={"pytorch", "mp4"},
        deps=[shot_depth, *char_deps], pool="model_heavy",
        check_specs=[dg.AssetCheckSpec(name, asset=dg.AssetKey([sid, "rendered_shots"]),
                                       description=CHECK_DESCRIPTIONS[name]) for name in check_names],
        description="The shot rendered by the video generator from its depth and prompt (mp4 + GIF), "
                    "checked, and re-rendered with another seed or clip when a check fails.",
    )
    def rendered_shots(context: dg.AssetExecutionContext, storage: StorageResource, generator: GeneratorResource,
                       depth_estimator: DepthEstimatorResource, shot_checks: ShotChecksResource) -> dg.MaterializeResult:
        story, shot = _load_for_run(story_file, context.partition_key)
        art = storage.settings().artifacts_dir
        pointer = depth_dir(art, story.id) / f"{shot.id}.json"
        if not pointer.exists():
            raise dg.Failure(f"Shot {shot.id!r} has no depth yet ({pointer} is missing); materialize "
                             f"{sid}/shot_depth for this partition first.")
        retrieval = ShotRetrieval.from_json((retrieval_dir(art, story.id) / f"{shot.id}.json").read_text())
        gen = generator.load()
        learned = learned_characters(art, story, shot)
        personal = shot_personalization(story, shot, gen, learned)
        settings = story.resolved(shot)
        depth_paths = {0: Path(json.loads(pointer.read_text())["depth"])}

        def depth_of(cand: int) -> Path:  # the next candidates' depth only when an attempt needs it
            if cand not in depth_paths:
                alt = dataclasses.replace(retrieval, chosen=retrieval.candidates[cand])
                depth_paths[cand] = shot_depth_cached(
                    alt, settings.frames, (settings.resolution[1], settings.resolution[0]), depth_estimator.load(),
                    cache_dir=depth_dir(art, story.id) / ".memo", normalise=depth_estimator.normalise).depth_path
            return depth_paths[cand]

        def render(seed: int, cand: int):
            r = render_shot_cached(story, shot, depth_of(cand), gen, cache_dir=render_dir(art, story.id) / ".memo",
                                   personalization=personal, overrides={"seed": seed},
                                   progress=lambda i, n: progress_hook.report("sampling", i, n))
            clip = retrieval.chosen if cand == 0 else retrieval.candidates[cand]
            return r, clip["clip_id"], depth_of(cand)

        refs = [load_reference_image(p) for c in story.characters_in(shot) if c.token in learned
                for p in story.reference_images(c)]
        text = story.with_class_words(shot.prompt)
        thresholds = shot_checks.thresholds()

        def check(r, depth_path):
            return check_shot(load_frames(r.frames_path), load_motion_structure(depth_path).depth, text, refs,
                              get_judge(), thresholds)

        candidates = 1 if retrieval.pinned else len(retrieval.candidates)
        best, attempts = render_with_healing(healing_plan(settings.seed, candidates, shot_checks.attempts),
                                             render, check)
        r = best.rendered
        atomic_write_text(render_dir(art, story.id) / f"{shot.id}.json", json.dumps(
            {**r.metadata, "video": str(r.video_path), "gif": str(r.gif_path), "frames_path": str(r.frames_path),
             "depth": str(depth_of(best.candidate)), "clip_id": best.clip_id, "checks": best.report.values,
             "failed": best.report.failed}, indent=1, sort_keys=True))
        m = r.metadata
        tried = "\n".join(["| attempt | seed | clip | " + " | ".join(check_names) + " | failed |",
                           "|---|---|---|" + "---|" * len(check_names) + "---|"] + [
            f"| {i + 1}{' **kept**' if a is best else ''} | {a.seed} | {a.clip_id} | "
            + " | ".join(f"{a.report.values[k]:.3f}" if k in a.report.values else "-" for k in check_names)
            + f" | {', '.join(a.report.failed) or '-'} |" for i, a in enumerate(attempts)])
        limits = asdict(thresholds)
        checks = [dg.AssetCheckResult(
            check_name=k, passed=k not in best.report.failed, asset_key=dg.AssetKey([sid, "rendered_shots"]),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"value": best.report.values.get(k, float("nan")), "threshold": limits[k],
                      "applies": k in best.report.values}) for k in check_names]
        return dg.MaterializeResult(
            metadata={"prompt": m["render_prompt"], "personalization": m["personalization"] or "none", "seed": m["seed"],
                      "tau": m["tau"], "strength": m["strength"], "guidance": m["guidance"], "steps": m["steps"],
                      "sampler": m["sampler"], "structure_steps": m["structure_steps"], "frames": m["frames"],
                      "fps": m["fps"], "size": f"{m['width']}x{m['height']}", "model_id": m["model_id"],
                      "backend": m["backend"], "render_seconds": round(m["seconds"], 2),
                      "clip": best.clip_id, "attempts": len(attempts), "checks_passed": best.report.passed,
                      "failed_checks": ", ".join(best.report.failed) or "none",
                      "cache_hit": all(a.rendered.cache_hit for a in attempts),
                      "generator_calls": sum(a.rendered.generator_calls for a in attempts),
                      "attempt_log": dg.MetadataValue.md(tried),
                      "video": dg.MetadataValue.path(str(r.video_path)),
                      "preview": dg.MetadataValue.md(f"![shot]({gif_data_uri(r.gif_path)})")},
            data_version=dg.DataVersion(r.metadata["memo_key"]),
            check_results=checks,
        )

    @dg.asset(
        key=[sid, "story_video"], group_name=group, kinds={"mp4"}, deps=[rendered_shots],
        description=f"The story video of {story_file.name}: rendered shots in order, title card, storyboard.",
    )
    def story_video(context: dg.AssetExecutionContext, storage: StorageResource,
                    shot_checks: ShotChecksResource) -> dg.MaterializeResult:
        story = load_story(story_file)
        out = assemble_story_video(story, storage.settings(), crossfade_frames=shot_checks.crossfade_frames)
        flagged = ", ".join(f"{k} ({', '.join(v)})" for k, v in out.flagged.items()) or "none"
        return dg.MaterializeResult(
            metadata={"video": dg.MetadataValue.path(str(out.video)), "seconds": round(out.seconds, 2),
                      "frames": out.frames, "size": f"{out.size[1]}x{out.size[0]}", "flagged_shots": flagged,
                      "storyboard": dg.MetadataValue.path(str(out.storyboard)),
                      "storyboard_preview": dg.MetadataValue.md(f"![storyboard]({png_data_uri(out.storyboard)})"),
                      "preview": dg.MetadataValue.md(f"![story]({gif_data_uri(out.gif)})")},
        )

    return [story_shots, shot_retrievals, shot_depth, rendered_shots, story_video] + (
        [story_characters, character_timeinv] if characters else [])


CHARACTER_ASSETS = ("story_characters", "character_timeinv")  # partitioned by character
STORY_ASSETS = ("story_video",)  # one per story (not partitioned)
CHECK_DESCRIPTIONS = {
    "depth_adherence": "si-RMSE of the depth net on the frames vs the conditioning depth is below the threshold",
    "id": "toy-CLIP similarity of the frames to the shot's characters' reference images is above the threshold",
    "sem": "toy-CLIP similarity of the frames to the prompt (class words) is above the threshold",
    "flicker": "frame-to-frame change of pixels whose depth did not move is below the threshold",
}


def shot_assets(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """The story assets partitioned by shot id."""
    return [a for a in assets if a.key.path[-1] not in CHARACTER_ASSETS + STORY_ASSETS]


def video_assets(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """The story assets with one partition per story (the assembled video)."""
    return [a for a in assets if a.key.path[-1] in STORY_ASSETS]


def character_assets(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """The story assets partitioned by character name."""
    return [a for a in assets if a.key.path[-1] in CHARACTER_ASSETS]


def all_story_assets(story_files: list[Path]) -> list[dg.AssetsDefinition]:
    """Assets for every loadable story; a broken or duplicate story is skipped with a warning
    (the code location must still load; `story validate FILE` shows the problem)."""
    assets, seen = [], {}
    for f in story_files:
        try:
            defs = build_story_assets(f)
        except StoryPipelineError as e:  # one bad story file must not hide the others
            log.warning("Skipping story %s: %s", f, e)
            continue
        sid = defs[0].key.path[0]
        if sid in seen:
            log.warning("Skipping story %s: its id %r is already used by %s", f, sid, seen[sid])
            continue
        seen[sid] = f
        assets += defs
    return assets
