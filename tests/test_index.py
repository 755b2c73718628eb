"""Clip index: incremental upsert (embeds only what changed), deletes, rebuilds, errors, readers.

Rows are ToyWorld captions in the ingest schema (nothing rendered); LanceDB and MiniLM are real.
"""

import threading

import pyarrow as pa
import pytest

from story_pipeline.errors import IndexError_
from story_pipeline.corpus.index import ClipIndex, ClipIndexConfig
from story_pipeline.corpus.search import search
from story_pipeline.eval.retrieval import toyworld_clip_rows
from story_pipeline.models.text_encoder import get_text_encoder


@pytest.fixture(scope="module")
def encoder():
    return get_text_encoder()


@pytest.fixture(scope="module")
def corpus():
    clips, _ = toyworld_clip_rows(200, seed=0)
    extra, _ = toyworld_clip_rows(5, seed=0, start=200)  # 5 new clips, ids disjoint from the 200
    return clips, extra


def _ids(hits):
    return [h.clip_id for h in hits]


def test_incremental_reindex_embeds_only_new_clips(tmp_path, encoder, corpus):
    clips, extra = corpus
    index = ClipIndex(tmp_path / "lancedb", encoder=encoder)

    first = index.upsert(clips)
    assert (first.added, first.embedded, first.rebuilt) == (200, 200, True)
    assert index.count() == 200

    # add 5 -> exactly 5 captions through the encoder, in one call
    calls, texts = encoder.calls, encoder.texts_encoded
    update = index.upsert(pa.concat_tables([clips, extra]))
    assert encoder.texts_encoded - texts == 5
    assert encoder.calls - calls == 1
    assert (update.added, update.updated, update.removed, update.unchanged, update.embedded) == (5, 0, 0, 200, 5)
    assert index.count() == 205
    for row in extra.to_pylist():  # every new clip is searchable by its own caption
        assert search(index, row["caption"], k=1, mode="vector")[0].clip_id == row["clip_id"]
        assert row["clip_id"] in _ids(search(index, row["caption"], k=3))

    # remove 2 -> deleted, nothing embedded, gone from every search mode
    gone = clips["clip_id"].to_pylist()[:2]
    gone_captions = clips["caption"].to_pylist()[:2]
    kept = pa.concat_tables([clips.slice(2), extra])
    texts = encoder.texts_encoded
    update = index.upsert(kept)
    assert (update.removed, update.embedded) == (2, 0)
    assert encoder.texts_encoded == texts
    assert index.count() == 203
    for caption in gone_captions:
        for mode in ("vector", "fts", "hybrid"):
            assert not set(gone) & set(_ids(search(index, caption, k=20, mode=mode)))

    # unchanged re-upsert (shuffled order) -> no embedding, no new version, same data version
    version = index.version
    update = index.upsert(kept.take(list(reversed(range(kept.num_rows)))))
    assert (update.embedded, update.unchanged, update.version) == (0, 203, version)
    assert update.data_version == index.data_version()


def test_changed_caption_is_reembedded(tmp_path, encoder):
    clips, _ = toyworld_clip_rows(30, seed=2)
    index = ClipIndex(tmp_path / "lancedb", encoder=encoder)
    before = index.upsert(clips)
    rows = clips.to_pylist()
    rows[7]["caption"] = "a purple penguin juggles three oranges on a rooftop"
    rows[7]["content_hash"] = "changed"
    update = index.upsert(pa.Table.from_pylist(rows, schema=clips.schema))
    assert (update.updated, update.embedded, update.added, update.removed) == (1, 1, 0, 0)
    assert update.data_version != before.data_version
    assert search(index, "penguin juggling oranges", k=1)[0].clip_id == rows[7]["clip_id"]


class _OtherModel:
    """The real encoder under another model identity (as if the weights had been swapped)."""

    def __init__(self, encoder):
        self._encoder = encoder
        self.model_id = encoder.model_id + "-other"

    def __getattr__(self, name):
        return getattr(self._encoder, name)


def test_model_change_rebuilds(tmp_path, encoder):
    clips, _ = toyworld_clip_rows(20, seed=3)
    ClipIndex(tmp_path / "lancedb", encoder=encoder).upsert(clips)
    index = ClipIndex(tmp_path / "lancedb", encoder=_OtherModel(encoder))
    update = index.upsert(clips)
    assert update.rebuilt and update.embedded == 20
    assert index.model_id() == encoder.model_id + "-other"
    assert index.count() == 20


def test_missing_index_names_folder_and_fix(tmp_path):
    for folder in (tmp_path / "never_built", tmp_path):  # no folder; folder without the table
        index = ClipIndex(folder)
        assert not index.exists()
        with pytest.raises(IndexError_) as err:
            search(index, "a cat jumps")
        assert str(folder) in str(err.value) and "story corpus build" in str(err.value)
    assert not (tmp_path / "never_built").exists()  # searching never creates anything


def test_bad_clip_tables_rejected(tmp_path, encoder):
    clips, _ = toyworld_clip_rows(5, seed=4)
    index = ClipIndex(tmp_path / "lancedb", encoder=encoder)
    with pytest.raises(ValueError, match="duplicate clip_id"):
        index.upsert(pa.concat_tables([clips, clips.slice(0, 1)]))
    with pytest.raises(ValueError, match="missing column"):
        index.upsert(clips.drop_columns(["content_hash"]))


def test_ann_index_above_threshold(tmp_path, encoder):
    clips, _ = toyworld_clip_rows(300, seed=5)
    index = ClipIndex(tmp_path / "lancedb", encoder=encoder, config=ClipIndexConfig(ann_threshold=256))
    index.upsert(clips.slice(0, 200))
    assert not index.use_ann()  # below the threshold: exact flat search, no vector index
    index.upsert(clips)
    assert index.has_ann_index() and index.use_ann()
    caption, clip_id = clips["caption"][250].as_py(), clips["clip_id"][250].as_py()
    assert search(index, caption, k=1, mode="vector")[0].clip_id == clip_id  # refine: exact rescoring


def test_readers_never_fail_during_upserts(tmp_path, encoder):
    clips, _ = toyworld_clip_rows(120, seed=6)
    writer = ClipIndex(tmp_path / "lancedb", encoder=encoder)
    writer.upsert(clips.slice(0, 100))
    reader = ClipIndex(tmp_path / "lancedb", encoder=encoder)  # its own connection, like another process
    errors, counts, stop = [], [], threading.Event()

    def read():
        while not stop.is_set():
            try:
                counts.append(reader.count())
                assert len(search(reader, "a dog runs", k=5, mode="vector")) == 5
            except Exception as e:  # noqa: BLE001 - any failure of a reader is the bug under test
                errors.append(e)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for lo, hi in ((0, 120), (10, 120), (10, 110), (0, 120)):  # add, remove, remove, re-add
            writer.upsert(clips.slice(lo, hi - lo))
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[:3]
    assert set(counts) <= {100, 110, 120}  # only committed snapshots are ever seen
    assert reader.count() == 120  # and the last commit is visible without reopening
