"""Reindex cost: upsert of a corpus with 1% new clips vs a full rebuild of the same corpus.

    .venv/bin/python bench/reindex.py                 # ~1-2 min on 2 cores
    .venv/bin/python bench/reindex.py --real 1000 --synthetic 20000

Two rows, each timed in this run:
- "MiniLM": ``--real`` ToyWorld clips embedded by the bundled MiniLM, the real cost structure
  (embedding dominates a rebuild). Below the ANN threshold: FTS + BTree indexes only.
- "no-embed": ``--synthetic`` clips with precomputed random unit vectors (an encoder that looks
  vectors up), so only LanceDB work is timed: merge_insert + optimize vs create_table + building
  FTS, BTree and the IVF-PQ index (the table is above the ANN threshold).
Incremental = ``ClipIndex.upsert(corpus + 1% new)`` on an index holding the corpus; full =
``ClipIndex.rebuild(corpus + 1% new)``. Goal: incremental / full <= 0.05.
"""

import argparse
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import story_pipeline  # noqa: E402,F401  (offline HF env vars)
from story_pipeline.corpus.index import ClipIndex, ClipIndexConfig  # noqa: E402
from story_pipeline.eval.retrieval import toyworld_clip_rows  # noqa: E402
from story_pipeline.models.text_encoder import get_text_encoder  # noqa: E402


class RandomVectors:
    """Encoder stand-in: a fixed random unit vector per text (no model work)."""

    model_id = "bench-random-vectors"

    def __init__(self, dim=384):
        self.dim, self.calls, self.texts_encoded = dim, 0, 0

    def encode(self, texts):
        self.calls += 1
        self.texts_encoded += len(texts)
        v = np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(self.dim) for t in texts])
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)  # (N, dim)


def measure(name, n, encoder, config):
    clips, _ = toyworld_clip_rows(n, seed=0)
    new, _ = toyworld_clip_rows(max(1, n // 100), seed=0, start=n)
    grown = pa.concat_tables([clips, new])
    with tempfile.TemporaryDirectory() as tmp:
        index = ClipIndex(Path(tmp) / "inc", encoder=encoder, config=config)
        index.upsert(clips)  # the existing index (not timed)
        before = encoder.texts_encoded
        t0 = time.perf_counter()
        update = index.upsert(grown)
        inc_s = time.perf_counter() - t0
        inc_embedded = encoder.texts_encoded - before

        full = ClipIndex(Path(tmp) / "full", encoder=encoder, config=config)
        before = encoder.texts_encoded
        t0 = time.perf_counter()
        full.rebuild(grown)
        full_s = time.perf_counter() - t0
        full_embedded = encoder.texts_encoded - before
        assert update.added == new.num_rows and inc_embedded == new.num_rows
        ann = "yes" if full.has_ann_index() else "no"
    return name, n, new.num_rows, inc_s, inc_embedded, full_s, full_embedded, ann


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--real", type=int, default=1000, help="clips embedded with MiniLM")
    ap.add_argument("--synthetic", type=int, default=20000, help="clips with random vectors")
    args = ap.parse_args()

    rows = [measure("MiniLM", args.real, get_text_encoder(), ClipIndexConfig()),
            measure("no-embed", args.synthetic, RandomVectors(), ClipIndexConfig(ann_threshold=5000))]
    print("\nReindex with 1% new clips vs full rebuild (same final corpus, one run)")
    print(f"{'encoder':>9} | {'rows':>6} {'new':>4} | {'upsert s':>8} {'embedded':>8} | "
          f"{'rebuild s':>9} {'embedded':>8} | {'ANN idx':>7} | {'ratio':>6} | goal <= 0.05")
    for name, n, k, inc_s, inc_e, full_s, full_e, ann in rows:
        ratio = inc_s / full_s
        print(f"{name:>9} | {n:>6} {k:>4} | {inc_s:>8.2f} {inc_e:>8} | {full_s:>9.2f} {full_e:>8} | "
              f"{ann:>7} | {ratio:>6.3f} | {'MET' if ratio <= 0.05 else 'NOT MET'}")


if __name__ == "__main__":
    main()
