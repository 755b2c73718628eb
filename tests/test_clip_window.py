"""Long clips: a shot uses a window of its own length (at its pace) of a retrieved clip, placed where
the clip moves, recorded in the retrieval and keyed into the depth memo. Clips are real H.264 ToyWorld
renders: a long take where a cat stands still, walks, and stands still again (with camera noise and a
flash), and an ordinary short clip."""

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from story_pipeline.corpus.index import CLIP_FIELDS, ClipIndex
from story_pipeline.corpus.retrieve import ShotRetrieval, retrieve_shot, retrieve_shot_cached
from story_pipeline.corpus.window import clip_window, motion_energy, window_length
from story_pipeline.eval.long_clips import long_take as take
from story_pipeline.depth.estimators import load_estimator
from story_pipeline.depth.stage import depth_memo_key, shot_depth_cached
from story_pipeline.models.depth_net import DepthNetConfig, build_depth_net
from story_pipeline.models.text_encoder import get_text_encoder
from story_pipeline.story_file import load_story
from story_pipeline.story.spec import StoryError
from story_pipeline.toyworld import Character, ClipSpec, render_clip
from story_pipeline.video_io import write_mp4

FPS = 12
STILL, WALK, AFTER = 120, 48, 60  # frames of the long take: still, walking, still again
MOVING = (STILL, STILL + WALK)  # frames [120, 168) move


def long_take() -> np.ndarray:
    """(228, 64, 64, 3) uint8: a cat stands still for 10 s, walks right for 4 s, stands for 5 s; every
    frame has sensor noise, and one still frame is a flash (a global brightness jump)."""
    frames, moving = take("cat", "orange", "walk_right", seed=3, still=STILL, moving=WALK, after=AFTER, flash_at=40)
    assert moving == MOVING
    return frames


def row(clip_id: str, path, caption: str, num_frames: int) -> dict:
    return {"clip_id": clip_id, "video_id": clip_id, "path": str(path), "caption": caption, "start_frame": 0,
            "end_frame": num_frames, "num_frames": num_frames, "fps": float(FPS), "width": 64, "height": 64,
            "duration_s": num_frames / FPS, "content_hash": hashlib.sha256(f"{clip_id}{caption}".encode()).hexdigest(),
            "source": "test"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A two-clip index: the long take (19 s) and a short 32-frame ToyWorld clip (2.7 s)."""
    folder = tmp_path_factory.mktemp("clips")
    long_path = write_mp4(folder / "long.mp4", long_take(), FPS)
    short = render_clip(ClipSpec(Character("dog", "brown"), "jump", "beach", 5, num_frames=32, size=64)).rgb
    short_path = write_mp4(folder / "short.mp4", short, FPS)
    rows = [row("long_walk", long_path, "a cat walks to the right in a meadow", len(long_take())),
            row("short_jump", short_path, "a dog jumps on the beach", 32)]
    index = ClipIndex(tmp_path_factory.mktemp("lancedb"), encoder=get_text_encoder())
    index.upsert(pa.Table.from_pylist(rows, schema=pa.schema(CLIP_FIELDS)))
    return index, rows


def story_file(tmp_path: Path, shot_lines: str, defaults: str = "") -> Path:
    path = tmp_path / "story.yaml"
    path.write_text("id: tale\n" + (f"defaults: {{{defaults}}}\n" if defaults else "") + "shots:\n" + shot_lines)
    return path


def test_window_rule_real_time_and_slightly_longer_clips_whole():
    assert window_length(795, 10.0, 2.0, 1.0) == 20  # a 79.5-s clip: 2 s of it, not all of it
    assert window_length(30, 10.0, 2.0, 1.0) == 30  # 3 s = 1.5x the shot: used whole
    assert window_length(31, 10.0, 2.0, 1.0) == 20
    assert window_length(795, 10.0, 2.0, 2.0) == 40  # the story asked for twice the speed
    assert window_length(795, 10.0, 2.0, 0.25) == 8  # never below the frames the depth stage needs


def test_motion_is_measured_where_the_cat_walks_not_at_the_noise_or_the_flash(corpus):
    _, rows = corpus
    idx, energy = motion_energy(rows[0]["path"], 0, rows[0]["end_frame"])
    assert len(idx) <= 96 and idx[0] == 0 and idx[-1] == rows[0]["end_frame"] - 1
    mid = (idx[:-1] + idx[1:]) / 2
    inside = (mid > MOVING[0]) & (mid < MOVING[1])
    still = (mid < MOVING[0] - 2) | (mid > MOVING[1] + 2)  # includes the flash at frame 40
    assert energy[still].max() < 0.15 * energy[inside].min()


def test_long_clip_gets_a_real_time_window_where_it_moves_and_the_record_shows_it(corpus, tmp_path):
    index, _ = corpus
    story = load_story(story_file(tmp_path, "  - {id: walk, prompt: a cat walks to the right}\n"))
    r = retrieve_shot(index, story, story.shots[0])
    c = r.chosen
    assert c["clip_id"] == "long_walk"
    assert c["end_frame"] - c["start_frame"] == 24  # 16 frames at 8 fps = 2 s = 24 clip frames at 12 fps
    assert MOVING[0] <= c["start_frame"] and c["end_frame"] <= MOVING[1]
    w = c["window"]
    assert (w["start_frame"], w["end_frame"]) == (c["start_frame"], c["end_frame"])
    assert (w["clip_start_frame"], w["clip_end_frame"]) == (0, STILL + WALK + AFTER)
    assert w["pace"] == 1.0 and "moves most" in w["why"]
    assert all("window" in cand for cand in r.candidates)
    assert ShotRetrieval.from_json(r.to_json()).chosen["window"] == w  # the record on disk keeps it


def test_pinned_short_clip_is_used_whole_and_a_pinned_long_clip_gets_a_window(corpus, tmp_path):
    index, _ = corpus
    story = load_story(story_file(tmp_path, "  - {id: a, prompt: a dog jumps, clip: short_jump}\n"
                                            "  - {id: b, prompt: a cat, clip: long_walk}\n"))
    short = retrieve_shot(index, story, story.shots[0]).chosen
    assert (short["start_frame"], short["end_frame"]) == (0, 32)  # 2.7 s for a 2-s shot: whole, as before
    assert short["window"]["pace"] == pytest.approx(32 / 12 / 2, abs=1e-3) and "whole clip" in short["window"]["why"]
    long = retrieve_shot(index, story, story.shots[1]).chosen
    assert long["end_frame"] - long["start_frame"] == 24 and MOVING[0] <= long["start_frame"] < MOVING[1]


def test_pace_changes_the_window_the_memo_keys_and_the_depth(corpus, tmp_path):
    index, _ = corpus
    torch.manual_seed(0)
    net_dir = tmp_path / "depth_net"
    build_depth_net(DepthNetConfig(input_size=32, channels=(8, 16), groups=4)).save_pretrained(str(net_dir))
    estimator = load_estimator("toyworld", net_dir)
    shots = "  - {id: walk, prompt: a cat walks to the right}\n"
    got = {}
    for pace in (1.0, 2.0):
        folder = tmp_path / f"pace{pace:g}"
        folder.mkdir()
        story = load_story(story_file(folder, shots, defaults=f"pace: {pace}"))
        r = retrieve_shot_cached(index, story, story.shots[0], cache_dir=tmp_path / "retrievals")
        d = shot_depth_cached(r, 16, (32, 32), estimator, cache_dir=tmp_path / "depth")
        got[pace] = r, d
    (r1, d1), (r2, d2) = got[1.0], got[2.0]
    assert r2.chosen["end_frame"] - r2.chosen["start_frame"] == 48 and r2.chosen["window"]["pace"] == 2.0
    assert abs(r2.chosen["start_frame"] - MOVING[0]) <= 2  # twice the window: the whole walk
    assert r1.memo_key != r2.memo_key
    assert depth_memo_key(r1, 16, (32, 32), estimator.model_id, "clip") != depth_memo_key(r2, 16, (32, 32), estimator.model_id, "clip")
    assert d1.depth_path != d2.depth_path and d1.estimator_calls == d2.estimator_calls == 1
    for r, d in ((r1, d1), (r2, d2)):  # the shot's frames come from its window only
        assert r.chosen["start_frame"] <= min(d.metadata["frame_indices"]) <= max(d.metadata["frame_indices"]) < r.chosen["end_frame"]
    assert d1.metadata["shot_fps"] == pytest.approx(8, rel=0.05)  # the 8-fps shot plays its clip in real time
    assert d2.metadata["shot_fps"] == pytest.approx(4, rel=0.05)  # ... or twice as fast, as asked
    again = shot_depth_cached(r1, 16, (32, 32), estimator, cache_dir=tmp_path / "depth")
    assert again.cache_hit and again.depth_path == d1.depth_path


def test_unreadable_clip_gets_a_centred_window_and_says_why(tmp_path):
    clip = row("gone", tmp_path / "missing.mp4", "a cat", 240)
    c = clip_window(clip, shot_seconds=2.0, pace=1.0)
    assert (c["start_frame"], c["end_frame"]) == (108, 132) and "not measured" in c["window"]["why"]


@pytest.mark.parametrize("pace, words", [(0.1, "greater than or equal to 0.25"), (9, "less than or equal to 8")])
def test_pace_out_of_range_is_one_sentence(tmp_path, pace, words):
    with pytest.raises(StoryError, match=f"shots\\[0\\].pace: must be {words}, got {pace}"):
        load_story(story_file(tmp_path, f"  - {{id: a, prompt: a cat walks, pace: {pace}}}\n"))
