"""The shot_depth stage: the chosen clip's motion structure, memoised by what determines it."""



import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from story_pipeline.story.spec import Shot, Story
from story_pipeline.corpus.retrieve import ShotRetrieval, retrieval_dir, retrieval_memo_key

def depth_dir(artifacts_dir: Path, story_id: str) -> Path:
    """Where a story's shot_depth memos live: ``.memo/<key>.safetensors`` + ``.gif``."""
    return Path(artifacts_dir) / "shot_depth" / story_id


# --- motion structure (paper step 3), memoised by what determines it -----------------------------
@dataclass
class ShotDepth:
    depth_path: Path  # safetensors: (F, H, W) float32 in [-1, 1]
    preview_path: Path  # GIF: source frames | depth
    metadata: dict
    cache_hit: bool
    estimator_calls: int  # 0 on a cache hit: the memo is read, no model runs


def depth_memo_key(retrieval: ShotRetrieval, frames: int, size: tuple[int, int], model_id: str,
                   normalise: str) -> str:
    from story_pipeline.depth.structure import FORMAT_VERSION

    c = retrieval.chosen
    try:  # the clip's bytes (size + mtime) stand in for its content; a re-encoded file recomputes
        st = Path(c["path"]).stat()
        file_id = [st.st_size, st.st_mtime_ns]
    except OSError:
        file_id = None
    payload = json.dumps([FORMAT_VERSION, c["clip_id"], c["path"], file_id, c["start_frame"], c["end_frame"],
                          frames, list(size), model_id, normalise])
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def shot_depth_cached(retrieval: ShotRetrieval, frames: int, size: tuple[int, int], estimator,
                      cache_dir: Path, normalise: str = "clip") -> ShotDepth:
    """The shot's depth from its chosen clip, read from the memo when the clip span, frame count,
    size, estimator and normalisation are unchanged (a prompt-only edit reuses the depth)."""
    from story_pipeline.depth.structure import depth_preview, load_motion_structure, motion_structure, save_motion_structure

    key = depth_memo_key(retrieval, frames, size, estimator.model_id, normalise)
    path, preview = Path(cache_dir) / f"{key}.safetensors", Path(cache_dir) / f"{key}.gif"
    if path.exists() and preview.exists():
        return ShotDepth(path, preview, load_motion_structure(path).metadata, cache_hit=True, estimator_calls=0)
    ms = motion_structure(retrieval.chosen, frames, size, estimator, normalise=normalise)
    depth_preview(ms, preview)  # preview first: the tensor's presence marks the memo complete
    save_motion_structure(ms, path)
    return ShotDepth(path, preview, ms.metadata, cache_hit=False, estimator_calls=1)


def current_retrieval(artifacts_dir: Path, index_version: str, story: Story, shot: Shot, estimator_model_id: str,
                      normalise: str = "clip", k: int = 5) -> ShotRetrieval | None:
    """The shot's stored retrieval if its assets already hold what its current inputs give (the
    retrieval was made for this shot text + index version, and the depth memo for its clip
    exists), else None. A run would then only read memos, so `story run` need not launch one."""
    current = retrieval_dir(artifacts_dir, story.id) / f"{shot.id}.json"
    if not current.exists():
        return None
    r = ShotRetrieval.from_json(current.read_text())
    if r.memo_key != retrieval_memo_key(story, shot, index_version, k):
        return None
    settings = story.resolved(shot)
    width, height = settings.resolution
    key = depth_memo_key(r, settings.frames, (height, width), estimator_model_id, normalise)
    return r if (depth_dir(artifacts_dir, story.id) / ".memo" / f"{key}.safetensors").exists() else None
