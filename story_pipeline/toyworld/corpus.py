"""Write the ToyWorld demo corpus: H.264 clips + a WebVid-style manifest + ground-truth depth.

    python -c "from story_pipeline.toyworld.corpus import write_toyworld_corpus as w; print(w('data/corpus/toyworld', 300, 0))"

Layout of out_dir:
    clips/<id>.mp4          H.264 yuv420p, fixed encoder parameters (byte-identical for the same seed)
    manifest.csv            id,caption,path,duration   (path relative to out_dir)
    attributes.jsonl        ground-truth attributes per clip (eval only)
    depth_gt/<id>.npz       np.load(...)["depth"]: float16 (F,H,W) metres (eval only, never read by the depth stage)
    params.json             what the corpus was generated from; a rerun with the same params is skipped
"""

import contextlib
import csv
import io
import itertools
import json
import multiprocessing
import os
import random
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from story_pipeline.fsutil import atomic_write_bytes, atomic_write_text
from story_pipeline.video_io import write_mp4  # noqa: F401  (re-exported: older imports)
from story_pipeline.toyworld.render import render_clip, render_still
from story_pipeline.toyworld.world import ACCESSORIES, CORPUS_COLOURS, MOTIONS, PATTERNS, SETTINGS, SPECIES, Character, ClipSpec

CORPUS_FORMAT = 2  # bump when the renderer changes so old corpora are regenerated

# Identities that never appear in the corpus: each uses a colour reserved from it (NOVEL_COLOURS),
# so personalization has to learn the look from the reference images alone.
NOVEL_CHARACTERS = (
    Character("cat", "teal", "gold", "striped", "scarf"),
    Character("robot", "gold", "teal", "spotted", "hat"),
    Character("duck", "lavender", "teal", "two-tone", "scarf"),
    Character("dog", "lavender", "gold", "spotted", "hat"),
    Character("bear", "teal", "lavender", "two-tone", "none"),
)

CLIP_LENGTHS = (24, 32, 40)  # frames; varied so duration filters have something to filter


def sample_specs(n: int, seed: int, size: int = 128, fps: int = 12, num_frames: int | None = None) -> list:
    """n ClipSpecs covering species x motion evenly (each round of 120 pairs shuffled), settings evenly,
    random corpus identities (never a NOVEL_CHARACTERS identity). num_frames None = from CLIP_LENGTHS."""
    if n < 0:
        raise ValueError(f"sample_specs needs n >= 0, got {n}.")
    rng = random.Random(f"toyworld-specs-{seed}")
    pairs = [(s, m) for s in SPECIES for m in MOTIONS]
    specs, pair_cycle, setting_cycle = [], [], []
    for _ in range(n):
        if not pair_cycle:
            pair_cycle = rng.sample(pairs, len(pairs))
        if not setting_cycle:
            setting_cycle = rng.sample(SETTINGS, len(SETTINGS))
        species, motion = pair_cycle.pop()
        colour = rng.choice(CORPUS_COLOURS)
        colour2 = rng.choice([c for c in CORPUS_COLOURS if c != colour])
        pattern = rng.choice(PATTERNS)
        accessory = rng.choices(ACCESSORIES, weights=(2, 1, 1))[0]
        if pattern == "plain" and accessory == "none":
            colour2 = colour
        character = Character(species, colour, colour2, pattern, accessory)
        assert character not in NOVEL_CHARACTERS
        frames = num_frames if num_frames is not None else rng.choice(CLIP_LENGTHS)
        specs.append(ClipSpec(character, motion, setting_cycle.pop(), rng.randrange(2**31),
                              num_frames=frames, size=size, fps=fps))
    return specs


def npz_bytes(**arrays) -> bytes:
    """Compressed .npz (readable by np.load) with fixed zip timestamps, so the bytes are reproducible
    (np.savez_compressed stamps the current time). Depth compresses ~35x: it is piecewise smooth."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, a in arrays.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.ascontiguousarray(a), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, npy.getvalue())
    return buf.getvalue()


def read_depth_gt(out_dir: str | Path, clip_id: str) -> np.ndarray:
    """Ground-truth depth (F,H,W) float32 metres of one corpus clip (for evaluation only)."""
    with np.load(Path(out_dir) / "depth_gt" / f"{clip_id}.npz") as f:
        return f["depth"].astype(np.float32)


def _write_clip(out_dir: Path, i: int, spec: ClipSpec) -> tuple[tuple, str]:
    """Render and write one clip (mp4 + ground-truth depth); -> (manifest row, attributes line)."""
    clip_id = f"tw{i:05d}"
    clip = render_clip(spec)
    write_mp4(out_dir / "clips" / f"{clip_id}.mp4", clip.rgb, spec.fps)
    atomic_write_bytes(out_dir / "depth_gt" / f"{clip_id}.npz", npz_bytes(depth=clip.depth.astype(np.float16)))
    row = (clip_id, clip.caption, f"clips/{clip_id}.mp4", f"{spec.num_frames / spec.fps:.4f}")
    attr = json.dumps({"id": clip_id, **clip.attributes, "num_frames": spec.num_frames, "fps": spec.fps,
                       "caption": clip.caption}, sort_keys=True)
    return row, attr


PARALLEL_MIN_CLIPS = 48  # below this, starting worker processes costs more than it saves


def default_workers(n: int) -> int:
    """Worker processes for rendering n clips: one per available core (at most 4), 1 for small corpora."""
    return 1 if n < PARALLEL_MIN_CLIPS else max(1, min(4, len(os.sched_getaffinity(0))))


def write_toyworld_corpus(out_dir: str | Path, n: int, seed: int, size: int = 128, fps: int = 12,
                          progress=None, workers: int | None = None) -> Path:
    """Render n clips to out_dir and return the manifest path (skips the work if already written).

    ``progress(done, total)`` is called after each clip. Files of an earlier, different corpus
    in the same folder are removed so the folder holds exactly what the manifest lists. Clips are
    rendered by ``workers`` processes (default: ``default_workers(n)``); every clip depends only on
    its own spec, so the files are byte-identical for any number of workers."""
    out_dir = Path(out_dir)
    manifest = out_dir / "manifest.csv"
    params = {"n": n, "seed": seed, "size": size, "fps": fps, "format": CORPUS_FORMAT}
    params_path = out_dir / "params.json"
    if manifest.exists() and params_path.exists():
        try:
            if json.loads(params_path.read_text()) == params:
                return manifest
        except json.JSONDecodeError:
            pass
    manifest.unlink(missing_ok=True)  # an interrupted rerun must never look finished
    (out_dir / "clips").mkdir(parents=True, exist_ok=True)
    (out_dir / "depth_gt").mkdir(parents=True, exist_ok=True)
    rows, attr_lines = [], []
    specs = sample_specs(n, seed, size=size, fps=fps)
    workers = default_workers(n) if workers is None else max(1, workers)
    if progress is not None:
        progress(0, len(specs))
    with contextlib.ExitStack() as stack:
        if workers > 1:  # spawn, not fork: the parent may hold LanceDB/torch threads
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")))
            results = pool.map(_write_clip, itertools.repeat(out_dir), range(len(specs)), specs, chunksize=4)
        else:
            results = map(_write_clip, itertools.repeat(out_dir), range(len(specs)), specs)
        for i, (row, attr) in enumerate(results, 1):
            rows.append(row)
            attr_lines.append(attr)
            if progress is not None:
                progress(i, len(specs))
    keep = {r[0] for r in rows}
    for sub, ext in (("clips", ".mp4"), ("depth_gt", ".npz")):  # leftovers of a bigger old corpus
        for p in (out_dir / sub).glob(f"tw*{ext}"):
            if p.stem not in keep:
                p.unlink()
    atomic_write_text(out_dir / "attributes.jsonl", "".join(line + "\n" for line in attr_lines))
    atomic_write_text(params_path, json.dumps(params, sort_keys=True) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("id", "caption", "path", "duration"))
    w.writerows(rows)
    atomic_write_text(manifest, buf.getvalue())  # last: its presence means the corpus is complete
    return manifest


def read_attributes(out_dir: str | Path) -> dict:
    """id -> attributes dict from out_dir/attributes.jsonl."""
    path = Path(out_dir) / "attributes.jsonl"
    return {d["id"]: d for d in map(json.loads, path.read_text().splitlines())}


def write_reference_images(character: Character, out_dir: str | Path, n: int = 4, seed: int = 0,
                           size: int = 128) -> list:
    """n stills of one identity in different poses and settings (like a user's few photos) -> PNG paths."""
    out_dir = Path(out_dir)
    rng = random.Random(f"toyworld-refs-{seed}")
    settings = rng.sample(SETTINGS, len(SETTINGS))
    paths = []
    for k in range(n):
        rgb, _ = render_still(character, settings[k % len(settings)], rng.randrange(2**31), size)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        paths.append(atomic_write_bytes(out_dir / f"ref_{k:02d}.png", buf.getvalue()))
    return paths
