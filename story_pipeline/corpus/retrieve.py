"""Per-shot stages of a story: motion-structure retrieval (paper step 2), memoised by content.

    from story_pipeline.corpus.retrieve import retrieve_shot
    r = retrieve_shot(index, story, story.shot("leap"))     # ShotRetrieval
    r.chosen["clip_id"], r.chosen["start_frame"], r.chosen["end_frame"]

A shot needs a clip at least as long as itself (``frames / fps`` seconds): retrieval searches
with that minimum duration and keeps the top-k candidates so later stages can fall back to the
next one. A pinned clip (``clip:`` in the story) wins over retrieval. When no clip qualifies,
the error names the best near-misses (what is too short, by how much). Each candidate's span is
then narrowed to the shot's window of it (``corpus/window.py``: the shot's length of clip time at
its ``pace``, where the clip moves most); the record keeps the clip's own span in ``window``.
"""

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from story_pipeline.errors import StoryPipelineError
from story_pipeline.fsutil import atomic_write_text
from story_pipeline.corpus.index import ClipIndex
from story_pipeline.corpus.search import (
    HIT_COLUMNS, VERTICAL_WORDS, Hit, direction_rank, direction_words, rrf_fuse, search,
)
from story_pipeline.corpus.window import clip_window
from story_pipeline.story.spec import Shot, Story

RETRIEVAL_VERSION = 13  # bump when what retrieve_shot returns changes for the same inputs


class RetrievalError(StoryPipelineError):
    """No corpus clip can drive a shot (none long enough, or a pinned clip is missing/too short)."""


ACTION_CANDIDATES = 20  # clips from the full-query and the motion-only searches that are fused
ACTION_WEIGHT = 1.0  # the motion-only list's weight in the fusion (the full query's is 1)
KIND_MATCH = 0.56  # kind_score at or above which a caption names the character's kind (bench/retrieval.py)
KIND_CANDIDATES = 40  # clips of the "<kind> <motion>" search checked for the kind
# A clip of the kind counts as showing the motion when its motion-only search score is at least this
# share of the best clip's (any kind). Measured on 300 ToyWorld captions (bench/retrieval.py --shots):
# 0.5 keeps 97.5% of right kind-and-motion clips; higher values lose paraphrased captions ("twirls"
# for "spins"), lower ones take the kind's clip of another motion when the kind never does this one.
MOTION_RATIO = 0.5


@dataclass
class ShotRetrieval:
    story_id: str
    shot_id: str
    query: str
    needed_seconds: float  # the shot's frames / fps: a usable clip is at least this long
    candidates: list[dict]  # Hit fields, best first (all long enough); span = the shot's window (see "window")
    chosen: dict  # the candidate the shot uses (the first, or the pinned clip)
    pinned: bool = False
    reason: str = ""  # why the chosen clip won (shown in the asset's metadata)
    index_version: str = ""  # the clip index's data version this was retrieved from
    memo_key: str = ""
    cache_hit: bool = field(default=False, compare=False)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d.pop("cache_hit")
        return json.dumps(d, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ShotRetrieval":
        return cls(**json.loads(text))


def _hit_dict(h: Hit) -> dict:
    return dataclasses.asdict(h)


def _pinned(index: ClipIndex, clip_id: str) -> dict | None:
    safe = clip_id.replace("'", "''")
    rows = index.table.search().where(f"clip_id = '{safe}'").select(HIT_COLUMNS).limit(1).to_list()
    if not rows:
        return None
    row = {k: rows[0][k] for k in HIT_COLUMNS}
    return {"score": 1.0, **row}


def retrieval_memo_key(story: Story, shot: Shot, index_version: str, k: int) -> str:
    from story_pipeline.story.spec import shot_content_hash

    payload = json.dumps([RETRIEVAL_VERSION, shot_content_hash(story, shot), index_version, k])
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def retrieve_shot(index: ClipIndex, story: Story, shot: Shot, k: int = 5) -> ShotRetrieval:
    """Top-k long-enough clips for a shot (or its pinned clip). Raises RetrievalError if none."""
    settings = story.resolved(shot)
    needed = settings.frames / settings.fps
    query = story.shot_query(shot)
    where = f"{story.source or story.id}: shot {shot.id!r}"
    kinds = [corpus_kind(index, c.class_word) for c in story.characters_in(shot)]  # as the captions say them
    if shot.clip:
        row = _pinned(index, shot.clip)
        if row is None:
            raise RetrievalError(f"{where} pins clip {shot.clip!r}, which is not in the clip index; "
                                 "check the id with `story search` or remove `clip:`.")
        if row["duration_s"] + 1e-6 < needed:
            raise RetrievalError(f"{where} pins clip {shot.clip!r} of {row['duration_s']:.2f} s but the shot needs "
                                 f"{needed:.2f} s ({settings.frames} frames at {settings.fps} fps); "
                                 "pin a longer clip or shorten the shot.")
        [row] = _with_kind_fit(index, kinds, [clip_window(row, needed, settings.pace)])
        return ShotRetrieval(story.id, shot.id, query, needed, [row], row, pinned=True)
    hits = search(index, query, k=max(k, ACTION_CANDIDATES), min_duration=needed - 1e-6)
    action = story.shot_action(shot)
    reason = "best match of the query"
    if hits and action:
        # Fuse with a search for the motion alone: the clip should show the named motion first
        # and the character's kind second (tau relaxes a silhouette; nothing fixes a wrong motion).
        acted = search(index, action, k=ACTION_CANDIDATES, min_duration=needed - 1e-6)
        fused = rrf_fuse([(1.0, [h.clip_id for h in hits]), (ACTION_WEIGHT, [h.clip_id for h in acted])])
        by_id = {h.clip_id: h for h in hits + acted}
        hits = [dataclasses.replace(by_id[c], score=s)
                for c, s in sorted(fused.items(), key=lambda kv: -kv[1])]
        if kinds:
            hits, reason = kind_first(index, hits, acted, kinds, action, needed - 1e-6)
    hits = hits[:k]
    if not hits:
        near = search(index, query, k=3)
        misses = ", ".join(f"{h.clip_id} ({h.duration_s:.1f} s)" for h in near) or "none"
        raise RetrievalError(f"{where} needs a clip of at least {needed:.2f} s for {query!r} but the corpus has "
                             f"none that long (nearest matches: {misses}); shorten the shot (frames/fps) or "
                             "add longer clips.")
    cands = _with_kind_fit(index, kinds, [clip_window(_hit_dict(h), needed, settings.pace) for h in hits])
    return ShotRetrieval(story.id, shot.id, query, needed, cands, cands[0], reason=reason)


def _with_kind_fit(index: ClipIndex, kinds: list[str], cands: list[dict]) -> list[dict]:
    """Each candidate with ``kind_score`` and ``kind_fit``: whether its caption names ``kinds`` (the shot's
    characters'; the render relaxes structure guidance on a clip of another kind: ``render/guidance.py``).
    Unchanged for a shot without characters."""
    if not kinds:
        return cands
    scores = kind_score(index.encoder, kinds, [c["caption"] for c in cands])
    return [{**c, "kind_score": round(s, 3), "kind_fit": s >= KIND_MATCH} for c, s in zip(cands, scores)]


def corpus_kind(index: ClipIndex, kind: str) -> str:
    """The class word as the captions say it: "hare" -> "rabbit", "tomcat" -> "cat" (WordNet query
    expansion, ``corpus/lexicon.py``); the word itself when the captions use it or know no relative."""
    from story_pipeline.corpus.lexicon import rewrite_query

    rewritten = rewrite_query(f"a {kind}", index.vocabulary(), index.encoder)  # "a": read as a noun
    return rewritten.split(" ", 1)[1] if " " in rewritten else kind


def kind_score(encoder, kinds: list[str], captions: list[str]) -> list[float]:
    """How well each caption names the kinds (class words): per kind, the mean over its word pieces of
    the best cosine to a caption word piece (MiniLM token states, in context), averaged over kinds.
    A caption naming the kind or a synonym ("kitten" for cat) scores >= ~0.6, another kind <= ~0.5."""
    import numpy as np

    kind_tokens = encoder.token_states(kinds)
    return [float(np.mean([(k @ c.T).max(axis=1).mean() for k in kind_tokens]))
            for c in encoder.token_states(captions)]


def kind_first(index: ClipIndex, hits: list[Hit], acted: list[Hit], kinds: list[str], action: str,
               min_duration: float) -> tuple[list[Hit], str]:
    """Clips that show the motion *and* the character's kind first, then clips that show the motion
    by how near their kind is, then the fused rest; -> (hits, why the first won).

    The kind's clips: a search for "a <kind> <motion>" (and the fused hits) whose captions name the
    kind (``kind_score``). The motion among them: the motion-only search restricted to those clips; its
    best counts as showing the motion when it scores at least MOTION_RATIO of the unrestricted best, or
    when its caption uses the motion's verb or a WordNet synonym of it in any inflection ("hopping
    around" for "hops", "tumbles" for "topples"; after a light verb the noun: "gives a wave"); those naming
    the verb come first. A motion with
    a level direction (left/right, toward/away) is shown only by captions naming that direction."""
    from story_pipeline.corpus.lexicon import main_verb, same_verb

    named = " and ".join(kinds)
    top = acted[0].score if acted else 0.0
    verb = main_verb(action)
    directed = direction_words(action)
    # A motion with a level direction ("walks to the left", "toward the camera") is shown only by a caption
    # naming that direction: the kind's "walks away" is not its "walks to the left". Up/down go with
    # jumps and sits, which captions word without them ("leaps into the air").
    level = bool(directed - VERTICAL_WORDS)

    def named_verb(h: Hit) -> bool:  # "hopping" for "hops", "tumbles" for "topples"; same direction
        return bool(verb) and same_verb(verb, h.caption) and (not directed or direction_rank(action, h.caption) == 0)

    def moving(found: list[Hit]) -> list[Hit]:  # those that show the motion (the same way, if it has one),
        # those naming its verb first: "puppy twirling" before a turn-around that scores higher on "spins"
        shown = [h for h in found if (h.score >= MOTION_RATIO * top or named_verb(h))
                 and direction_rank(action, h.caption) < (1 if level else 2)]
        return sorted(shown, key=lambda h: not named_verb(h))

    pool = {h.clip_id: h for h in search(index, " ".join(f"a {k}" for k in kinds) + f" {action}",
                                         k=KIND_CANDIDATES, min_duration=min_duration) + hits}
    scores = dict(zip(pool, kind_score(index.encoder, kinds, [h.caption for h in pool.values()])))
    of_kind = [c for c, s in scores.items() if s >= KIND_MATCH]
    first: list[Hit] = []
    if of_kind:
        ranked = search(index, action, k=len(of_kind), min_duration=min_duration, filters={"clip_id": of_kind})
        first = moving(ranked)
    if first:
        why = f"shows the motion ({action!r}) and the kind ({named})"
    else:
        shown = moving(acted)
        near = kind_score(index.encoder, kinds, [h.caption for h in shown])
        first = [h for _, h in sorted(zip(near, shown), key=lambda sh: -sh[0])]
        why = (f"no clip long enough shows a {named} doing {action!r}; this one shows the motion with the "
               f"nearest kind (kind score {max(near):.2f})" if first else
               f"no clip long enough clearly shows {action!r}; best match of the query")
    seen, out = set(), []
    for h in first + hits:
        if h.clip_id not in seen:
            seen.add(h.clip_id)
            out.append(h)
    return out, why


def retrieval_dir(artifacts_dir: Path, story_id: str) -> Path:
    """Where a story's shot_retrievals live: ``<shot>.json`` (current) and ``.memo/<key>.json``."""
    return Path(artifacts_dir) / "shot_retrievals" / story_id




def retrieve_shot_cached(index: ClipIndex, story: Story, shot: Shot, cache_dir: Path, k: int = 5) -> ShotRetrieval:
    """``retrieve_shot`` memoised on disk by (shot content hash, index data version, k).

    An unchanged shot over an unchanged index is read back, never searched again — across
    processes and restarts (the memo is a file, not an in-memory cache)."""
    index_version = index.data_version()
    key = retrieval_memo_key(story, shot, index_version, k)
    path = Path(cache_dir) / f"{key}.json"
    if path.exists():
        r = ShotRetrieval.from_json(path.read_text())
        r.cache_hit = True
        return r
    r = retrieve_shot(index, story, shot, k)
    r.index_version, r.memo_key = index_version, key
    atomic_write_text(path, r.to_json())
    return r
