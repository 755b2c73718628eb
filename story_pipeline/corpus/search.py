"""Text-to-clip retrieval over the clip index (the paper's motion-structure retrieval, stage 1).

    from story_pipeline.corpus.index import ClipIndex
    from story_pipeline.corpus.search import search
    hits = search(ClipIndex("data/lancedb"), "a kitty jumping up", k=5, min_duration=2.0)
    hits[0].clip_id, hits[0].score, (hits[0].start_frame, hits[0].end_frame)

Modes: ``"vector"`` (MiniLM cosine), ``"fts"`` (BM25 on captions) and ``"hybrid"`` (the default):
both legs fused by weighted reciprocal-rank fusion into ``candidates`` clips, which a
late-interaction reranker then re-scores (MaxSim over MiniLM token states, mixed with the pooled
cosine; ColBERT-style scoring with the same bundled model). Long captions name many things a
query does not ask about (colours, hats, settings); pooled embeddings dilute the asked-for words
among them, MaxSim lets each query word find its match. The vector leg is exact (flat scan) below the index's
``ann_threshold`` and ANN (IVF-PQ, ``nprobes`` partitions, exact re-scoring of
``refine_factor * k`` candidates) above it. Filters are applied before the search (prefilter),
so ``k`` hits come back whenever ``k`` clips pass them.

Query words no caption uses are first rewritten to the caption words of their nearest WordNet
relatives ("a tomcat ambles leftward" -> "a cat walks leftward", ``corpus/lexicon.py``); the search
then uses both wordings (mean query embedding, both token sets for the reranker), so a rewrite that
picked a wrong sense still has the original beside it. ``SearchConfig(expand=False)`` turns it off.
"""

import math
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from lancedb.query import MatchQuery

from story_pipeline.errors import InvalidInput
from story_pipeline.corpus.index import CLIP_COLUMNS, VECTOR_COLUMN, ClipIndex
from story_pipeline.corpus.lexicon import caption_rewordings, rewrite_query

MODES = ("hybrid", "vector", "fts")
HIT_COLUMNS = ["clip_id", "caption", "path", "start_frame", "end_frame", "fps", "duration_s"]


@dataclass
class Hit:
    clip_id: str
    score: float  # higher = better: cosine (vector), BM25 (fts), late-interaction or RRF score (hybrid)
    caption: str
    path: str  # source video; the clip is frames [start_frame, end_frame) of it
    start_frame: int
    end_frame: int
    fps: float
    duration_s: float


@dataclass
class SearchConfig:
    candidates: int = 20  # rows each leg of a hybrid search hands the fusion/reranker (>= k)
    rrf_k: int = 60  # reciprocal-rank-fusion constant (the usual 60: flattens rank differences)
    vector_weight: float = 0.7  # hybrid: share of the vector leg in the fused rank score
    rerank: str = "late"  # hybrid: "late" (MaxSim rerank of the fused candidates) or "rrf" (fusion only)
    late_weight: float = 0.6  # late score = late_weight * MaxSim + (1 - late_weight) * cosine
    rerank_top: int = 20  # fused candidates the late reranker re-scores (>= k)
    nprobes: int = 32  # IVF partitions probed by ANN search (~10% of sqrt(100k) partitions)
    # ANN re-scores refine_factor * limit PQ candidates with exact distances. Measured at 100k
    # rows (bench/retrieval.py): 10 -> recall@10 0.954, 20 -> 0.991 for +1 ms; nprobes 20..64 ~ no effect.
    refine_factor: int = 20
    # hybrid: when the query names a direction, candidates naming it rank first and those naming
    # only the opposite ("to the right" for "to the left", "away from" for "toward") last. Sentence
    # embeddings barely separate antonyms (MiniLM: "strolls to the left" ~ "strolling to the
    # right"), and for motion retrieval the direction is the point.
    direction_check: bool = True
    # Query words no caption uses ("tomcat", "ambles") are rewritten to the caption words of their
    # nearest WordNet relatives ("cat", "strolls") before searching (corpus/lexicon.py).
    expand: bool = True


def _sql_literal(v) -> str:
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    raise InvalidInput(f"filter value {v!r} must be a string, number or bool")


def build_where(min_duration: float | None = None, filters: dict | None = None) -> str | None:
    """SQL where clause from ``min_duration`` (seconds) and ``{column: value | [values]}``."""
    clauses = []
    if min_duration is not None:
        clauses.append(f"duration_s >= {float(min_duration)!r}")
    for col, val in (filters or {}).items():
        if col not in CLIP_COLUMNS:
            raise InvalidInput(f"Unknown filter column {col!r}; choose one of {', '.join(CLIP_COLUMNS)}.")
        if isinstance(val, (list, tuple, set)):
            if not val:
                raise InvalidInput(f"filter {col!r} has an empty list of values")
            clauses.append(f"{col} IN ({', '.join(_sql_literal(v) for v in val)})")
        elif val is None:
            clauses.append(f"{col} IS NULL")
        else:
            clauses.append(f"{col} = {_sql_literal(val)}")
    return " AND ".join(clauses) if clauses else None


def rrf_fuse(ranked_lists: list[tuple[float, list[str]]], rrf_k: int = 60) -> dict[str, float]:
    """Weighted reciprocal-rank fusion: {clip_id: sum_legs weight / (rrf_k + rank)}.

    Rank-based, so immune to the different scales of cosine and BM25 scores; the vector leg is
    weighted up because captions are paraphrased and keyword overlap is weaker evidence.
    """
    scores: dict[str, float] = {}
    for weight, ids in ranked_lists:
        for rank, cid in enumerate(ids, start=1):
            scores[cid] = scores.get(cid, 0.0) + weight / (rrf_k + rank)
    return scores


def late_interaction_scores(encoder, q_tok, captions: list[str], vectors, query_vec, late_weight: float):
    """(N,) scores: ``late_weight`` * MaxSim(query tokens -> caption tokens) + rest * cosine.

    q_tok: (Tq, D) query token states; vectors: (N, D) caption vectors; query_vec: (D,).
    """
    maxsim = np.array([float((q_tok @ c_tok.T).max(axis=1).mean())  # (Tq, Tc) -> max over caption
                       for c_tok in encoder.token_states(captions)])  # (N,)
    cosine = np.asarray(vectors, dtype=np.float32) @ query_vec  # (N, D) @ (D,) -> (N,)
    return late_weight * maxsim + (1.0 - late_weight) * cosine


# (one side, other side) of a direction: words of a caption that contradict a query naming the other
DIRECTIONS = (
    ({"left", "leftward", "leftwards"}, {"right", "rightward", "rightwards"}),
    ({"toward", "towards", "closer", "nearer", "approach", "approaches", "approaching"},
     {"away", "farther", "further", "recede", "recedes", "receding", "distance"}),
    ({"up", "upward", "upwards", "rise", "rises", "rising"}, {"down", "downward", "downwards"}),
    ({"forward", "forwards"}, {"backward", "backwards"}),
    ({"clockwise"}, {"counterclockwise", "anticlockwise"}),
)


DIRECTION_WORDS = frozenset(w for pair in DIRECTIONS for side in pair for w in side)
VERTICAL_WORDS = frozenset().union(*DIRECTIONS[2])  # up/down: jumps and sits are often worded without them


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


# "up"/"down" name a direction only before a place or height ("up the hill", "jumps up high"); as the
# particle of a phrasal verb ("springs up", "wakes up", "sits down") they name none.
_UP_DOWN_PLACE = re.compile(r"\b(up|down)\b(?=\s+(?:the|a|an|its|his|her|their|into|onto|high|hill|"
                            r"stairs|steps|slope|ladder|and|&)\b)")


def direction_words(text: str) -> set[str]:
    """The words of ``text`` that name a direction (``DIRECTION_WORDS``); particles "up"/"down" excluded."""
    text = text.lower()
    words = (_words(text) & DIRECTION_WORDS) - {"up", "down"}
    words |= {m.group(1) for m in _UP_DOWN_PLACE.finditer(text)}
    return words | {"down"} if "up and down" in text else words


def direction_rank(query: str, caption: str) -> int:
    """0: the caption names the direction(s) the query names; 1: neither side (or the query names
    none); 2: the caption names only the opposite side of a direction the query names."""
    q, c = direction_words(query), direction_words(caption)
    rank = 1
    for a, b in DIRECTIONS:
        for mine, other in ((a, b), (b, a)):
            if q & mine and not q & other:
                if c & other and not c & mine:
                    return 2
                if c & mine:
                    rank = 0
    return rank


def _encode(encoder, text: str, late: bool):
    """-> (the query vector (D,), its token states (T, D) when the late reranker needs them, else None)."""
    return encoder.encode_query(text) if late else (encoder.encode([text])[0], None)


def check_inputs(query, k, mode, min_duration):
    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("query must be a non-empty string")
    if not isinstance(k, int) or k < 1:
        raise InvalidInput(f"k must be a positive integer, got {k!r}")
    if mode not in MODES:
        raise InvalidInput(f"mode must be one of {MODES}, got {mode!r}")
    if len(query) > 2000:
        raise InvalidInput(f"query must be at most 2000 characters, got {len(query)}")
    if min_duration is not None and not (math.isfinite(min_duration) and min_duration >= 0):
        raise InvalidInput(f"min_duration must be a finite number of seconds >= 0, got {min_duration!r}")


def search(index: ClipIndex, query: str, k: int = 5, min_duration: float | None = None,
           filters: dict | None = None, mode: str = "hybrid",
           config: SearchConfig | None = None) -> list[Hit]:
    """The ``k`` clips best matching ``query`` (best first), as ``Hit``s with their spans."""
    # 1. Check inputs
    check_inputs(query, k, mode, min_duration)
    cfg = config or SearchConfig()
    if cfg.rerank not in ("late", "rrf"):
        raise InvalidInput(f"SearchConfig.rerank must be 'late' or 'rrf', got {cfg.rerank!r}")
    where = build_where(min_duration, filters)
    tbl = index.table  # IndexError_ naming the folder if the index was never built
    original = query
    if cfg.expand:
        query = rewrite_query(query, index.vocabulary(), index.encoder, keep=DIRECTION_WORDS)
    rewordings = caption_rewordings(query, index.vocabulary()) if cfg.expand else []

    # 2. Encode the query (vector and hybrid modes); late reranking also needs its token states
    late = mode == "hybrid" and cfg.rerank == "late"
    vec = q_tok = None
    if mode != "fts":
        # every wording: the rewrite (which may pick a wrong sense), the original (which keeps it),
        # and the captions' other words for its verbs; one mean vector, all their token states
        texts = [query] + ([original] if query != original else []) + rewordings
        encoded = [_encode(index.encoder, t, late) for t in texts]  # [((384,), (Tq, 384) or None)]
        vec = np.sum([v for v, _ in encoded], axis=0)
        vec = vec / np.linalg.norm(vec)
        q_tok = np.concatenate([t for _, t in encoded]) if late else None
    columns = HIT_COLUMNS + ([VECTOR_COLUMN] if late else [])
    limit = k if mode != "hybrid" else max(k, cfg.candidates)

    # 3. Run the legs: vector (exact below the ANN threshold, IVF-PQ + exact refine above), FTS
    legs = {}
    if mode in ("vector", "hybrid"):
        q = (tbl.search(vec, query_type="vector", vector_column_name=VECTOR_COLUMN)
             .distance_type("cosine").select(columns + ["_distance"]).limit(limit))
        q = q.nprobes(cfg.nprobes).refine_factor(cfg.refine_factor) if index.use_ann() else q.bypass_vector_index()
        legs["vector"] = (q.where(where, prefilter=True) if where else q).to_arrow()
    if mode in ("fts", "hybrid"):
        q = (tbl.search(MatchQuery(" ".join([query] + rewordings), "caption"), query_type="fts")
             .select(columns + ["_score"]).limit(limit))
        legs["fts"] = (q.where(where, prefilter=True) if where else q).to_arrow()

    # 4. Score: one leg as is; hybrid = weighted RRF fusion, then (default) late-interaction rerank
    if mode == "vector":
        table, scores = legs["vector"], 1.0 - legs["vector"]["_distance"].to_numpy()  # cosine similarity
    elif mode == "fts":
        table, scores = legs["fts"], legs["fts"]["_score"].to_numpy()  # BM25
    else:
        vt, ft = legs["vector"].select(columns), legs["fts"].select(columns)
        fused = rrf_fuse([(cfg.vector_weight, vt["clip_id"].to_pylist()),
                          (1.0 - cfg.vector_weight, ft["clip_id"].to_pylist())], cfg.rrf_k)
        table = pa.concat_tables([vt, ft])
        first = {}  # clip_id -> first row (a clip found by both legs appears twice)
        for i, cid in enumerate(table["clip_id"].to_pylist()):
            first.setdefault(cid, i)
        table = table.take(pa.array(list(first.values()), type=pa.int64()))
        scores = np.array([fused[c] for c in first], dtype=np.float64)
        if late and table.num_rows:
            # rerank only the best fused candidates: each uncached caption costs a MiniLM pass
            top = np.argsort(-scores, kind="stable")[:max(k, cfg.rerank_top)]
            table = table.take(pa.array(top, type=pa.int64()))
            scores = late_interaction_scores(index.encoder, q_tok, table["caption"].to_pylist(),
                                             table[VECTOR_COLUMN].to_pylist(), vec, cfg.late_weight)
    order = np.argsort(-scores, kind="stable")
    if mode == "hybrid" and cfg.direction_check:
        rank = np.array([direction_rank(query, c) for c in table["caption"].to_pylist()])
        order = order[np.argsort(rank[order], kind="stable")]  # same direction first, the opposite last
    order = order[:k]
    table, scores = table.take(order), scores[order]

    # 5. Convert
    hits = []
    for r, score in zip(table.to_pylist(), scores):
        hits.append(Hit(clip_id=r["clip_id"], score=float(score), caption=r["caption"], path=r["path"],
                        start_frame=int(r["start_frame"]), end_frame=int(r["end_frame"]),
                        fps=float(r["fps"]), duration_s=float(r["duration_s"])))
    return hits
