"""Clip-corpus ingestion: any folder of captioned videos -> a table of single-shot clips.

    python -c "from story_pipeline.corpus.ingest import *; print(ingest_corpus('data/corpus').clips)"

A corpus folder holds videos with captions, given either by a WebVid-style manifest
(``manifest.csv`` / ``manifest.parquet`` with columns id, caption, path[, duration]; path relative
to the manifest's folder) or by a sidecar caption (``foo.mp4`` + ``foo.txt``). Each video is

1. checked against DecodeLimits before decoding: file size, then the container header (PyAV),
2. probed with decord (frame count, fps),
3. decoded once with PyAV to find damage: frames that fail to decode, black frames, noise-like or
   grey/green garbage (``corpus/damage.py``); a damaged file is trimmed to its clean parts (a
   warning says which frames went) or rejected if too little of it is clean,
4. split into single-shot clips with PySceneDetect (the paper retrieves single-event clips);
   a clip is a frame span [start_frame, end_frame) of the original file, nothing is re-encoded
(steps 1, 2, 4: ``corpus/probe.py``).

Every problem with one file (missing, empty, corrupt, damaged, not a video, too short, above the
limits, duplicate id, bad caption, path outside the corpus) becomes a Rejection with a one-sentence
reason; the run goes on with the other files. Only an unusable corpus folder raises CorpusError.
"""

import csv
import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from story_pipeline.config import DecodeLimits
from story_pipeline.corpus.damage import usable_spans
from story_pipeline.corpus.probe import VideoRejected, probe_video
from story_pipeline.errors import CorpusError
from story_pipeline.fsutil import atomic_path, file_sha256

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts"}
MANIFEST_NAMES = ("manifest.csv", "manifest.parquet")

# One row per single-shot clip. Frame spans index the decoded frames of `path` (end exclusive).
CLIP_SCHEMA = pa.schema([
    ("clip_id", pa.string()),       # video_id if single-shot, else f"{video_id}-s{k:02d}" per shot
    ("video_id", pa.string()),      # id from the manifest, or the sidecar video's relative path
    ("path", pa.string()),          # absolute path of the source video file
    ("caption", pa.string()),       # whitespace-normalised caption (shared by all shots of a video)
    ("start_frame", pa.int64()),    # first frame of the shot
    ("end_frame", pa.int64()),      # one past the last frame of the shot
    ("num_frames", pa.int64()),     # end_frame - start_frame
    ("fps", pa.float64()),          # average frame rate of the source video
    ("width", pa.int64()),
    ("height", pa.int64()),
    ("duration_s", pa.float64()),   # num_frames / fps (duration of the shot, not the file)
    ("content_hash", pa.string()),  # sha256(file bytes, span, caption): changes iff the clip does
    ("source", pa.string()),        # top-level folder of the video or its manifest, e.g. "toyworld"
])


@dataclass(frozen=True)
class Rejection:
    path: str          # the offending file (video, caption or manifest)
    id: str | None     # video id when known
    reason: str        # one sentence naming the file and the problem
    # missing | empty | corrupt | damaged_video | not_video | too_short | too_large | duplicate |
    # bad_caption | no_caption | outside_corpus | hidden | bad_manifest
    kind: str

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class VideoEntry:
    video_id: str
    path: Path         # absolute, resolved, inside the corpus folder
    caption: str
    origin: str        # where the entry came from, e.g. "manifest.csv row 3" or "sidecar foo.txt"
    source: str        # top-level folder of the manifest/video (the corpus's name at its top)


@dataclass
class IngestResult:
    clips: pa.Table                                   # CLIP_SCHEMA
    rejected: list[Rejection] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    videos: int = 0                                   # videos that produced at least one clip
    seconds: float = 0.0                              # wall time of the whole ingest

    @property
    def clips_per_s(self) -> float:
        return self.clips.num_rows / self.seconds if self.seconds > 0 else 0.0


# ----------------------------------------------------------------------------------------------
# Discovery: manifests + sidecar captions -> VideoEntry list (no file is opened as video here)


def _is_hidden(path: Path, root: Path) -> bool:
    """Dotfiles and dot-folders (atomic temp files start with '.') are never part of a corpus."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _list_files(root: Path) -> list[Path]:
    """Every non-hidden file under ``root``, sorted; dot-folders are not even entered."""
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files += [Path(folder) / n for n in names if not n.startswith(".")]
    return sorted(files)


def _has_bad_bytes(text: str) -> bool:
    """True if ``text`` was decoded with errors='surrogateescape' from bytes that are not UTF-8."""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _resolve(path: Path) -> Path | None:
    """``path.resolve()``, or None for a path no file can be at: a symlink loop (RuntimeError on
    Python 3.11), a NUL byte (ValueError), a name too long (OSError)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):
        return None


def _clean_caption(text: str) -> str:
    return " ".join(text.split())


def _read_manifest_rows(manifest: Path) -> list[dict] | None:
    """Rows of a WebVid-style manifest as dicts of str (None for our own clip tables).

    Raises ValueError (or a parser error) if the manifest is unusable.
    """
    if manifest.suffix == ".csv":
        # surrogateescape: a non-UTF-8 caption spoils only its own row, not the whole file.
        with open(manifest, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rows = list(reader)
    else:
        if "clip_id" in pq.read_schema(manifest).names:
            return None  # a clip table written by write_manifest, not a source manifest
        table = pq.read_table(manifest)
        columns = table.column_names
        rows = []
        for row in table.to_pylist():
            rows.append({k: (v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v)
                         for k, v in row.items()})
    missing = [c for c in ("id", "caption", "path") if c not in columns]
    if missing:
        raise ValueError(f"it lacks the column(s) {', '.join(missing)} (need id, caption, path)")
    return rows


def discover_sources(corpus_dir: str | os.PathLike) -> tuple[list[VideoEntry], list[Rejection]]:
    """Find every captioned video under ``corpus_dir``.

    Manifests (any ``manifest.csv`` / ``manifest.parquet`` in the tree, shallowest first) come
    first; then videos not listed in any manifest, captioned by a sidecar ``.txt``. Ids are
    unique: the second use of an id (or of a video file) is rejected.
    """
    root = Path(corpus_dir)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise CorpusError(f"Corpus folder {root} {what}: point the ingest at a folder of videos.")
    root = root.resolve()

    files = _list_files(root)
    entries: list[VideoEntry] = []
    rejected: list[Rejection] = []
    seen_ids: dict[str, str] = {}       # id -> origin of its first use
    claimed: dict[Path, str] = {}       # video path -> id, for every file a manifest names

    def reject(path, video_id: str | None, reason: str, kind: str) -> None:
        rejected.append(Rejection(str(path), video_id, reason, kind))

    def source_of(path: Path) -> str:
        rel = path.relative_to(root)
        return rel.parts[0] if len(rel.parts) > 1 else root.name

    def add(video_id: str, path: Path, caption: str, origin: str, shown, source: str) -> None:
        # Checks shared by manifest rows and sidecar videos; `shown` is the file named in reasons.
        if video_id in seen_ids:
            reject(shown, video_id, f"{shown}: duplicate id '{video_id}' (already used by "
                   f"{seen_ids[video_id]}); skipped.", "duplicate")
            return
        seen_ids[video_id] = origin
        if _has_bad_bytes(caption):
            reject(shown, video_id, f"{shown}: the caption of '{video_id}' is not valid UTF-8; "
                   "re-save it as UTF-8.", "bad_caption")
            return
        caption = _clean_caption(caption)
        if not caption:
            reject(shown, video_id, f"{shown}: the caption of '{video_id}' is empty.",
                   "bad_caption")
            return
        entries.append(VideoEntry(video_id, path, caption, origin, source))

    # 1. Manifests, shallowest first: the corpus's top-level manifest wins duplicate ids.
    manifests = [p for p in files if p.name in MANIFEST_NAMES]
    for manifest in sorted(manifests, key=lambda p: (len(p.parts), p)):
        try:
            rows = _read_manifest_rows(manifest)
        except Exception as e:  # a broken manifest must not stop the other sources
            reject(manifest, None, f"Manifest {manifest} is unusable: {e}.", "bad_manifest")
            continue
        for i, row in enumerate(rows or [], start=2 if manifest.suffix == ".csv" else 0):
            where = f"Manifest {manifest} row {i}"
            video_id, raw_path, caption = ("" if row.get(c) is None else str(row[c])
                                           for c in ("id", "path", "caption"))
            video_id, raw_path = video_id.strip(), raw_path.strip()
            if not video_id or not raw_path or _has_bad_bytes(video_id + raw_path) or "\x00" in raw_path:
                reject(manifest, video_id or None, f"{where}: id and path must be non-empty "
                       "UTF-8 text without NUL bytes.", "bad_manifest")
                continue
            path = _resolve(manifest.parent / raw_path)
            shown = manifest.parent / raw_path
            if path is None:
                reject(shown, video_id, f"{where}: path '{raw_path}' of '{video_id}' cannot be resolved "
                       "(a symlink loop or a name too long); skipped.", "missing")
                continue
            if not path.is_relative_to(root):
                reject(shown, video_id, f"{where}: path '{raw_path}' of '{video_id}' points "
                       f"outside the corpus folder {root}; skipped.", "outside_corpus")
                continue
            if path in claimed:
                reject(path, video_id, f"{path}: listed twice (as '{claimed[path]}' and "
                       f"'{video_id}'); kept the first.", "duplicate")
                continue
            claimed[path] = video_id
            if _is_hidden(path, root):
                reject(path, video_id, f"{path}: is a hidden or temporary file (name starts "
                       "with '.'); skipped.", "hidden")
                continue
            origin = f"{manifest.relative_to(root)} row {i}"
            add(video_id, path, caption, origin, path, source_of(manifest))

    # 2. Videos with sidecar captions (foo.mp4 + foo.txt), unless a manifest names them.
    for video in (p for p in files if p.suffix.lower() in VIDEO_SUFFIXES and p not in claimed):
        video_id = video.relative_to(root).with_suffix("").as_posix().replace("/", "__")
        real = _resolve(video)
        if real is None:
            reject(video, video_id, f"{video}: cannot be resolved (a symlink loop or a name too long); "
                   "skipped.", "missing")
            continue
        if not real.is_relative_to(root):  # a symlink out of the corpus
            reject(video, video_id, f"{video}: is a link to a file outside the corpus folder "
                   f"{root}; skipped.", "outside_corpus")
            continue
        sidecar = video.with_suffix(".txt")
        if not sidecar.is_file():
            reject(video, video_id, f"{video}: has no caption; add {sidecar.name} beside it or "
                   "list it in a manifest.csv.", "no_caption")
            continue
        caption = sidecar.read_bytes().decode("utf-8", errors="surrogateescape")
        # A bad caption is reported against the .txt file, anything else against the video.
        shown = sidecar if _has_bad_bytes(caption) else video
        origin = f"sidecar {sidecar.relative_to(root)}"
        add(video_id, video, caption, origin, shown, source_of(video))
    return entries, rejected


# ----------------------------------------------------------------------------------------------
# The whole corpus


def _clip_rows(entry: VideoEntry, limits: DecodeLimits, split: bool,
               source: str | None) -> tuple[list[dict], str | None]:
    """The clip rows of one video, and a warning if damaged frames were left out (corpus/damage.py)."""
    info = probe_video(entry.path, limits)
    spans, warning = usable_spans(entry.path, info, limits, split)
    if not spans:
        raise VideoRejected(f"{entry.path}: no shot is at least {limits.min_frames} frames long.",
                            "too_short")
    file_hash = file_sha256(entry.path)
    rows = []
    for k, (start, end) in enumerate(spans):
        clip_id = entry.video_id if len(spans) == 1 else f"{entry.video_id}-s{k:02d}"
        key = f"{file_hash}:{start}:{end}:{entry.caption}"
        content_hash = hashlib.sha256(key.encode()).hexdigest()
        rows.append(dict(clip_id=clip_id, video_id=entry.video_id, path=str(entry.path),
                         caption=entry.caption, start_frame=start, end_frame=end,
                         num_frames=end - start, fps=info.fps, width=info.width,
                         height=info.height, duration_s=(end - start) / info.fps,
                         content_hash=content_hash, source=source or entry.source))
    return rows, warning


def ingest_corpus(
    corpus_dir: str | os.PathLike,
    limits: DecodeLimits | None = None,
    *,
    split: bool = True,                                   # split multi-shot videos into shots
    progress: Callable[[int, int], None] | None = None,   # progress(done, total) per video
    workers: int | None = None,                           # parallel threads; None: min(4, CPUs)
    source: str | None = None,                            # overrides every row's `source`
) -> IngestResult:
    """Ingest every captioned video under ``corpus_dir`` into a CLIP_SCHEMA table.

    Raises CorpusError only when the folder itself is missing; every per-file problem is a
    Rejection in the result and the other files are still ingested.
    """
    t0 = time.perf_counter()
    limits = limits or DecodeLimits()
    # 1. Discover captioned videos.
    entries, rejected = discover_sources(corpus_dir)
    root = Path(corpus_dir).resolve()
    warnings = []
    if not entries and not rejected:
        warnings.append(f"Corpus folder {root} contains no videos or manifests.")

    # 2. Probe, check for damage and split each video (threads: decoders release the GIL).
    def work(entry: VideoEntry) -> tuple[list[dict], str | None] | Rejection:
        try:
            return _clip_rows(entry, limits, split, source)
        except VideoRejected as e:
            return Rejection(str(entry.path), entry.video_id, e.reason, e.kind)
        except Exception as e:  # a library bug on one odd file must not end the run
            logger.exception("unexpected error ingesting %s", entry.path)
            return Rejection(str(entry.path), entry.video_id,
                             f"{entry.path}: unexpected error while reading it ({e}).", "corrupt")

    rows: list[dict] = []
    seen_clip_ids: set[str] = set()
    videos = 0
    if progress is not None:
        progress(0, len(entries))
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, (entry, out) in enumerate(zip(entries, pool.map(work, entries)), start=1):
            if isinstance(out, Rejection):
                rejected.append(out)
            elif seen_clip_ids.intersection(r["clip_id"] for r in out[0]):
                # e.g. id "a-s01" in the manifest and shot 1 of video "a": keep the first.
                rejected.append(Rejection(str(entry.path), entry.video_id, f"{entry.path}: its "
                                          "clip ids collide with clips already ingested; rename "
                                          f"'{entry.video_id}'.", "duplicate"))
            else:
                video_rows, warning = out
                seen_clip_ids.update(r["clip_id"] for r in video_rows)
                rows.extend(video_rows)
                videos += 1
                if warning:  # damaged frames left out, or frames the header lists are missing
                    warnings.append(warning)
            if progress is not None:
                progress(done, len(entries))

    # 3. Table + summary.
    clips = pa.Table.from_pylist(rows, schema=CLIP_SCHEMA) if rows else CLIP_SCHEMA.empty_table()
    if not rows and rejected:
        warnings.append(f"No clip was ingested from {root}: all {len(rejected)} sources were "
                        "rejected.")
    for r in rejected:
        logger.warning("rejected: %s", r.reason)
    for w in warnings:
        logger.warning(w)
    result = IngestResult(clips=clips, rejected=rejected, warnings=warnings, videos=videos,
                          seconds=time.perf_counter() - t0)
    logger.info("ingested %d clips from %d videos in %.2f s (%.1f clips/s); %d rejected",
                clips.num_rows, videos, result.seconds, result.clips_per_s, len(rejected))
    return result


def write_manifest(table: pa.Table, path: str | os.PathLike) -> Path:
    """Write the clip table as Parquet atomically (readers never see a half-written file)."""
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table.select(CLIP_SCHEMA.names).cast(CLIP_SCHEMA), tmp)
    return Path(path)


def read_manifest(path: str | os.PathLike) -> pa.Table:
    """Read a clip table written by write_manifest; CorpusError if missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"Clip manifest {path} does not exist: run the ingest first.")
    try:
        table = pq.read_table(path)
    except Exception as e:
        raise CorpusError(f"Clip manifest {path} is not a readable Parquet file ({e}).") from None
    missing = [n for n in CLIP_SCHEMA.names if n not in table.column_names]
    if missing:
        raise CorpusError(f"Clip manifest {path} lacks the column(s) {', '.join(missing)}: "
                          "re-run the ingest.")
    return table.select(CLIP_SCHEMA.names).cast(CLIP_SCHEMA)
