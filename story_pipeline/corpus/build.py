"""The clip corpus stage: materialise the ToyWorld demo corpus (if asked), ingest every
source under the corpus folder, and write the clip manifest (Parquet) atomically.

Framework-free: the Dagster asset ``clip_corpus`` and the ``story`` CLI both call
:func:`build_clip_corpus`.
"""

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path


from story_pipeline.config import Settings
from story_pipeline.errors import CorpusError
from story_pipeline.corpus.ingest import IngestResult, Rejection, ingest_corpus, write_manifest

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}


@dataclass
class CorpusBuild:
    manifest_path: Path  # Parquet table of single-shot clips (see ingest.py for the schema)
    num_clips: int
    num_videos: int
    rejected: list[Rejection]
    data_version: str  # hash over the clips' content hashes: changes iff the corpus changes
    fingerprint: str = ""  # digest of the corpus folder listing that was ingested (see corpus_fingerprint)
    warnings: list[str] = field(default_factory=list)
    thumbnails_path: Path | None = None


DEFAULT_TOYWORLD_CLIPS = 300  # the embedded demo corpus: every species x motion pair ~2-3 times


def ensure_toyworld_corpus(settings: Settings, num_clips: int | None, seed: int, progress=None) -> Path | None:
    """Put the ToyWorld demo corpus under ``settings.toyworld_corpus_dir`` in the asked-for state.

    ``num_clips``: N > 0 makes it hold exactly N clips of ``seed`` (idempotent: an equal corpus
    is not re-rendered); 0 removes it; None keeps whatever is there, and renders the default
    corpus only when the corpus folder holds nothing at all (the embedded default).
    """
    if num_clips is None:
        if corpus_fingerprint(settings.corpus_dir):
            return None
        num_clips = DEFAULT_TOYWORLD_CLIPS
    if num_clips <= 0:
        if settings.toyworld_corpus_dir.exists():
            shutil.rmtree(settings.toyworld_corpus_dir)
        return None
    from story_pipeline.toyworld.corpus import write_toyworld_corpus

    return write_toyworld_corpus(settings.toyworld_corpus_dir, n=num_clips, seed=seed, progress=progress)


def manifest_path(settings: Settings) -> Path:
    return settings.artifacts_dir / "clip_corpus" / "clips.parquet"


def clips_data_version(result: IngestResult) -> str:
    hashes = sorted(result.clips.column("content_hash").to_pylist()) if result.clips.num_rows else []
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()[:16]


def build_clip_corpus(
    settings: Settings,
    toyworld_clips: int | None = None,
    toyworld_seed: int = 0,
    progress=None,
    thumbnails: int = 8,
) -> CorpusBuild:
    """Ingest everything under the corpus folder into one clip manifest.

    ``toyworld_clips`` is passed to :func:`ensure_toyworld_corpus` (None: keep what is there).
    ``progress(stage, done, total)`` is called as work advances (for progress bars).
    """
    corpus_dir = settings.corpus_dir
    ensure_toyworld_corpus(
        settings, toyworld_clips, toyworld_seed,
        progress=(lambda d, t: progress("toyworld", d, t)) if progress else None,
    )
    if not corpus_dir.is_dir():
        raise CorpusError(
            f"Corpus folder {corpus_dir} does not exist; create it and put videos with captions in it "
            "(or run `story corpus build --toyworld-clips 300` to generate the ToyWorld demo corpus)."
        )
    fingerprint = fingerprint_digest(corpus_fingerprint(corpus_dir))
    result = ingest_corpus(
        corpus_dir, settings.limits,
        progress=(lambda d, t: progress("ingest", d, t)) if progress else None,
    )
    out = manifest_path(settings)
    write_manifest(result.clips, out)
    thumbs = None
    if thumbnails and result.clips.num_rows:
        from story_pipeline.previews import thumbnail_strip

        thumbs = thumbnail_strip(result.clips, out.with_name("thumbnails.png"), n=thumbnails)
    videos = set(result.clips.column("video_id").to_pylist()) if result.clips.num_rows else set()
    return CorpusBuild(
        manifest_path=out,
        num_clips=result.clips.num_rows,
        num_videos=len(videos),
        rejected=list(result.rejected),
        data_version=clips_data_version(result),
        fingerprint=fingerprint,
        warnings=list(getattr(result, "warnings", [])),
        thumbnails_path=thumbs,
    )


def add_to_corpus(settings: Settings, folder: str | os.PathLike, name: str | None = None) -> Path:
    """Copy ``folder`` to ``<corpus>/<name>`` atomically (copy to a hidden temp folder, then rename)."""
    src = Path(folder)
    if not src.is_dir():
        raise CorpusError(f"{src} is not a folder; give a folder of videos with captions.")
    name = name or src.resolve().name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or name == "toyworld":
        raise CorpusError(
            f"Corpus name {name!r} must be letters, digits, '.', '_' or '-' (and not 'toyworld'); pass --name."
        )
    dest = settings.corpus_dir / name
    if dest.exists():
        raise CorpusError(f"{dest} already exists; pass another --name or remove it first.")
    settings.corpus_dir.mkdir(parents=True, exist_ok=True)
    tmp = settings.corpus_dir / f".{name}.adding"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        try:
            shutil.copytree(src, tmp, symlinks=True)  # links stay links: ingest rejects ones leading out
        except shutil.Error as e:  # per-file failures, collected: e.g. a named pipe or an unreadable file
            errors = e.args[0] if e.args and isinstance(e.args[0], list) else []
            first_src, _, why = errors[0] if errors and len(errors[0]) == 3 else (src, None, e)
            raise CorpusError(f"{first_src} cannot be copied into the corpus ({why}); remove it from {src} "
                              "and add the folder again.") from None
        except OSError as e:
            raise CorpusError(f"{src} cannot be copied into the corpus ({e.strerror or e}); nothing was added.") from None
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dest


def corpus_fingerprint(corpus_dir: str | os.PathLike) -> dict[str, list[int]]:
    """Cheap listing of the corpus folder: relative path -> [size, mtime_ns] for every file a
    reindex would read (videos, captions, manifests). Used as the reindex sensor's cursor."""
    corpus_dir = Path(corpus_dir)
    listing: dict[str, list[int]] = {}
    if not corpus_dir.is_dir():
        return listing
    for root, dirs, files in os.walk(corpus_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "depth_gt")
        for name in sorted(files):
            if name.startswith("."):
                continue
            p = Path(root) / name
            if p.suffix.lower() not in VIDEO_SUFFIXES | {".txt", ".csv", ".parquet"}:
                continue
            try:
                st = p.stat()
            except OSError:
                continue
            listing[str(p.relative_to(corpus_dir))] = [st.st_size, st.st_mtime_ns]
    return listing


def fingerprint_digest(listing: dict[str, list[int]]) -> str:
    return hashlib.sha256(json.dumps(listing, sort_keys=True).encode()).hexdigest()[:16]


def diff_fingerprints(old: dict[str, list[int]], new: dict[str, list[int]]) -> dict[str, list[str]]:
    """What changed between two listings: {"added": [...], "changed": [...], "removed": [...]}."""
    return {
        "added": sorted(set(new) - set(old)),
        "changed": sorted(k for k in set(new) & set(old) if new[k] != old[k]),
        "removed": sorted(set(old) - set(new)),
    }
