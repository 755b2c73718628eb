"""Ingestion throughput (clips/s) and caption embedding throughput (captions/s).

    .venv/bin/python bench/ingest.py                  # ~1 min on 2 cores (first run renders clips)
    .venv/bin/python bench/ingest.py --clips 48 --captions 1000

- ingest: ``story_pipeline.corpus.ingest.ingest_corpus`` over a rendered ToyWorld corpus (H.264 mp4,
  128x128, 32 frames; rendered once and cached in data/bench/ingest_corpus/): header checks,
  decord probe and PySceneDetect shot split per video. Timed with and without shot splitting.
- embed: ``TextEncoder.encode`` over ToyWorld captions at several batch sizes (MiniLM, CPU).
- index: ``ClipIndex.upsert`` of the ingested clips into a fresh table (embedding + LanceDB).
All figures come from this one run; other processes on the machine slow every row alike.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import story_pipeline  # noqa: E402,F401  (offline HF env vars)
from story_pipeline.eval.retrieval import toyworld_clip_rows  # noqa: E402
from story_pipeline.models.text_encoder import TextEncoder, TextEncoderConfig, get_text_encoder  # noqa: E402

CACHE = Path(__file__).resolve().parents[1] / "data" / "bench"


def bench_ingest(n_clips: int):
    from story_pipeline.corpus.index import ClipIndex
    from story_pipeline.corpus.ingest import ingest_corpus
    from story_pipeline.toyworld.corpus import write_toyworld_corpus

    corpus = CACHE / "ingest_corpus"
    t0 = time.perf_counter()
    write_toyworld_corpus(corpus, n=n_clips, seed=0)
    render_s = time.perf_counter() - t0
    rows = []
    for split in (True, False):
        t0 = time.perf_counter()
        result = ingest_corpus(corpus, split=split)
        s = time.perf_counter() - t0
        assert not result.rejected, result.rejected[:3]
        rows.append((f"ingest_corpus(split={split})", result.clips.num_rows, s))
    with tempfile.TemporaryDirectory() as tmp:
        index = ClipIndex(Path(tmp) / "lancedb", encoder=get_text_encoder())
        t0 = time.perf_counter()
        index.upsert(result.clips)
        rows.append(("ClipIndex.upsert (new table)", result.clips.num_rows, time.perf_counter() - t0))
    return rows, render_s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=48, help="ToyWorld videos to ingest")
    ap.add_argument("--captions", type=int, default=768, help="captions to embed per batch size")
    args = ap.parse_args()

    rows = []
    try:
        ingest_rows, render_s = bench_ingest(args.clips)
        rows += ingest_rows
        print(f"(corpus of {args.clips} clips ready in {render_s:.1f} s; cached after the first run)")
    except ImportError as e:
        print(f"ingestion skipped: {e}")

    captions = toyworld_clip_rows(args.captions, seed=1)[0]["caption"].to_pylist()
    shared = get_text_encoder()
    shared.encode(captions[:8])  # warm-up
    for bs in (16, 64, 128):
        enc = shared if bs == shared.config.batch_size else TextEncoder(config=TextEncoderConfig(batch_size=bs))
        t0 = time.perf_counter()
        enc.encode(captions)
        rows.append((f"TextEncoder.encode (batch {bs})", len(captions), time.perf_counter() - t0))

    print("\nThroughput (one run, 2 shared CPU cores)")
    print(f"{'stage':<34} | {'items':>6} | {'seconds':>8} | {'items/s':>8}")
    for name, n, s in rows:
        print(f"{name:<34} | {n:>6} | {s:>8.2f} | {n / s:>8.1f}")


if __name__ == "__main__":
    main()
