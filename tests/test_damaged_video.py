"""Damaged videos through the ingest: real files, damaged the way real files get damaged.

    .venv/bin/python -m pytest -q tests/test_damaged_video.py

One clean three-shot ToyWorld film (cuts at 30 and 66) is written as H.264 mp4 and as AVI; copies
are damaged: bytes overwritten mid-file, a copy cut short, black and noise frames spliced in, AVI
packets whose payload is garbage (the header still lists every frame). Each damaged file must be
trimmed to clean clips with a warning or rejected with the reason; no clip may hold a damaged
frame, damage must not add cuts, and the clean copies must split exactly as before.
"""

from pathlib import Path

import av
import numpy as np
import pytest

from story_pipeline.config import DecodeLimits
from story_pipeline.corpus.damage import (BLACK_FRACTION, FILL_FRACTION, JUMP_CHROMA, NOISE_ROUGHNESS,
                                          ODD_ROUGHNESS, _thumbnail, find_damage, frame_stats, scan_video,
                                          usable_spans)
from story_pipeline.corpus.ingest import ingest_corpus
from story_pipeline.corpus.probe import VideoRejected, probe_video, split_shots
from story_pipeline.corpus.frames import decode_frames
from story_pipeline.toyworld import Character, ClipSpec, render_clip
from story_pipeline.video_io import write_mp4

CAT = Character("cat", "orange", "black", "striped")
LIMITS = DecodeLimits(max_width=256, max_height=256, min_frames=8)
CUTS = [30, 66]
FPS = 12


def film() -> np.ndarray:
    """(94, 128, 128, 3): three ToyWorld shots of different settings back to back (cuts 30, 66)."""
    shots = [("walk_right", "meadow", 30, 1), ("spin", "snowy_field", 36, 2),
             ("approach", "night_street", 28, 3)]
    return np.concatenate([render_clip(ClipSpec(CAT, m, s, seed=seed, num_frames=n, size=128)).rgb
                           for m, s, n, seed in shots])


def write_avi(path: Path, frames: np.ndarray, codec: str, garbage=(), empty=(), seed: int = 0) -> Path:
    """An AVI written by PyAV; the packets of frames in ``garbage`` keep their first quarter and
    get random bytes for the rest (the container still lists them: they decode as garbage); those
    in ``empty`` are written empty (the header counts them, the file holds no frame: a drop-frame AVI)."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream(codec, rate=FPS, options={"g": "12"} if codec == "mpeg4" else {})
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.bit_rate = 4_000_000  # good quality: decoded frames stay close to the rendered ones

        def replaced(packet, data: bytes):
            new = av.Packet(data)
            new.pts, new.dts, new.time_base, new.stream = packet.pts, packet.dts, packet.time_base, stream
            new.is_keyframe = packet.is_keyframe
            return new

        def mux(packets):
            for packet in packets:
                if packet.pts in garbage:
                    data = bytearray(bytes(packet))
                    keep = len(data) // 4
                    data[keep:] = rng.integers(0, 256, len(data) - keep, dtype=np.uint8).tobytes()
                    packet = replaced(packet, bytes(data))
                if packet.pts in empty:
                    packet = replaced(packet, b"")
                container.mux(packet)

        for frame in frames:
            mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        mux(stream.encode())
    return path


def overwrite(src: Path, dst: Path, at: float, size: int, seed: int = 0) -> Path:
    """A copy with ``size`` random bytes written over the middle of the file (at fraction ``at``)."""
    data = bytearray(src.read_bytes())
    start = int(len(data) * at)
    data[start:start + size] = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def spliced(frames: np.ndarray, inserts: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Insert frame runs before the given original frame numbers -> (frames, scene per frame (-1:
    inserted), original frame number per frame (-1: inserted))."""
    scene = np.searchsorted(CUTS, np.arange(len(frames)), side="right")
    out, scenes, origin, last = [], [], [], 0
    for at in sorted(inserts) + [len(frames)]:
        out += [frames[last:at]] + ([inserts[at]] if at in inserts else [])
        scenes += [scene[last:at]] + ([np.full(len(inserts[at]), -1)] if at in inserts else [])
        origin += [np.arange(last, at)] + ([np.full(len(inserts[at]), -1)] if at in inserts else [])
        last = at
    return np.concatenate(out), np.concatenate(scenes), np.concatenate(origin)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """The clean film, its damaged copies and one ingest run over all of them. Per video: its path,
    the scene of each frame, the film frame each frame shows (-1: spliced in), and which frames were
    damaged (None where only the decoder can tell)."""
    root = tmp_path_factory.mktemp("damaged")
    frames = film()
    scene = np.searchsorted(CUTS, np.arange(len(frames)), side="right")
    same = np.arange(len(frames))
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, (6, 128, 128, 3), dtype=np.uint8)
    black = np.zeros((7, 128, 128, 3), np.uint8)
    videos = {}

    def add(name: str, path: Path, scenes=scene, origin=same, damaged=None) -> None:
        path.with_suffix(".txt").write_text(f"a cat in three places ({name})")
        videos[name] = (path, scenes, origin, damaged)

    def garbage(name: str, codec: str, frames_hit: range) -> None:
        path = write_avi(root / name, frames, codec, garbage=frames_hit)
        add(name, path, damaged=np.isin(same, frames_hit))

    def splice(name: str, inserts: dict) -> None:
        seq, scenes, origin = spliced(frames, inserts)
        mp4 = name.endswith(".mp4")
        path = write_mp4(root / name, seq, FPS) if mp4 else write_avi(root / name, seq, "mjpeg")
        add(name, path, scenes, origin, damaged=origin < 0)

    add("clean.mp4", write_mp4(root / "clean.mp4", frames, FPS))
    add("clean_mjpeg.avi", write_avi(root / "clean_mjpeg.avi", frames, "mjpeg"))
    add("overwritten.mp4", overwrite(root / "clean.mp4", root / "overwritten.mp4", 0.45, 2000))
    data = (root / "clean_mjpeg.avi").read_bytes()
    (root / "truncated.avi").write_bytes(data[: len(data) * 35 // 100])
    add("truncated.avi", root / "truncated.avi")
    garbage("garbage_mpeg4.avi", "mpeg4", range(40, 50))     # concealed by the decoder, flagged
    garbage("garbage_mjpeg.avi", "mjpeg", range(10, 14))     # refused by the decoder, early
    garbage("refused_mjpeg.avi", "mjpeg", range(40, 50))     # refused by the decoder, mid-film
    garbage("mostly_garbage.avi", "mpeg4", range(8, 80))
    add("dropframes.avi", write_avi(root / "dropframes.avi", frames, "mjpeg", empty=range(5, 94, 10)))
    splice("black.mp4", {45: black})
    splice("noise.avi", {12: noise[:5], 80: noise[5:]})  # valid JPEGs of noise
    return dict(root=root, frames=frames, videos=videos, result=ingest_corpus(root, LIMITS, workers=2))


def clips_of(result, name: str) -> list[tuple[int, int]]:
    rows = result.clips.to_pylist()
    return [(r["start_frame"], r["end_frame"]) for r in rows if Path(r["path"]).name == name]


TRIMMED = ["overwritten.mp4", "garbage_mpeg4.avi", "garbage_mjpeg.avi", "black.mp4", "noise.avi"]
REJECTED = ["truncated.avi", "mostly_garbage.avi", "refused_mjpeg.avi"]


def test_clean_copies_split_exactly_as_before(corpus):
    result = corpus["result"]
    for name in ("clean.mp4", "clean_mjpeg.avi"):
        path = corpus["videos"][name][0]
        info = probe_video(path, LIMITS)
        assert find_damage(scan_video(path, info, LIMITS), info).damaged is False
        spans, warning = usable_spans(path, info, LIMITS)
        assert warning is None and spans == split_shots(path, info) == clips_of(result, name)
        assert len(spans) == 3 and spans[0][0] == 0 and spans[-1][1] == len(corpus["frames"])
        assert all(abs(found - true) <= 2 for (found, _), true in zip(spans[1:], CUTS)), spans
    assert not [w for w in result.warnings if "/clean" in w]
    assert not [r for r in result.rejected if "/clean" in r.path]


def test_header_listing_more_frames_than_the_file_holds_is_reported_not_trimmed(corpus):
    """A drop-frame AVI (or one cut short at a frame boundary): every frame in it is clean, so it is
    split as before; the warning says the header lists frames the file does not hold."""
    path = corpus["videos"]["dropframes.avi"][0]
    info = probe_video(path, LIMITS)
    assert (info.header_frames, info.num_frames) == (94, 85)
    assert clips_of(corpus["result"], "dropframes.avi") == split_shots(path, info)
    lines = [w for w in corpus["result"].warnings if w.startswith(f"{path}: ")]
    assert len(lines) == 1 and "header lists 94 frames but only 85 are in the file" in lines[0], lines
    assert "replace it with a complete copy" in lines[0] and ". " not in lines[0]


def test_damaged_files_are_trimmed_with_a_warning_or_rejected_with_the_reason(corpus):
    result = corpus["result"]
    rejected = {Path(r.path).name: r for r in result.rejected}
    assert set(rejected) == set(REJECTED), [r.reason for r in result.rejected]
    for name in REJECTED:
        r = rejected[name]
        assert r.kind == "damaged_video"
        assert r.reason.startswith(f"{corpus['videos'][name][0]}: damaged video, ")
        assert "frame" in r.reason and "too few to keep" in r.reason and "replace it" in r.reason
        assert r.reason.endswith(".") and ". " not in r.reason and "\n" not in r.reason  # one sentence
        assert not clips_of(result, name)
    assert "header lists are missing (truncated" in rejected["truncated.avi"].reason
    assert "frames 8-" in rejected["mostly_garbage.avi"].reason
    # frames the decoder refuses outright: readers decode ahead into them, so nothing before them is kept
    assert "cannot be read safely" in rejected["refused_mjpeg.avi"].reason
    warning = {}
    for name in TRIMMED:
        lines = [w for w in result.warnings if w.startswith(f"{corpus['videos'][name][0]}: damaged video, ")]
        assert len(lines) == 1 and "trimmed to" in lines[0] and "replace it" in lines[0], result.warnings
        assert lines[0].endswith(".") and ". " not in lines[0] and clips_of(result, name)
        warning[name] = lines[0]
    # Each warning names the damaged frames and what is wrong with them.
    assert "frames 45-51 (black)" in warning["black.mp4"]
    assert "frames 12-16 (noise-like garbage), 85 (noise-like garbage)" in warning["noise.avi"]
    assert "frames 10-13 (decode errors)" in warning["garbage_mjpeg.avi"]
    assert "cannot be read safely" in warning["garbage_mjpeg.avi"]
    assert min(a for a, _ in clips_of(result, "garbage_mjpeg.avi")) > 13
    assert "frames 28-65 (decode errors" in warning["overwritten.mp4"]  # the broken keyframe up to the next
    # inter-coded frames after the garbage are built on it: the damage runs to the next keyframe
    with av.open(str(corpus["videos"]["garbage_mpeg4.avi"][0])) as container:
        keys = [p.pts for p in container.demux(container.streams.video[0]) if p.is_keyframe]
    next_key = min(k for k in keys if k > 49)
    assert f"frames 40-{next_key - 1} (decode errors" in warning["garbage_mpeg4.avi"], keys


def decoded_clip(path: Path, start: int, end: int) -> np.ndarray:
    """A clip's frames read the way the depth stage reads them (decord, by frame number)."""
    return decode_frames(path, np.arange(start, end), LIMITS)


@pytest.mark.parametrize("name", TRIMMED)
def test_no_clip_holds_a_damaged_frame_and_damage_adds_no_cut(corpus, name):
    path, scenes, origin, damaged = corpus["videos"][name]
    clips = clips_of(corpus["result"], name)
    for start, end in clips:
        # every frame is a film frame of one scene, and decodes as that frame (not garbage)
        assert (origin[start:end] >= 0).all() and len(set(scenes[start:end])) == 1, (start, end)
        error = np.abs(decoded_clip(path, start, end).astype(int)
                       - corpus["frames"][origin[start:end]].astype(int)).mean(axis=(1, 2, 3))
        assert error.max() < 10, (name, start, end, error.round(1))
    for (_, end), (start, _) in zip(clips[:-1], clips[1:]):
        if end == start:  # adjacent clips: a scene cut, within 2 frames of the true one
            assert min(abs(origin[start] - c) for c in CUTS) <= 2, (name, clips)
        elif damaged is not None and scenes[end - 1] == scenes[start]:
            assert damaged[end:start].any(), (name, clips)  # a split inside a scene: only at damage
    # every true cut in the film still separates clips
    for cut in (np.flatnonzero(origin == c)[0] for c in CUTS):
        assert not any(a + 2 < cut < b - 2 for a, b in clips), (name, clips)


def test_split_off_still_trims_damage(corpus):
    result = ingest_corpus(corpus["root"], LIMITS, split=False, workers=2)
    assert clips_of(result, "clean.mp4") == [(0, len(corpus["frames"]))]
    _, _, origin, _ = corpus["videos"]["black.mp4"]
    spans = clips_of(result, "black.mp4")
    assert len(spans) == 2 and all((origin[a:b] >= 0).all() for a, b in spans), spans
    assert {Path(r.path).name for r in result.rejected} == set(REJECTED)


def thumbnails(rgb: np.ndarray) -> np.ndarray:
    return np.stack([_thumbnail(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
                                .reformat(format="yuv420p")) for f in rgb])


def test_frame_statistics_tell_footage_from_black_noise_and_decoder_fill(corpus):
    footage = frame_stats(thumbnails(corpus["frames"]))
    assert footage["rough"].max() < ODD_ROUGHNESS and footage["dark"].max() < 0.5
    assert footage["fill"].max() < 0.1 and np.nanmax(footage["change"]) < JUMP_CHROMA  # even at the cuts
    rng = np.random.default_rng(0)
    black, grey, noise = (frame_stats(thumbnails(f[None])) for f in (
        np.zeros((128, 128, 3), np.uint8), np.full((128, 128, 3), 128, np.uint8),
        rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)))
    assert black["dark"][0] >= BLACK_FRACTION and grey["fill"][0] >= FILL_FRACTION
    assert noise["rough"][0] >= NOISE_ROUGHNESS and noise["dark"][0] < 0.5


def test_usable_spans_directly(corpus):
    path = corpus["videos"]["mostly_garbage.avi"][0]
    with pytest.raises(VideoRejected) as err:
        usable_spans(path, probe_video(path, LIMITS), LIMITS)
    assert err.value.kind == "damaged_video" and "only 0 of 94 frames" in err.value.reason
    path = corpus["videos"]["garbage_mpeg4.avi"][0]
    spans, warning = usable_spans(path, probe_video(path, LIMITS), LIMITS)
    assert spans == clips_of(corpus["result"], "garbage_mpeg4.avi") and "trimmed to" in warning
