"""The generator interface on the ToyWorld backend, with a tiny random video model saved and
loaded the way the shipped one is (config.json + safetensors + scheduler/)."""

import json
import warnings

import numpy as np
import pytest

from story_pipeline.errors import ConfigError
from story_pipeline.render.generator import GenerationError, load_generator, structure_steps

@pytest.fixture(scope="module")
def gen(tmp_path_factory, save_tiny_video_model):
    return load_generator("toyworld", save_tiny_video_model(tmp_path_factory.mktemp("tiny_video")))


@pytest.fixture(scope="module")
def depth():
    d = np.linspace(-1, 1, 4 * 16 * 24, dtype=np.float32).reshape(4, 16, 24)
    d[:, 4:10, 8:14] = 1.0  # a near blob
    return d


def test_frames_follow_the_depth_and_the_seed_fixes_them(gen, depth):
    a = gen.generate("a red cat jumps", depth, steps=3, seed=1)
    assert a.frames.shape == (4, 16, 24, 3) and a.frames.dtype == np.uint8
    assert np.array_equal(a.frames, gen.generate("a red cat jumps", depth, steps=3, seed=1).frames)
    assert not np.array_equal(a.frames, gen.generate("a red cat jumps", depth, steps=3, seed=2).frames)
    m = a.metadata
    assert (m["seed"], m["steps"], m["structure_steps"], m["frames"], m["height"], m["width"]) == (1, 3, 3, 4, 16, 24)
    assert m["model_id"] == gen.model_id and m["unet_seconds"] <= m["seconds"]


def test_tau_clamps_structure_to_the_first_steps(gen, depth):
    assert [structure_steps(t, 20) for t in (1.0, 0.5, 0.2, 0.1, 0.0)] == [20, 10, 4, 2, 0]
    runs = {tau: gen.generate("a dog", depth, steps=4, seed=0, tau=tau) for tau in (1.0, 0.5, 0.0)}
    assert [runs[t].metadata["structure_steps"] for t in (1.0, 0.5, 0.0)] == [4, 2, 0]
    none = gen.generate("a dog", None, steps=4, seed=0, frames=4, size=(16, 24))
    assert np.array_equal(runs[0.0].frames, none.frames)  # tau 0: depth never applied
    assert not np.array_equal(runs[0.5].frames, runs[1.0].frames)
    assert not np.array_equal(runs[0.5].frames, runs[0.0].frames)
    zero = gen.generate("a dog", depth, steps=4, seed=0, strength=0.0)
    assert np.array_equal(zero.frames, none.frames)  # strength multiplies the features


def test_step_embeds_hook_is_called_per_step_from_the_noisy_end(gen, depth):
    base = gen.encode_prompt("a cat")
    other = gen.encode_prompt("a penguin on the beach")
    seen = []

    def hook(i, t):
        seen.append((i, t))
        return base

    a = gen.generate(None, depth, step_embeds=hook, steps=4, seed=0)
    assert [i for i, _ in seen] == [0, 1, 2, 3]
    assert all(t1 > t2 for (_, t1), (_, t2) in zip(seen, seen[1:]))  # noisy end first
    assert np.array_equal(a.frames, gen.generate("a cat", depth, steps=4, seed=0).frames)
    b = gen.generate(None, depth, step_embeds=lambda i, t: base if i < 2 else other, steps=4, seed=0)
    assert not np.array_equal(a.frames, b.frames)
    assert b.metadata["per_step_embeddings"]


def test_ddim_and_dpmpp_both_sample(gen, depth):
    a = gen.generate("a cat", depth, steps=3, sampler="ddim")
    b = gen.generate("a cat", depth, steps=3, sampler="dpmpp")
    assert a.frames.shape == b.frames.shape and not np.array_equal(a.frames, b.frames)


@pytest.mark.parametrize("kwargs, words", [
    ({"depth": np.zeros((16, 24))}, "(frames, height, width)"),
    ({"depth": np.zeros((4, 15, 24))}, "multiples of 8"),
    ({"depth": np.full((4, 16, 24), 3.0)}, "[-1, 1]"),
    ({"depth": np.full((4, 16, 24), np.nan)}, "NaN"),
    ({"tau": 1.5}, "tau must be in [0, 1]"),
    ({"strength": -1}, "strength must be in [0, 10]"),
    ({"steps": 0}, "steps must be an integer"),
    ({"sampler": "euler"}, "sampler must be one of"),
    ({"frames": 8}, "leave frames/size out"),
])
def test_bad_requests_are_one_sentence(gen, depth, kwargs, words):
    args = {"depth": depth, **kwargs}
    with pytest.raises(GenerationError) as e:
        gen.generate("a cat", args.pop("depth"), steps=args.pop("steps", 2), **args)
    assert words in str(e.value) and str(e.value).count(". ") == 0


def test_long_prompt_is_truncated_with_a_warning(gen, depth):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        gen.generate("a cat " + "that jumps very high " * 20, depth, steps=1)
    assert any("tokens" in str(x.message) and "shorten the prompt" in str(x.message) for x in w)


def test_missing_or_mismatched_weights_name_the_folder(tmp_path, save_tiny_video_model):
    with pytest.raises(ConfigError, match="does not exist"):
        load_generator("toyworld", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"empty has no config.json; train it with `python -m story_pipeline.train.video_unet"):
        load_generator("toyworld", tmp_path / "empty")
    with pytest.raises(ConfigError, match="Unknown generator backend 'magic'"):
        load_generator("magic")
    folder = save_tiny_video_model(tmp_path / "bad")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["block_out_channels"] = [32, 32, 64, 64]  # weights no longer fit
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="do not match its config"):
        load_generator("toyworld", folder)


def test_default_steps_option_gives_its_own_generator(gen, depth, tmp_path_factory, save_tiny_video_model):
    """STORY_RENDER_STEPS / the generator resource's `steps`: shots without steps sample that many;
    the default instance is untouched; an unusable value is one sentence."""
    folder = tmp_path_factory.mktemp("tiny_video_steps")
    save_tiny_video_model(folder)
    plain, fast = load_generator("toyworld", folder), load_generator("toyworld", folder, default_steps=3)
    assert fast is not plain and (plain.default_steps, fast.default_steps) == (20, 3)
    assert fast.generate("a cat", depth).metadata["steps"] == 3
    assert plain.generate("a cat", depth, steps=3).frames.tobytes() == fast.generate("a cat", depth).frames.tobytes()
    with pytest.raises(ConfigError, match=r"STORY_RENDER_STEPS .* \[1, 1000\], got 0"):
        load_generator("toyworld", folder, default_steps=0)


def test_model_card_gate_status_flags_rates_within_noise_of_the_line(tmp_path):
    """The video model card's status: failed gates named; a passing recognition rate within one binomial
    standard error of 80% is called out, so 'passes' on a coin-flip margin is not read as a clear pass."""
    import argparse
    import json
    import shutil

    from story_pipeline.eval.video import MODELS, model_card

    shutil.copy(MODELS / "toyworld_video" / "train_log.json", tmp_path / "train_log.json")
    (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(b"0" * 1000)
    m = json.loads((MODELS / "toyworld_video" / "metrics.json").read_text())
    a = argparse.Namespace(clips=100, tau_clips=8, frames=8, steps=10, sampler=None, guidance=None, out="x")

    def status(**rates):
        return model_card(tmp_path, {**m, "clips": 100, "species_recognised": 0.95, "colour_recognised": 0.95,
                                     **rates}, a).split("\n")[2]

    assert "passes every quality gate after" in status()
    assert "passes every quality gate (colour within one standard error, 4%" in status(colour_recognised=0.81)
    assert "fails 1 of 5 quality gates** (colour) (colour within one standard error" in status(colour_recognised=0.78)
    assert "fails 1 of 5 quality gates** (species) after" in status(species_recognised=0.70)


def test_backends_are_registered_and_known_without_loading(tmp_path, save_tiny_video_model):
    """A backend is a registered module; its identity (what renders are keyed by) comes from its weight
    files without loading the model, and equals the loaded generator's."""
    from story_pipeline.render.generator import GENERATOR_BACKENDS, generator_identity, register_backend

    folder = save_tiny_video_model(tmp_path / "tiny")
    gen = load_generator("toyworld", folder, default_steps=3)
    assert generator_identity("toyworld", folder, default_steps=3) == gen.identity
    assert gen.identity.default_steps == 3 and gen.identity.text_model_id.startswith("all-MiniLM-L6-v2@")
    register_backend("toyworld_copy", GENERATOR_BACKENDS["toyworld"])  # a backend of one's own, by module
    try:
        other = load_generator("toyworld_copy", folder)
        assert type(other).__name__ == "ToyWorldGenerator" and other.model_id == gen.model_id
    finally:
        del GENERATOR_BACKENDS["toyworld_copy"]
    with pytest.raises(ConfigError, match="Unknown generator backend 'nope'; choose one of toyworld, diffusers"):
        generator_identity("nope")


def test_training_high_frequency_loss_costs_speckle_not_a_smooth_shift():
    """The video model's training loss with ``hf_weight`` (issue 18 item 3, texture): an error that is
    flat over the frame (a colour shift) costs what it costs without it; speckle of the same plain
    MSE costs more, so the model is pushed toward crisp stripes rather than noise."""
    import torch

    from story_pipeline.train.video_unet import weighted_v_loss

    target, mask = torch.zeros(1, 3, 2, 16, 16), torch.zeros(1, 1, 2, 16, 16)
    smooth = torch.full_like(target, 0.5)
    speckle = 0.5 * torch.sign(torch.randn(target.shape, generator=torch.Generator().manual_seed(0)))
    assert weighted_v_loss(speckle, target, mask, 8.0).item() == pytest.approx(0.25)
    assert weighted_v_loss(smooth, target, mask, 8.0, hf_weight=1.0).item() == pytest.approx(0.25)
    assert weighted_v_loss(speckle, target, mask, 8.0, hf_weight=1.0).item() > 0.4


def test_training_swap_shots_keep_the_clip_and_take_another_species_depth():
    """The video model's swap shots (issue 18 item 3, ``swap_frac``): frames, caption and character
    coverage are the clip's own; the depth is that of the same clip played by another species: the
    same place and camera (the background's depth agrees), another silhouette where the actor is; in a
    step its depth features are scaled by ``swap_strength``."""
    import dataclasses
    import random

    from story_pipeline.toyworld import sample_specs
    from story_pipeline.train.video_unet import ShotMaker, TrainConfig, swapped_actor

    spec = sample_specs(2, 3)[1]  # a bird hopping in a desert: a small actor, so any other species differs
    other = swapped_actor(spec, random.Random(0))
    assert other.character.species != spec.character.species
    assert dataclasses.replace(other, character=spec.character) == spec
    maker = ShotMaker(TrainConfig(swap_frac=1.0))
    own = maker(spec, random.Random(5), swap=False)
    swap = maker(spec, random.Random(5), swap=True)
    assert own[0].equal(swap[0]) and own[2] == swap[2] and own[4].equal(swap[4])
    near = (own[4] > 0.5) | (own[1] - swap[1]).abs().gt(0.3)  # the actor: either species' silhouette
    assert (own[1] - swap[1]).abs()[near].mean() > 0.3
    rest = (own[1][~near].numpy(), swap[1][~near].numpy())  # the ground, props and sky: the same place
    assert np.corrcoef(*rest)[0, 1] > 0.98  # (up to the per-clip normalisation's offset)

    # In a step, a swap shot's depth features are scaled by swap_strength (the relaxed guidance the
    # pipeline renders such a shot with), its own shot's by 1; a dropped depth stays 0.
    import torch

    from story_pipeline.train.video_unet import Pool

    cfg = TrainConfig(swap_frac=0.5, swap_strength=0.5, pool_clips=2, layouts="2x8", depth_drop=0.0,
                      text_drop=0.0, partial_caption_frac=0.0)
    pool = Pool(cfg, torch.Generator().manual_seed(0))
    pool.add([own, swap], [(own[2], own[2]), (swap[2], swap[2])])
    for _ in range(4):
        x0, depth, _, scale, _ = pool.batch(cfg, torch.zeros(1))
        is_swap = [min((d - swap[1][o::2]).abs().max().item() for o in (0, 1)) < 1e-2 for d in depth[:, 0]]
        assert sorted(scale.tolist()) == [0.5, 1.0] and [s == 0.5 for s in scale.tolist()] == is_swap


def test_text_at_32px_starts_as_the_model_it_grows_from_and_loads_as_a_generator(tmp_path, save_tiny_video_model):
    """``--text-at-32px`` (issue 18 item 3): the shipped layout plus text cross-attention at 32 px. Grown
    from a trained model, the new layers start at zero output, so the first step computes what that model
    did; the text then reaches the 32 px features through them (gradients flow), and the saved model
    loads as a generator with the new layout."""
    import torch

    from story_pipeline.models.video_unet import ToyVideoUNet, load_adding_attention, load_video_unet, make_scheduler
    from story_pipeline.train.video_unet import TEXT_AT_32PX
    from tiny_models import TINY_VIDEO_UNET

    small = load_video_unet(save_tiny_video_model(tmp_path / "small"))
    grown = ToyVideoUNet(**TINY_VIDEO_UNET, **TEXT_AT_32PX).eval()
    added = load_adding_attention(grown, small.state_dict())
    new_blocks = ("unet.down_blocks.1.attentions.", "unet.up_blocks.2.attentions.")
    assert added and all(k.startswith(new_blocks) for k in added)
    g = torch.Generator().manual_seed(0)
    x, d = torch.randn(1, 3, 4, 32, 32, generator=g), torch.randn(1, 1, 4, 32, 32, generator=g)
    ctx, t = torch.randn(1, 8, 384, generator=g), torch.tensor([400])
    with torch.no_grad():
        assert torch.equal(grown(x, t, ctx, depth=d), small(x, t, ctx, depth=d))
    grown(x, t, ctx, depth=d).square().mean().backward()
    proj = grown.unet.down_blocks[1].attentions[0].proj_out.weight
    assert proj.grad is not None and proj.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="fewer attention layers"):  # not a smaller version of the same model
        load_adding_attention(small, grown.state_dict())

    grown.save_pretrained(tmp_path / "grown")
    make_scheduler().save_pretrained(tmp_path / "grown" / "scheduler")
    gen = load_generator("toyworld", tmp_path / "grown")
    assert gen.model.unet.down_blocks[1].has_cross_attention
    assert gen.model_id != load_generator("toyworld", tmp_path / "small").model_id


def test_bf16_autocast_only_where_the_cpu_runs_bf16_natively(gen, depth):
    """On a CPU without native bf16 (AVX2 only), autocast emulates it and a video-model step is ~13x
    slower than float32: the generator and the personalization loop run float32 there, bf16 elsewhere;
    both precisions draw the same picture."""
    import torch

    from story_pipeline.models.loading import cpu_bf16
    from story_pipeline.personalize.toyworld import Adapter

    assert gen.bf16 is cpu_bf16()
    with Adapter(gen).autocast():
        assert torch.is_autocast_enabled("cpu") is cpu_bf16()
    own = gen.generate("a cat", depth, steps=3, seed=1).frames.astype(float)
    gen.bf16 = not gen.bf16
    try:
        other = gen.generate("a cat", depth, steps=3, seed=1).frames.astype(float)
    finally:
        gen.bf16 = not gen.bf16
    assert np.abs(own - other).mean() < 4  # of 255: rounding, not another picture (another seed: ~90)
