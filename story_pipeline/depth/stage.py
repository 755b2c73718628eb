"""The shot_depth stage: the chosen clip's motion structure, memoised by what determines it.

    from story_pipeline.depth.stage import shot_depth_for
    d = shot_depth_for(artifacts_dir, story, shot, load_estimator)   # reads the shot's retrieval
    d.depth_path, d.preview_path, d.cache_hit, d.estimator_calls
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from story_pipeline.corpus.retrieve import ShotRetrieval, retrieval_dir
from story_pipeline.errors import NotReady
from story_pipeline.fsutil import atomic_write_text
from story_pipeline.story.spec import Shot, Story


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


def shot_depth_for(artifacts_dir: Path, story: Story, shot: Shot, load_estimator, normalise: str = "clip") -> ShotDepth:
    """The shot_depth stage: the depth of the shot's chosen clip (memoised) made the shot's current one
    (``<shot>.json``). ``load_estimator()`` is called only when the memo has to be computed."""
    pointer = retrieval_dir(artifacts_dir, story.id) / f"{shot.id}.json"
    if not pointer.exists():
        raise NotReady(f"Shot {shot.id!r} has no retrieval yet ({pointer} is missing); materialize "
                           f"{story.id}/shots/{shot.id}_retrieval first.")
    retrieval = ShotRetrieval.from_json(pointer.read_text())
    settings = story.resolved(shot)
    width, height = settings.resolution
    d = shot_depth_cached(retrieval, settings.frames, (height, width), load_estimator(),
                          cache_dir=depth_dir(artifacts_dir, story.id) / ".memo", normalise=normalise)
    atomic_write_text(depth_dir(artifacts_dir, story.id) / f"{shot.id}.json",  # the current depth of the shot
                      json.dumps({"depth": str(d.depth_path), "preview": str(d.preview_path)}))
    return d
