"""Retrieval evaluation on ToyWorld captions, without rendering a single frame.

    from story_pipeline.eval.retrieval import toyworld_clip_rows, paraphrased_queries, recall_at_k
    clips, attrs = toyworld_clip_rows(200, seed=0)       # pyarrow.Table with the ingest columns
    index.upsert(clips)
    r = recall_at_k(index, paraphrased_queries(120, seed=1), attrs, k=5)

A query (species, motion) is answered correctly at k when one of the top-k clips shows that
species doing that motion. Queries use ToyWorld's held-out phrasings (QUERY_* tables), which
differ from the caption phrasings, so a keyword match alone does not score.
"""

import hashlib
import itertools
import random

import pyarrow as pa

from story_pipeline.corpus.index import CLIP_FIELDS
from story_pipeline.toyworld.captions import make_caption, paraphrase_query
from story_pipeline.toyworld.world import ACCESSORIES, CORPUS_COLOURS, MOTIONS, PATTERNS, SETTINGS, SPECIES


def toyworld_attributes(n: int, seed: int, start: int = 0) -> list[dict]:
    """``n`` attribute dicts cycling evenly over species x motion; the rest drawn at random.

    ``start`` offsets the cycle and the per-clip seeds so extra clips can be appended later.
    """
    pairs = list(itertools.product(SPECIES, MOTIONS))
    random.Random(seed).shuffle(pairs)
    out = []
    for i in range(start, start + n):
        rng = random.Random(seed * 1_000_003 + i)
        species, motion = pairs[i % len(pairs)]
        colour = rng.choice(CORPUS_COLOURS)
        pattern = rng.choice(PATTERNS)
        accessory = rng.choice(ACCESSORIES)
        colour2 = colour if pattern == "plain" and accessory == "none" else rng.choice(
            [c for c in CORPUS_COLOURS if c != colour])
        out.append(dict(species=species, colour=colour, colour2=colour2, pattern=pattern,
                        accessory=accessory, motion=motion, setting=rng.choice(SETTINGS), seed=i))
    return out


def clip_rows(attrs: list[dict], seed: int = 0, source: str = "toyworld", fps: float = 12.0) -> pa.Table:
    """The ingest-schema table for captioned clips that were never rendered (paths are placeholders).

    Clip lengths cycle over 16/32/48 frames (1.3/2.7/4 s) so duration filters have something to cut.
    """
    rows = {f.name: [] for f in CLIP_FIELDS}
    for a in attrs:
        cid = f"tw{a['seed']:06d}"
        caption = make_caption(a, random.Random(seed * 7919 + a["seed"]))
        num_frames = (16, 32, 48)[a["seed"] % 3]
        for name, value in (
            ("clip_id", cid), ("video_id", cid), ("path", f"/toyworld/{source}/clips/{cid}.mp4"),
            ("caption", caption), ("start_frame", 0), ("end_frame", num_frames), ("num_frames", num_frames),
            ("fps", fps), ("width", 128), ("height", 128), ("duration_s", num_frames / fps),
            ("content_hash", hashlib.sha256(f"{cid}|{caption}|{num_frames}".encode()).hexdigest()),
            ("source", source),
        ):
            rows[name].append(value)
    return pa.table(rows, schema=pa.schema(CLIP_FIELDS))


def toyworld_clip_rows(n: int, seed: int = 0, start: int = 0) -> tuple[pa.Table, dict[str, dict]]:
    """(clips table, {clip_id: attributes}) for ``n`` ToyWorld clips."""
    attrs = toyworld_attributes(n, seed, start)
    clips = clip_rows(attrs, seed)
    return clips, dict(zip(clips["clip_id"].to_pylist(), attrs))


def paraphrased_queries(n: int, seed: int = 1) -> list[tuple[str, str, str]]:
    """``n`` (query, species, motion) triples, cycling over every species x motion pair."""
    pairs = list(itertools.product(SPECIES, MOTIONS))
    random.Random(seed).shuffle(pairs)
    rng = random.Random(seed)
    return [(paraphrase_query(s, m, rng), s, m) for s, m in (pairs[i % len(pairs)] for i in range(n))]


def recall_at_k(index, queries, attrs: dict[str, dict], k: int = 5, **search_kwargs) -> tuple[float, list]:
    """(fraction of queries with a right species+motion clip in the top k, list of misses)."""
    from story_pipeline.corpus.search import search

    misses = []
    for query, species, motion in queries:
        hits = search(index, query, k=k, **search_kwargs)
        if not any(attrs[h.clip_id]["species"] == species and attrs[h.clip_id]["motion"] == motion for h in hits):
            misses.append((query, species, motion, [h.caption for h in hits[:3]]))
    return 1.0 - len(misses) / max(1, len(queries)), misses
