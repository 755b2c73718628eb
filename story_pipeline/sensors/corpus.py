import json

import dagster as dg

from story_pipeline.assets.corpus import clip_corpus, clip_index
from story_pipeline.resources import StorageResource

reindex_job = dg.define_asset_job(
    "reindex_corpus",
    selection=[clip_corpus, clip_index],
    description="Ingest the corpus folder and upsert the LanceDB clip index (only new/changed clips are embedded).",
)

# Listings larger than this are remembered by digest only (the cursor lives in the instance DB).
_MAX_LISTING_IN_CURSOR = 20_000


def _last_ingested_fingerprint(instance) -> str | None:
    event = instance.get_latest_materialization_event(clip_corpus.key)
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get("corpus_fingerprint")
    return getattr(value, "value", None)


@dg.sensor(
    job=reindex_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a reindex when files under the corpus folder are added, changed or removed.",
)
def corpus_reindex_sensor(context: dg.SensorEvaluationContext, storage: StorageResource):
    from story_pipeline.corpus.build import corpus_fingerprint, diff_fingerprints, fingerprint_digest

    corpus_dir = storage.settings().corpus_dir
    listing = corpus_fingerprint(corpus_dir)
    digest = fingerprint_digest(listing)
    old = json.loads(context.cursor) if context.cursor else None
    cursor = json.dumps({"digest": digest, "listing": listing if len(listing) <= _MAX_LISTING_IN_CURSOR else None})
    if old is not None and old["digest"] == digest:
        return dg.SkipReason(f"No change in the {len(listing)} corpus files under {corpus_dir}.")
    if old is None and _last_ingested_fingerprint(context.instance) == digest:
        context.update_cursor(cursor)
        return dg.SkipReason(f"The corpus under {corpus_dir} is unchanged since clip_corpus was last materialized.")
    diff = diff_fingerprints(old.get("listing") or {}, listing) if old else {"added": sorted(listing)}
    counts = {k: len(v) for k, v in diff.items()}
    context.update_cursor(cursor)
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "first look"
    context.log.info(f"Corpus changed ({summary}); requesting a reindex.")
    # No run_key: the cursor already dedupes, and a corpus that returns to an earlier state
    # (a file added, then removed) must be reindexed again.
    return dg.RunRequest(tags={"story/reindex_reason": summary[:200], "story/corpus_fingerprint": digest})


def reindex_schedule(cron: str = "0 3 * * *") -> dg.ScheduleDefinition:
    """The nightly reindex (``Settings.reindex_cron``, STORY_REINDEX_CRON)."""
    return dg.ScheduleDefinition(
        name="nightly_reindex",
        job=reindex_job,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Reindexes the corpus every night (03:00 by default; STORY_REINDEX_CRON overrides).",
    )
