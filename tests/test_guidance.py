"""Adaptive structure guidance (render/guidance.py): a clip whose actor is not the character's kind
renders with relaxed structure guidance unless the story sets it; the reason says which case."""

from story_pipeline.render.guidance import RELAXED_STRENGTH, RELAXED_TAU, structure_guidance
from story_pipeline.story_file import load_story

STORY = """\
characters:
  - token: <tabby>
    class_word: cat
    images: [refs/a.png]
shots:
  - id: free
    prompt: a <tabby> leaps into the air
  - id: fixed
    prompt: a <tabby> waves hello
    strength: 0.9
  - id: empty
    prompt: leaves fall in the wind
"""
RABBIT = {"clip_id": "tw1", "caption": "a grey rabbit hops in a meadow", "kind_fit": False}
CAT = {"clip_id": "tw2", "caption": "a cat jumps", "kind_fit": True}


def story(tmp_path, text=STORY):
    (tmp_path / "refs").mkdir(exist_ok=True)
    (tmp_path / "refs" / "a.png").write_bytes(b"never opened")  # check_images=False
    (tmp_path / "story.yaml").write_text(text)
    return load_story(tmp_path / "story.yaml", check_images=False)


def test_a_clip_of_another_kind_relaxes_structure_guidance(tmp_path):
    s = story(tmp_path)
    g = structure_guidance(s, s.shot("free"), RABBIT)
    assert (g.tau, g.strength) == (min(1.0, RELAXED_TAU), min(1.0, RELAXED_STRENGTH)) and g.overrides
    assert "not a cat" in g.reason and "grey rabbit" in g.reason and "relaxed" in g.reason
    fit = structure_guidance(s, s.shot("free"), CAT)  # the character's kind: as the story sets it
    assert (fit.tau, fit.strength, fit.overrides) == (1.0, 1.0, {}) and "shows a cat" in fit.reason
    unknown = structure_guidance(s, s.shot("free"), {"clip_id": "old", "caption": "a rabbit"})  # no kind_fit
    assert unknown.overrides == {}


def test_the_story_fixing_tau_or_a_shot_without_characters_keeps_it(tmp_path):
    s = story(tmp_path)
    kept = structure_guidance(s, s.shot("fixed"), RABBIT)
    assert (kept.strength, kept.overrides) == (0.9, {}) and "story sets strength" in kept.reason
    assert structure_guidance(s, s.shot("empty"), RABBIT).overrides == {}
    everywhere = story(tmp_path, STORY.replace("characters:", "defaults:\n  strength: 1.0\ncharacters:"))
    g = structure_guidance(everywhere, everywhere.shot("free"), RABBIT)
    assert "strength" not in g.overrides and "story sets strength" in g.reason
    tau_only = story(tmp_path, STORY.replace("characters:", "defaults:\n  tau: 1.0\ncharacters:"))
    g = structure_guidance(tau_only, tau_only.shot("free"), RABBIT)  # what the story does not set is relaxed
    assert g.overrides == {"strength": RELAXED_STRENGTH} and g.tau == 1.0


def test_the_kind_check_fails_frames_that_show_another_kind():
    """The shot check ``kind``: the toy CLIP must see the characters' class word in the frames (ToyWorld
    clips of a cat and of a robot, at the renders' 64 px); unknown kinds and kind=False skip it."""
    import dataclasses

    import numpy as np
    import torch

    from story_pipeline.models.judge import get_judge
    from story_pipeline.render.checks import CheckThresholds, check_shot
    from story_pipeline.toyworld import ClipSpec, render_clip
    from story_pipeline.toyworld.corpus import NOVEL_CHARACTERS

    def frames(species: str) -> np.ndarray:
        clip = render_clip(ClipSpec(dataclasses.replace(NOVEL_CHARACTERS[0], species=species), "walk_right", "meadow",
                                    seed=3))
        x = torch.nn.functional.interpolate(torch.from_numpy(clip.rgb[::4]).permute(0, 3, 1, 2).float(), size=(64, 64),
                                            mode="area")
        return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()

    judge, t = get_judge(), CheckThresholds(depth_adherence=1.0, sem=-1.0, flicker=1.0)
    cat, robot = frames("cat"), frames("robot")
    flat = np.zeros((len(cat), 64, 64), np.float32)
    assert judge.kind_of(cat) == "cat" and judge.kind_of(robot) == "robot"
    ok, wrong = check_shot(cat, flat, "a cat", [], judge, t, "cat"), check_shot(robot, flat, "a cat", [], judge, t, "cat")
    assert ok.passed and ok.values["kind"] == 1.0
    assert wrong.failed == ["kind"] and wrong.values["kind"] == 0.0
    assert "kind" not in check_shot(robot, flat, "an otter", [], judge, t, "otter").values  # a kind it cannot tell
    assert check_shot(robot, flat, "a cat", [], judge, dataclasses.replace(t, kind=False), "cat").passed
