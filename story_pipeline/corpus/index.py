"""The clip index: one LanceDB table of clips with their caption embeddings.

    from story_pipeline.corpus.index import ClipIndex
    index = ClipIndex("data/lancedb")            # opening is lazy: no model load, no I/O
    update = index.upsert(clips)                 # clips: pyarrow.Table with the ingest columns
    print(update)                                # IndexUpdate(added=5, ..., embedded=5)

Incremental: a clip is (re)embedded only when its ``content_hash`` or the encoder's ``model_id``
changed; clips absent from ``clips`` are deleted. Writes go through ``merge_insert("clip_id")``
and each commit is a new table version, so readers (searches) running during an upsert see one
consistent snapshot, never a half-written table. Indexes: full-text on ``caption``, BTree on
``clip_id``, and an ANN vector index once the table reaches ``ann_threshold`` rows (below it an
exact flat scan is fast and exact). ``optimize()`` after each write folds new rows into them.

A table built with another embedding model is rebuilt from scratch (mixed embeddings would
make distances meaningless).

Writers on a local folder take a lock file (``<table>.write-lock``) for the whole upsert: two
processes indexing one data root at once (two `story corpus build`s, or the corpus sensor's run
and a CLI run) would otherwise race to create the same table, which LanceDB 0.40 can answer with
a panic. The second writer waits, then finds the table already current (nothing to embed).
Object-store URIs rely on LanceDB's own commit conflict handling.
"""

import dataclasses
import hashlib
import logging
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from story_pipeline.errors import IndexError_

log = logging.getLogger(__name__)

# The ingest column schema (story_pipeline.corpus.ingest) that the index stores as is.
CLIP_FIELDS = [
    pa.field("clip_id", pa.string()),
    pa.field("video_id", pa.string()),
    pa.field("path", pa.string()),  # absolute path of the source video
    pa.field("caption", pa.string()),
    pa.field("start_frame", pa.int64()),  # clip span in the video, end exclusive
    pa.field("end_frame", pa.int64()),
    pa.field("num_frames", pa.int64()),
    pa.field("fps", pa.float64()),
    pa.field("width", pa.int64()),
    pa.field("height", pa.int64()),
    pa.field("duration_s", pa.float64()),
    pa.field("content_hash", pa.string()),  # sha256 of file bytes + span + caption
    pa.field("source", pa.string()),  # corpus folder name
]
CLIP_COLUMNS = [f.name for f in CLIP_FIELDS]
VECTOR_COLUMN = "vector"
MODEL_COLUMN = "embed_model"  # encoder model_id that produced this row's vector


def table_schema(dim: int) -> pa.Schema:
    return pa.schema(CLIP_FIELDS + [
        pa.field(VECTOR_COLUMN, pa.list_(pa.float32(), dim)),  # (dim,) unit vector
        pa.field(MODEL_COLUMN, pa.string()),
    ])


@dataclass
class ClipIndexConfig:
    ann_threshold: int = 5000  # rows at which an ANN index replaces the exact flat scan (Settings.ann_threshold)
    ann_partitions_per_sqrt: float = 1.0  # IVF partitions = this * sqrt(rows): the classic sqrt rule
    ann_sub_vectors: int = 48  # PQ sub-vectors: 384 / 48 = 8 dims each (SIMD-friendly, accurate)
    ann_retrain_growth: float = 4.0  # retrain the ANN index when rows exceed this x its training rows
    # Readers re-check for a newer table version at most this often; 0 = every query sees the
    # latest commit, also one made by another process (measured cost: ~1 ms per query).
    read_consistency_s: float = 0.0


@dataclass
class IndexUpdate:
    added: int  # clips new to the index
    updated: int  # clips whose content hash (or the embedding model) changed
    removed: int  # clips no longer in the corpus, deleted
    unchanged: int  # clips kept as they were (not re-embedded)
    version: int  # LanceDB table version after the update
    embedded: int  # captions run through the encoder by this update
    data_version: str  # content hash of (model_id, clip_id, content_hash) over all rows
    rebuilt: bool = False  # True if the table was (re)created from scratch


def _sql_str(s: str) -> str:
    """A SQL string literal (single quotes doubled)."""
    return "'" + str(s).replace("'", "''") + "'"


def data_version_of(model_id: str, clip_ids, content_hashes) -> str:
    """Order-independent content hash of an index's rows: same clips + same model -> same value."""
    h = hashlib.sha256(model_id.encode())
    for cid, ch in sorted(zip(clip_ids, content_hashes)):
        h.update(f"\0{cid}\0{ch}".encode())
    return h.hexdigest()[:16]


def validate_clips(clips: pa.Table) -> pa.Table:
    """Check and cast an ingest table to the index's clip columns (extra columns are dropped)."""
    if not isinstance(clips, pa.Table):
        raise TypeError(f"clips must be a pyarrow.Table, got {type(clips).__name__}")
    missing = [c for c in CLIP_COLUMNS if c not in clips.column_names]
    if missing:
        raise ValueError(f"clips table is missing column(s) {missing}; expected the ingest schema {CLIP_COLUMNS}")
    clips = clips.select(CLIP_COLUMNS).cast(pa.schema(CLIP_FIELDS))
    ids = clips["clip_id"]
    if ids.null_count:
        raise ValueError("clips table has rows with a null clip_id")
    if len(set(ids.to_pylist())) != clips.num_rows:
        raise ValueError("clips table has duplicate clip_id values; ingest rejects duplicates before indexing")
    return clips


class ClipIndex:
    """LanceDB table ``table_name`` under ``db_dir`` (a folder, or an object-store URI such as
    ``s3://bucket/lancedb``); ``encoder`` defaults to the shared MiniLM (loaded on first use, so
    opening an index to search or count costs no model load). ``ann_threshold`` overrides
    ``config.ann_threshold`` (Settings.ann_threshold)."""

    def __init__(self, db_dir: str | os.PathLike, table_name: str = "clips", encoder=None,
                 config: ClipIndexConfig | None = None, ann_threshold: int | None = None):
        self.uri = str(db_dir)
        self.is_local = "://" not in self.uri
        self.db_dir = Path(db_dir) if self.is_local else None
        self.table_name = table_name
        self.config = config or ClipIndexConfig()
        if ann_threshold is not None:
            self.config = dataclasses.replace(self.config, ann_threshold=int(ann_threshold))
        self._encoder = encoder
        self._db = None
        self._table = None
        self._ann_state = None  # (table version, use ANN?)
        self._vocabulary = None  # (table version, lexicon.Vocabulary of the captions)

    # ---- opening -------------------------------------------------------------------------
    @property
    def encoder(self):
        if self._encoder is None:
            from story_pipeline.models.text_encoder import get_text_encoder

            self._encoder = get_text_encoder()
        return self._encoder

    def _connect(self, create: bool):
        if self._db is None:
            import lancedb

            if self.is_local:
                if self.db_dir.exists() and not self.db_dir.is_dir():
                    raise IndexError_(f"Clip index folder {self.db_dir} is a file, not a folder; "
                                      "remove it and build the index with `story corpus build`.")
                if not self.db_dir.exists():
                    if not create:
                        raise IndexError_(self._missing_message())
                    self.db_dir.mkdir(parents=True, exist_ok=True)
            self._db = lancedb.connect(
                self.uri, read_consistency_interval=timedelta(seconds=self.config.read_consistency_s))
        return self._db

    def _missing_message(self) -> str:
        return (f"No clip index table '{self.table_name}' in {self.uri}; "
                "build the index first with `story corpus build`.")

    def exists(self) -> bool:
        try:
            self.table
        except IndexError_:
            return False
        return True

    @property
    def table(self):
        """The LanceDB table; raises IndexError_ (naming the folder) if it was never built."""
        if self._table is None:
            db = self._connect(create=False)
            try:
                self._table = db.open_table(self.table_name)
            except (ValueError, FileNotFoundError) as e:
                raise IndexError_(self._missing_message()) from e
            except Exception as e:  # corrupt manifest, unreadable files, ...
                raise IndexError_(f"Clip index table '{self.table_name}' in {self.uri} cannot be "
                                  f"opened ({e}); rebuild it with `story corpus build`.") from e
        return self._table

    # ---- reading -------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self.table.version

    def count(self) -> int:
        return self.table.count_rows()

    def model_id(self) -> str | None:
        """The embedding model of the stored vectors (None for an empty table)."""
        rows = self.table.search().select([MODEL_COLUMN]).limit(1).to_arrow()
        return rows[MODEL_COLUMN][0].as_py() if rows.num_rows else None

    def _keys(self) -> pa.Table:
        """(clip_id, content_hash, embed_model) of every row."""
        return self.table.search().select(["clip_id", "content_hash", MODEL_COLUMN]).limit(None).to_arrow()

    def encoder_model_id(self) -> str:
        """The encoder's identity without loading the model (the default MiniLM is hashed, not run)."""
        if self._encoder is not None:
            return self._encoder.model_id
        from story_pipeline.models.text_encoder import model_identity

        return model_identity()

    def data_version(self) -> str:
        """Content hash of what the table holds (same value ``upsert`` returned for it)."""
        keys = self._keys()
        model = keys[MODEL_COLUMN][0].as_py() if keys.num_rows else self.encoder_model_id()
        return data_version_of(model, keys["clip_id"].to_pylist(), keys["content_hash"].to_pylist())

    def has_ann_index(self) -> bool:
        return any(VECTOR_COLUMN in ix.columns for ix in self.table.list_indices())

    def use_ann(self) -> bool:
        """ANN search above the threshold (and once the index exists); exact flat scan below.

        Decided once per table version (searches call it every time)."""
        version = self.table.version
        if self._ann_state is None or self._ann_state[0] != version:
            self._ann_state = (version, self.count() >= self.config.ann_threshold and self.has_ann_index())
        return self._ann_state[1]

    def vocabulary(self):
        """The words of every caption (a ``lexicon.Vocabulary``), read once per table version: what
        query expansion rewrites unknown query words into."""
        version = self.table.version
        if self._vocabulary is None or self._vocabulary[0] != version:
            from story_pipeline.corpus.lexicon import Vocabulary

            captions = self.table.search().select(["caption"]).limit(None).to_arrow()["caption"].to_pylist()
            self._vocabulary = (version, Vocabulary(captions))
        return self._vocabulary[1]

    # ---- writing -------------------------------------------------------------------------
    @contextmanager
    def _write_lock(self):
        """One writer at a time on a local table, across processes and threads (module docstring).
        Connects first (creating the folder), so the lock file has a place."""
        self._connect(create=True)
        if not self.is_local:
            yield
            return
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.db_dir / f"{self.table_name}.write-lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("waiting for another process writing %s", self.uri)
            lock.acquire()
        try:
            if self._table is not None:
                self._table.checkout_latest()  # what the previous writer committed
            yield
        finally:
            lock.release()

    def _embed(self, clips: pa.Table) -> pa.Table:
        """Append the vector and model columns: (N, dim) embeddings of the captions."""
        enc = self.encoder
        vectors = np.asarray(enc.encode(clips["caption"].to_pylist()), dtype=np.float32)  # (N, dim)
        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        clips = clips.append_column(VECTOR_COLUMN, pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]))
        return clips.append_column(MODEL_COLUMN, pa.array([enc.model_id] * clips.num_rows, pa.string()))

    def upsert(self, clips: pa.Table) -> IndexUpdate:
        """Make the index hold exactly ``clips``, embedding only new or changed captions."""
        clips = validate_clips(clips)
        model_id = self.encoder_model_id()  # an unchanged corpus never loads the model
        new_dv = data_version_of(model_id, clips["clip_id"].to_pylist(), clips["content_hash"].to_pylist())
        with self._write_lock():
            return self._upsert(clips, model_id, new_dv)

    def _upsert(self, clips: pa.Table, model_id: str, new_dv: str) -> IndexUpdate:
        old_model = self.model_id() if self.exists() else None
        if not self.exists() or (old_model is not None and old_model != model_id):
            if old_model is not None:
                log.info("embedding model changed (%s -> %s): rebuilding %s", old_model, model_id, self.table_name)
            return self._rebuild(clips, new_dv)

        # 1. Diff the corpus against the table by (clip_id, content_hash, model).
        keys = self._keys()
        stored = {cid: (ch, m) for cid, ch, m in zip(keys["clip_id"].to_pylist(),
                                                     keys["content_hash"].to_pylist(),
                                                     keys[MODEL_COLUMN].to_pylist())}
        ids = clips["clip_id"].to_pylist()
        hashes = clips["content_hash"].to_pylist()
        new_ids = {cid for cid in ids if cid not in stored}
        changed_ids = {cid for cid, ch in zip(ids, hashes) if cid in stored and stored[cid] != (ch, model_id)}
        removed_ids = set(stored) - set(ids)
        todo = [i for i, cid in enumerate(ids) if cid in new_ids or cid in changed_ids]

        # 2. Embed only what is new/changed and merge it in (one commit).
        tbl = self.table
        if todo:
            rows = self._embed(clips.take(todo))
            (tbl.merge_insert("clip_id").when_matched_update_all().when_not_matched_insert_all()
             .execute(rows))
        # 3. Delete clips that left the corpus (a second commit; each is a consistent snapshot).
        if removed_ids:
            tbl.delete("clip_id IN (" + ", ".join(_sql_str(c) for c in sorted(removed_ids)) + ")")
        # 4. Indexes: create what is missing (also after a run killed between the commit of its rows
        #    and its index builds: its rerun finds nothing to embed), fold the new rows into the rest.
        self._ensure_indexes(optimize=bool(todo or removed_ids))
        return IndexUpdate(added=len(new_ids), updated=len(changed_ids), removed=len(removed_ids),
                           unchanged=clips.num_rows - len(todo), version=tbl.version,
                           embedded=len(todo), data_version=new_dv)

    def _rebuild(self, clips: pa.Table, data_version: str) -> IndexUpdate:
        """(Re)create the table from scratch: every caption embedded, every index built."""
        db = self._connect(create=True)
        rows = self._embed(clips)
        # mode="overwrite" commits a new version of the same dataset: open readers keep their
        # snapshot instead of failing on a dropped table.
        schema = table_schema(rows.schema.field(VECTOR_COLUMN).type.list_size)
        self._table = db.create_table(self.table_name, data=rows, schema=schema, mode="overwrite")
        self._ensure_indexes(optimize=False, replace=True)
        return IndexUpdate(added=clips.num_rows, updated=0, removed=0, unchanged=0,
                           version=self._table.version, embedded=clips.num_rows,
                           data_version=data_version, rebuilt=True)

    def rebuild(self, clips: pa.Table) -> IndexUpdate:
        """Full rebuild, ignoring what is stored (benchmarks compare it with ``upsert``)."""
        clips = validate_clips(clips)
        dv = data_version_of(self.encoder_model_id(), clips["clip_id"].to_pylist(), clips["content_hash"].to_pylist())
        with self._write_lock():
            return self._rebuild(clips, dv)

    def _ensure_indexes(self, optimize: bool, replace: bool = False):
        from lancedb.index import FTS, BTree, IvfPq

        tbl = self.table
        n = tbl.count_rows()
        if n == 0:
            return  # nothing to index; indexes are created with the first rows
        indexes = [] if replace else list(tbl.list_indices())
        have = {c for ix in indexes for c in ix.columns}
        if "caption" not in have:
            tbl.create_index("caption", config=FTS(with_position=False), replace=True)
        if "clip_id" not in have:
            tbl.create_index("clip_id", config=BTree(), replace=True)
        # The IVF partitions were sized for the rows at training time (the index name records
        # them); optimize() only appends to partitions, so retrain once the table grew 4x.
        stale = [ix.name for ix in indexes if VECTOR_COLUMN in ix.columns and ix.name.rsplit("_n", 1)[-1].isdigit()
                 and n > self.config.ann_retrain_growth * int(ix.name.rsplit("_n", 1)[1])]
        if stale:
            have.discard(VECTOR_COLUMN)
        if VECTOR_COLUMN not in have and n >= self.config.ann_threshold:
            dim = tbl.schema.field(VECTOR_COLUMN).type.list_size
            parts = max(1, int(self.config.ann_partitions_per_sqrt * math.sqrt(n)))
            sub = self.config.ann_sub_vectors if dim % self.config.ann_sub_vectors == 0 else dim // 8
            tbl.create_index(VECTOR_COLUMN, config=IvfPq(distance_type="cosine", num_partitions=parts,
                                                         num_sub_vectors=sub),
                             replace=True, name=f"{VECTOR_COLUMN}_ivfpq_n{n}")
            for name in stale:  # the new index is committed first: searches never lack one
                tbl.drop_index(name)
        if optimize:
            tbl.optimize()  # compaction + fold new rows into every index (old versions kept 7 days)
