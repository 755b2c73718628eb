"""ToyWorld renderer, captions and corpus: determinism, depth sanity, caption/attribute agreement.

    .venv/bin/python -m pytest -q tests/test_toyworld.py
"""

import csv
import json
import random
import time

import av
import numpy as np
import pytest
from PIL import Image

from story_pipeline.fsutil import file_sha256
from story_pipeline.toyworld import (
    MOTIONS, NOVEL_CHARACTERS, NOVEL_COLOURS, SETTINGS, SPECIES, Character, ClipSpec, caption_for, make_caption,
    paraphrase_query, render_clip, render_still, sample_specs, write_reference_images, write_toyworld_corpus,
)
from story_pipeline.toyworld.captions import (
    MOTION_PHRASES, QUERY_MOTIONS, QUERY_SPECIES, SETTING_KEYWORDS, caption_agrees,
)
from story_pipeline.toyworld.contact_sheet import contact_sheet
from story_pipeline.toyworld.corpus import read_depth_gt
from story_pipeline.toyworld.scene import FAR, Camera, render_background

CAT = Character("cat", "orange", "black", "striped", "hat")


def spec(motion="walk_right", setting="meadow", seed=1, character=CAT, **kw):
    return ClipSpec(character, motion, setting, seed, **kw)


# --- determinism ---------------------------------------------------------------------------------
def test_same_spec_same_bytes_and_seed_matters():
    a, b = render_clip(spec(seed=4)), render_clip(spec(seed=4))
    assert a.rgb.tobytes() == b.rgb.tobytes() and a.depth.tobytes() == b.depth.tobytes()
    assert a.caption == b.caption and a.attributes == b.attributes
    c = render_clip(spec(seed=5))
    assert a.rgb.tobytes() != c.rgb.tobytes()
    assert a.rgb.shape == (32, 128, 128, 3) and a.rgb.dtype == np.uint8
    assert a.depth.shape == (32, 128, 128) and a.depth.dtype == np.float32


def test_corpus_is_byte_identical_and_idempotent(tmp_path):
    m1 = write_toyworld_corpus(tmp_path / "a", n=6, seed=9)
    calls = []
    m2 = write_toyworld_corpus(tmp_path / "b", n=6, seed=9, workers=2,  # two processes: the same bytes
                               progress=lambda done, total: calls.append(done))
    assert calls == list(range(7))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 6 * 2 + 3  # mp4 + depth per clip, manifest, attributes, params
    for rel in files:
        assert file_sha256(tmp_path / "a" / rel) == file_sha256(tmp_path / "b" / rel), rel
    # a rerun with the same parameters does nothing
    mtime = m1.stat().st_mtime_ns
    assert write_toyworld_corpus(tmp_path / "a", n=6, seed=9) == m1 and m1.stat().st_mtime_ns == mtime
    # the manifest is WebVid-style and the videos decode to the rendered frames
    rows = list(csv.DictReader(m2.open()))
    assert list(rows[0]) == ["id", "caption", "path", "duration"] and len(rows) == 6
    attrs = [json.loads(line) for line in (tmp_path / "b" / "attributes.jsonl").read_text().splitlines()]
    first = sample_specs(6, 9)[0]
    with av.open(str(tmp_path / "b" / rows[0]["path"])) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert len(frames) == first.num_frames == attrs[0]["num_frames"]
    assert float(rows[0]["duration"]) == pytest.approx(first.num_frames / 12, abs=1e-3)
    clip = render_clip(first)
    depth = read_depth_gt(tmp_path / "b", rows[0]["id"])
    assert depth.shape == clip.depth.shape and np.allclose(depth, clip.depth, rtol=1e-3)
    mse = ((frames.astype(float) - clip.rgb) ** 2).mean()
    assert 10 * np.log10(255**2 / mse) > 28  # lossy (yuv420p) but faithful: PSNR in dB
    assert rows[0]["caption"] == attrs[0]["caption"] and caption_agrees(rows[0]["caption"], attrs[0])


# --- depth sanity --------------------------------------------------------------------------------
def _char_depth_and_area(clip):
    med = np.array([np.median(d[m]) for d, m in zip(clip.depth, clip.mask)])
    return med, clip.mask.reshape(len(clip.mask), -1).sum(1)


@pytest.mark.parametrize("species", ["cat", "robot", "duck"])
def test_approaching_character_gets_nearer_and_bigger(species):
    clip = render_clip(spec("approach", "desert", seed=3, character=Character(species, "blue", "blue")))
    med, area = _char_depth_and_area(clip)
    assert (area > 0).all()
    assert med[-1] < 0.5 * med[0] and area[-1] > 4 * area[0]
    assert (np.diff(med) < 0.05).all()  # depth never grows by more than a bulge's jitter
    assert np.corrcoef(np.arange(len(med)), med)[0, 1] < -0.95
    away = render_clip(spec("walk_away", "desert", seed=3, character=Character(species, "blue", "blue")))
    med_a, area_a = _char_depth_and_area(away)
    assert med_a[-1] > 2 * med_a[0] and area_a[-1] < area_a[0] / 4


def test_character_depth_is_in_front_of_the_background():
    clip = render_clip(spec("run", "forest", seed=2))
    bg_rgb, bg_depth, _ = render_background("forest", Camera(128), np.random.default_rng([2, 7]))
    for d, m in zip(clip.depth, clip.mask):
        assert (d[m] <= bg_depth[m] + 1e-6).all()
        assert np.array_equal(d[~m], bg_depth[~m])


@pytest.mark.parametrize("setting", SETTINGS)
def test_ground_depth_grows_toward_the_horizon(setting):
    cam = Camera(128)
    _, depth, ground = render_background(setting, cam, np.random.default_rng([0, 7]))
    rows = np.arange(int(np.ceil(cam.horizon)) + 1, 128)
    empty_cols = [x for x in range(128) if ground[rows, x].all()]
    assert empty_cols, "every column has a prop in front of the ground"
    col = depth[rows, empty_cols[0]]
    assert (np.diff(col) < 0).all()  # lower rows are nearer
    assert col[-1] == pytest.approx(cam.focal * cam.height / (127.5 - cam.horizon), rel=1e-4)
    assert (depth[: int(cam.horizon) - 1, empty_cols[0]] >= col.max()).all()  # sky is the farthest
    assert depth.max() == FAR


# --- motions read as the motion -----------------------------------------------------------------
def _centroid_x(clip):
    xs = np.arange(clip.mask.shape[2])
    return np.array([(m.sum(0) * xs).sum() / m.sum() for m in clip.mask])


def test_motions_move_the_silhouette_the_right_way():
    assert _centroid_x(render_clip(spec("walk_left")))[[0, -1]] @ [1, -1] > 15
    assert _centroid_x(render_clip(spec("walk_right")))[[0, -1]] @ [-1, 1] > 15
    jump = render_clip(spec("jump", seed=2))
    top = np.array([np.argmax(m.any(1)) for m in jump.mask])
    assert top[len(top) // 2] < top[0] - 10  # higher in the air mid-clip
    spin = render_clip(spec("spin", seed=2))
    width = np.array([m.any(0).sum() for m in spin.mask])
    assert width.min() < 0.4 * width[0] and width[-1] > 0.8 * width[0]
    sit = render_clip(spec("sit_down", seed=2))
    assert sit.mask[-1].sum() != sit.mask[0].sum() and not np.array_equal(sit.mask[-1], sit.mask[0])


def test_every_species_and_motion_renders_fast():
    t0 = time.perf_counter()
    for i, species in enumerate(SPECIES):
        for motion in MOTIONS:
            clip = render_clip(ClipSpec(Character(species, "red", "white", "spotted", "scarf"), motion,
                                        SETTINGS[i % len(SETTINGS)], seed=i, num_frames=4, size=64))
            assert clip.mask.any(axis=(1, 2)).all(), (species, motion)
    assert time.perf_counter() - t0 < 15
    best = min(_timed(render_clip, spec("run", seed=s)) for s in range(3))
    assert best < 0.5, f"a 32-frame 128x128 clip took {best:.2f} s"


def _timed(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


# --- captions ------------------------------------------------------------------------------------
def test_captions_agree_with_attributes():
    specs = sample_specs(400, seed=0)
    for s in specs:
        attrs = s.attributes()
        cap = make_caption(attrs, random.Random(s.seed))
        assert caption_agrees(cap, attrs), (cap, attrs)
        assert any(p[0] in cap or p[1] in cap for p in MOTION_PHRASES[attrs["motion"]]), cap
        for other, words in SETTING_KEYWORDS.items():  # no other setting's keyword sneaks in
            if other != attrs["setting"]:
                assert not set(words) & set(cap.replace(",", " ").replace(":", " ").split()), (cap, other)
        if attrs["pattern"] in ("striped", "spotted"):
            assert attrs["pattern"] in cap or {"striped": "stripes", "spotted": "spots"}[attrs["pattern"]] in cap
        if attrs["accessory"] != "none" or attrs["pattern"] == "two-tone":
            assert attrs["colour2"] in cap
        if attrs["accessory"] != "none":
            assert attrs["accessory"] in cap
    caps = {make_caption(s.attributes(), random.Random(s.seed)) for s in specs}
    assert len(caps) > 0.95 * len(specs)  # wording varies
    for s in specs[:8]:  # the rendered clip carries the caption caption_for promises
        clip = render_clip(ClipSpec(s.character, s.motion, s.setting, s.seed, num_frames=2, size=64))
        assert clip.caption == caption_for(s) and clip.attributes == s.attributes()


def test_paraphrase_queries_name_species_and_differ_from_captions():
    rng = random.Random(0)
    caption_phrases = {p for pairs in MOTION_PHRASES.values() for pair in pairs for p in pair}
    assert not caption_phrases & {p for ps in QUERY_MOTIONS.values() for p in ps}  # held-out wording
    for species in SPECIES:
        for motion in MOTIONS:
            q = paraphrase_query(species, motion, rng)
            assert any(w in q for w in QUERY_SPECIES[species]), q
            assert any(p in q for p in QUERY_MOTIONS[motion]), q


# --- corpus sampling and novel identities -------------------------------------------------------
def test_sample_specs_is_balanced_and_never_novel():
    specs = sample_specs(2 * len(SPECIES) * len(MOTIONS), seed=1)
    pairs = {}
    for s in specs:
        pairs[(s.character.species, s.motion)] = pairs.get((s.character.species, s.motion), 0) + 1
    assert set(pairs.values()) == {2} and len(pairs) == len(SPECIES) * len(MOTIONS)
    settings = [s.setting for s in specs]
    assert max(map(settings.count, SETTINGS)) - min(map(settings.count, SETTINGS)) <= 1
    many = sample_specs(3000, seed=2)
    assert not {s.character for s in many} & set(NOVEL_CHARACTERS)
    assert not {s.character.colour for s in many} & set(NOVEL_COLOURS)
    assert not {s.character.colour2 for s in many} & set(NOVEL_COLOURS)
    assert sample_specs(50, seed=2) == many[:50]


def test_reference_images_of_a_novel_character(tmp_path):
    novel = NOVEL_CHARACTERS[0]
    paths = write_reference_images(novel, tmp_path / "a", n=4, seed=0)
    again = write_reference_images(novel, tmp_path / "b", n=4, seed=0)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    imgs = [np.asarray(Image.open(p)) for p in paths]
    assert all(im.shape == (128, 128, 3) for im in imgs)
    assert len({im.tobytes() for im in imgs}) == 4
    teal = np.array([20, 150, 150])
    for im in imgs:  # the novel colour is actually on screen
        assert (np.abs(im.astype(int) - teal).sum(-1) < 60).sum() > 20
    rgb, depth = render_still(novel, "beach", seed=3)
    assert rgb.shape == (128, 128, 3) and depth.shape == (128, 128)


def test_contact_sheet_png(tmp_path):
    out = contact_sheet(n=4, seed=0, out_png=tmp_path / "sheet.png", size=64)
    im = Image.open(out)
    assert im.size[0] == 4 * (2 * 64 + 6) and im.size[1] > 64
