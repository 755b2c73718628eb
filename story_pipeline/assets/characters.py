"""The assets of one character of a story (built by ``assets/stories.py`` for every character).

    <story>/characters/<name>_references  checked reference images, a contact strip, data version = content hash
    <story>/characters/<name>_timeinv     the character learnt by TimeInv (+ LoRA), an MLflow run per training
"""

import json
from pathlib import Path

import dagster as dg

from story_pipeline import progress as progress_hook
from story_pipeline.assets._story_common import character_key, character_of, load_for_run, user_errors
from story_pipeline.fsutil import atomic_write_text
from story_pipeline.previews import png_data_uri, reference_strip
from story_pipeline.resources import (
    ClipIndexResource, DepthEstimatorResource, GeneratorResource, MLflowResource, PersonalizationResource,
    StorageResource,
)


def character_asset_defs(story_file: Path, story, group: str, the_character) -> list[dg.AssetsDefinition]:
    """references and timeinv of ``the_character`` of the story in ``story_file``."""
    sid, name = story.id, the_character.name

    @dg.asset(
        key=character_key(sid, name, "references"), group_name=group, kinds={"yaml"},
        description=f"Character {the_character.token} of {story_file.name}: class word, checked reference images.",
        metadata={"story_file": dg.MetadataValue.path(str(story_file))},
    )
    def references(storage: StorageResource) -> dg.MaterializeResult:
        from story_pipeline.story.spec import character_content_hash

        story = load_for_run(story_file)  # checks every reference image (size, mode, decodability)
        character = character_of(story, name)
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

    @dg.asset(
        key=character_key(sid, name, "timeinv"), group_name=group, kinds={"pytorch", "mlflow"},
        deps=[references], pool="model_heavy",
        description="The character learnt from its reference images: TimeInv table (+ LoRA), tracked in MLflow.",
    )
    def timeinv(context: dg.AssetExecutionContext, storage: StorageResource,
                          generator: GeneratorResource, mlflow: MLflowResource,
                          personalization: PersonalizationResource, clip_index_store: ClipIndexResource,
                          depth_estimator: DepthEstimatorResource) -> dg.MaterializeResult:
        from story_pipeline.personalize.character import learn_character

        story = load_for_run(story_file)
        character = character_of(story, name)
        with user_errors():
            r, prior = learn_character(
                storage.settings().artifacts_dir, story, character, generator.identity(), personalization.config(),
                load_generator=generator.load, open_index=clip_index_store.open, load_estimator=depth_estimator.load,
                tracker=mlflow.tracker(),
                progress=lambda i, n: progress_hook.report("personalize", i, n),
                tags={"dagster.run_id": context.run_id, "dagster.asset": context.asset_key.to_user_string(),
                      "story": story.id, "character": character.name, "token": character.token})
        if r is None:
            return dg.MaterializeResult(metadata={"method": "none", "note": "rendered with its class word"},
                                        data_version=dg.DataVersion("none"))
        m = r.metrics
        return dg.MaterializeResult(
            metadata={"method": character.personalization, "steps": m["steps"], "sem": round(m["sem"], 4),
                      "id": round(m["id"], 4), "final_loss": round(m["final_loss"], 4),
                      **({"probe_loss": f"{m['eval_loss_start']:.4f} -> {m['eval_loss_end']:.4f}"}
                         if m.get("eval_loss_start") is not None else {}),
                      "train_seconds": round(m["train_seconds"], 1), "cache_hit": r.cache_hit,
                      "trained": r.trained, "concept": dg.MetadataValue.path(str(r.path)),
                      "prior_clips": ", ".join(prior.ids) if prior is not None else "none",
                      **({"mlflow_run": dg.MetadataValue.url(r.run_url)} if r.run_url else {})},
            data_version=dg.DataVersion(r.path.stem),
        )

    return [references, timeinv]
