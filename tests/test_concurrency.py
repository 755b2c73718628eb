"""Concurrency: searches during a reindex, and two processes writing the same artifacts.

    OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/test_concurrency.py

1. Three threads run hybrid searches (the default mode, with a duration filter) on one shared
   ClipIndex while the writer upserts four new versions (rows added, removed, captions changed).
   No search may fail, return a clip twice, return fewer than k clips, or return a (clip, caption)
   pair that no version ever held.
2. Two processes compute the same shots' depth memos into one folder at the same time (the race
   two `story run`s, or the sensor and a CLI run, would have): both succeed, and every file is
   byte-identical to a single process's.
3. Two corpus builds (render + ingest + index) on one data root at the same time: both succeed and
   the data root ends as one build leaves it.
4. Three index writers started within a millisecond of each other on a new index, eight times: all
   succeed and the table holds the clips once, with its indexes (without the index's write lock,
   two writers on LanceDB 0.40 alone failed in 11 of 30 rounds: a panic creating the table, or a
   preempted index build refused).
"""

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from story_pipeline.config import Settings
from story_pipeline.corpus.build import build_clip_corpus
from story_pipeline.depth.estimators import load_estimator
from story_pipeline.depth.structure import load_motion_structure
from story_pipeline.corpus.index import ClipIndex
from story_pipeline.corpus.ingest import read_manifest
from story_pipeline.corpus.search import search
from story_pipeline.eval.retrieval import toyworld_clip_rows
from story_pipeline.depth.stage import shot_depth_cached
from story_pipeline.models.text_encoder import get_text_encoder

DRIVER = Path(__file__).with_name("crash_drivers.py")
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
QUERIES = ["a cat jumping", "a dog running to the left", "a robot spinning", "a bird flying away",
           "a rabbit walking on the beach", "a penguin sitting down at night"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temp_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*") if "dagster_home" not in p.parts)


# --- 1. searches during a reindex -------------------------------------------------------------------
def versions() -> list[pa.Table]:
    """Four corpus versions: v1 drops 10 clips, adds 20 and re-captions 10; v2 re-captions 10 more
    and drops 5; then back to v0 and on to v1 again."""
    rows = toyworld_clip_rows(140, seed=3)[0].to_pylist()

    def recaption(rs, lo, hi, tag):
        out = []
        for i, r in enumerate(rs):
            if lo <= i < hi:
                r = {**r, "caption": r["caption"].replace("a video of", "footage of") + f" ({tag})",
                     "content_hash": f"{tag}-{r['content_hash']}"}
            out.append(r)
        return out

    v0 = rows[:120]
    v1 = recaption(rows[10:140], 0, 10, "v1")
    v2 = recaption(v1[5:], 10, 20, "v2")
    return [pa.Table.from_pylist(v) for v in (v0, v1, v2, v0, v1)]


def test_searches_during_a_reindex_see_whole_versions(tmp_path, record_property):
    encoder = get_text_encoder()
    v0, *updates = versions()
    writer = ClipIndex(tmp_path / "lancedb", encoder=encoder)
    writer.upsert(v0)
    reader = ClipIndex(tmp_path / "lancedb", encoder=encoder)  # one shared reader, like a server's
    held = {(r["clip_id"], r["caption"]) for v in [v0, *updates] for r in v.select(["clip_id", "caption"]).to_pylist()}
    results, errors, stop = [], [], threading.Event()

    def read(offset: int):
        n = offset
        while not stop.is_set():
            query = QUERIES[n % len(QUERIES)]
            n += 1
            try:
                results.append(search(reader, query, k=8, min_duration=1.5))
            except Exception as e:  # noqa: BLE001 - any failure of a reader is what this test looks for
                errors.append(e)

    threads = [threading.Thread(target=read, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        stats = [writer.upsert(v) for v in updates]
        time.sleep(0.5)  # a few searches on the final version too
    finally:
        stop.set()
        for t in threads:
            t.join()
    record_property("faults_injected", len(updates))  # commits raced by the searching threads
    record_property("faults_survived", len(updates) if not errors else 0)
    record_property("searches", len(results))
    assert not errors, errors[:3]
    assert sum(s.added + s.updated + s.removed for s in stats) > 0 and len({s.version for s in stats}) == len(stats)
    assert len(results) >= 12  # ~50 on 2 busy cores
    for hits in results:
        ids = [h.clip_id for h in hits]
        assert len(ids) == 8 and len(set(ids)) == 8, ids  # k clips, none twice
        assert all((h.clip_id, h.caption) in held for h in hits)  # from a version, never a half-written row
        assert all(h.duration_s >= 1.5 for h in hits)
    assert reader.count() == updates[-1].num_rows  # the last commit is what readers see now


# --- 2. two processes, the same depth memos -----------------------------------------------------------
@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    from story_pipeline.toyworld import write_toyworld_corpus

    root = tmp_path_factory.mktemp("toyworld")
    write_toyworld_corpus(root, n=8, seed=1)
    return root / "clips"


@pytest.fixture(scope="module")
def depth_net(tmp_path_factory) -> Path:
    import torch

    from story_pipeline.models.depth_net import DepthNetConfig, build_depth_net

    folder = tmp_path_factory.mktemp("depth_net")
    torch.manual_seed(0)
    build_depth_net(DepthNetConfig(input_size=32, channels=(8, 16), groups=4)).save_pretrained(str(folder))
    return folder


def test_two_processes_writing_the_same_depth_memos(clips, depth_net, tmp_path, one_torch_thread, record_property):
    sys.path.insert(0, str(DRIVER.parent))
    try:
        from crash_drivers import DEPTH_FRAMES, DEPTH_SIZE, depth_retrievals
    finally:
        sys.path.remove(str(DRIVER.parent))
    # The reference: this process alone.
    estimator = load_estimator("toyworld", depth_net)
    for r in depth_retrievals(clips):
        shot_depth_cached(r, DEPTH_FRAMES, DEPTH_SIZE, estimator, tmp_path / "alone")
    want = {p.name: sha256(p) for p in (tmp_path / "alone").iterdir()}
    # Two processes, same shots, same order, same folder: every memo is written twice at about the same time.
    cmd = [sys.executable, str(DRIVER), "depth", str(clips), str(tmp_path / "shared"), str(depth_net)]
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    record_property("faults_injected", len(want) // 2)  # memos written by both processes at once
    shared = tmp_path / "shared"
    assert temp_files(shared) == []
    assert {p.name: sha256(p) for p in shared.iterdir()} == want  # byte-identical to one process's
    for p in shared.glob("*.safetensors"):
        assert load_motion_structure(p).depth.shape == (DEPTH_FRAMES, *DEPTH_SIZE)
    record_property("faults_survived", len(want) // 2)


# --- 3. two corpus builds on one data root --------------------------------------------------------------
@pytest.mark.slow
def test_two_corpus_builds_on_one_data_root(tmp_path, record_property):
    root = tmp_path / "shared"
    cmd = [sys.executable, str(DRIVER), "corpus", str(root), "12"]
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    # The reference: one build, in this process.
    alone = Settings(data_root=tmp_path / "alone")
    build = build_clip_corpus(alone, 12, 0)
    ClipIndex(alone.lancedb_dir, encoder=get_text_encoder()).upsert(read_manifest(build.manifest_path))

    def state(data: Path) -> dict:
        prefix = str(data.resolve())
        manifest = read_manifest(data / "artifacts" / "clip_corpus" / "clips.parquet").to_pylist()
        table = ClipIndex(data / "lancedb").table
        rows = table.to_arrow().drop_columns(["vector"]).sort_by("clip_id").to_pylist()
        for r in manifest + rows:
            r["path"] = r["path"].replace(prefix, "<root>")
        files = {str(p.relative_to(data)): sha256(p) for p in (data / "corpus").rglob("*") if p.is_file()}
        return {"manifest": manifest, "rows": rows, "files": files,
                "indexes": sorted((ix.index_type, tuple(ix.columns)) for ix in table.list_indices())}

    assert temp_files(root) == []
    assert state(root) == state(tmp_path / "alone")
    record_property("faults_injected", 1)  # one build raced by another
    record_property("faults_survived", 1)


# --- 4. index writers started together ---------------------------------------------------------------------
def test_index_writers_started_together_all_succeed(tmp_path, record_property):
    rounds, writers = 8, 3
    cmd = [sys.executable, str(DRIVER), "upserts", str(tmp_path), str(rounds)]
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(writers)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()[-2000:]
        for r in range(rounds):
            (tmp_path / f"go_{r}").touch()
            for p in procs:
                line = p.stdout.readline().strip()
                assert line == f"round {r}", (line, p.wait(timeout=60), p.stderr.read()[-2000:])
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0] * writers, [o[1][-2000:] for o in outs]
    want = sorted(toyworld_clip_rows(12, seed=5)[0]["clip_id"].to_pylist())
    for r in range(rounds):
        table = ClipIndex(tmp_path / f"db_{r}").table
        assert sorted(table.to_arrow()["clip_id"].to_pylist()) == want
        assert sorted(ix.index_type for ix in table.list_indices()) == ["BTree", "FTS"]
    record_property("faults_injected", rounds * (writers - 1))
    record_property("faults_survived", rounds * (writers - 1))
