"""TimeInv / Textual Inversion (+ LoRA) on the diffusers backend, with the tiny random pipeline of
test_diffusers_backend (CLIP width 32, 64 px, 8-frame motion adapter). No downloads, no mocks."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from story_pipeline.render.generator import make_sampler
from story_pipeline.render import diffusers as diffusers_backend
from story_pipeline.render.diffusers import depth_conditioning
from story_pipeline.personalize.diffusers import ClipConceptText, depth_images
from story_pipeline.personalize.config import PersonalizationError, PersonalizeConfig
from story_pipeline.personalize.concept import LearnedConcept, bucket
from story_pipeline.personalize.concepts import Concepts
from story_pipeline.personalize.train import personalize
from story_pipeline.toyworld.corpus import NOVEL_CHARACTERS, write_reference_images


FRAMES, SIZE = 4, 64


@pytest.fixture(scope="module")
def gen(tmp_path_factory, one_torch_thread, save_tiny_pipeline):
    return diffusers_backend.load(save_tiny_pipeline(tmp_path_factory.mktemp("sd15") / "tiny-sd15"))


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    paths = write_reference_images(NOVEL_CHARACTERS[0], tmp_path_factory.mktemp("refs"), n=2, size=64)
    return [Image.open(p).convert("RGB") for p in paths]


@pytest.fixture(scope="module")
def depth():
    return np.linspace(-1, 1, FRAMES * SIZE * SIZE, dtype=np.float32).reshape(FRAMES, SIZE, SIZE)


def weights(gen) -> dict[str, torch.Tensor]:
    """Every weight of the pipeline (UNet with motion modules, ControlNet, VAE, text encoder), copied."""
    p = gen.pipe
    return {f"{part}.{k}": v.clone() for part, m in (("unet", p.unet), ("controlnet", p.controlnet), ("vae", p.vae),
                                                     ("text", p.text_encoder)) for k, v in m.state_dict().items()}


def assert_unchanged(gen, before: dict[str, torch.Tensor]) -> None:
    after = weights(gen)
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not any("lora" in n for n, _ in gen.pipe.unet.named_modules())


def test_pseudo_word_rows_are_clip_input_embeddings(gen):
    before, vocab = weights(gen), dict(gen.pipe.tokenizer.get_vocab())
    text = ClipConceptText(gen.pipe)
    text.add_token("<tabby>")
    cat = text.class_embedding("cat")
    torch.testing.assert_close(cat, gen.pipe.text_encoder.get_input_embeddings().weight[vocab["cat</w>"]])
    row = cat[None].clone().requires_grad_(True)
    other = row + torch.randn(1, 32, generator=torch.Generator().manual_seed(0))
    states = text.states(["a <tabby> jumps", "a <tabby> jumps"], {"<tabby>": torch.cat([row, other])})
    # the class word's row reproduces the class prompt; another row gives other states
    torch.testing.assert_close(states[:1], gen.encode_prompt("a cat jumps"), rtol=0, atol=1e-5)
    assert (states[1] - states[0]).abs().max() > 1e-2
    states[0].sum().backward()
    assert row.grad.abs().sum() > 0  # differentiable in the row
    # the shared tokenizer and text encoder are untouched
    assert gen.pipe.tokenizer.get_vocab() == vocab and "<tabby>" not in vocab
    assert text.token_ids["<tabby>"] not in gen.pipe.tokenizer("a <tabby> jumps").input_ids
    assert_unchanged(gen, before)
    assert [int(bucket(t, 10)) for t in (0, 99, 100, 999)] == [0, 0, 1, 9]


@pytest.mark.parametrize("method, rows, lora", [("timeinv_lora", 10, True), ("timeinv", 10, False),
                                                ("textual_inversion", 1, False), ("textual_inversion_lora", 1, True)])
def test_only_the_table_and_lora_learn_and_the_pipeline_is_left_as_it_was(gen, refs, method, rows, lora):
    before, samples = weights(gen), []
    config = PersonalizeConfig(method=method, steps=3, frames=FRAMES, sample_every=2, buckets=10)
    r = personalize(refs, "<tabby>", "cat", gen, config, on_sample=lambda step, c: samples.append(step))
    c = r.learned
    assert c.table.shape == (rows, 32) and bool(c.lora) == lora and samples == [2, 3] and len(r.losses) == 3
    init = ClipConceptText(gen.pipe).class_embedding("cat")
    at_init = [bool(torch.equal(v, init)) for v in c.table]
    # every row starts at the class word; 3 steps of 2 videos move at most 6 rows, and at least one
    assert not all(at_init) and sum(at_init) >= rows - 6
    if lora:  # spatial attention q/k/v only: 4 attention blocks x attn1/attn2 x q/k/v x (A, B)
        assert len(c.lora) == 48 and not any("motion_modules" in k for k in c.lora)
        assert {k.split(".")[-3] for k in c.lora} == {"to_q", "to_k", "to_v"}
        assert all(float(v.abs().sum()) > 0 for k, v in c.lora.items() if "lora_B" in k)  # B starts at zero
    assert_unchanged(gen, before)


def test_sampling_reads_the_row_of_the_current_timestep_with_the_lora_on(gen, refs, depth, tmp_path):
    c = personalize(refs, "<tabby>", "cat", gen, PersonalizeConfig(steps=2, frames=FRAMES, buckets=10)).learned
    c.table += torch.linspace(0, 3, 10)[:, None]  # every row different
    c.lora = {k: v * 100 if "lora_B" in k else v for k, v in c.lora.items()}  # an adapter that shows in the frames
    before, plain = weights(gen), gen.generate("a cat jumps", depth, steps=2, seed=0).frames
    concepts = Concepts(gen).add(c)
    assert isinstance(concepts.text, ClipConceptText)  # the diffusers adapter
    seen = []
    hook = gen.pipe.unet.register_forward_pre_hook(lambda m, args, kw: seen.append(
        (kw["encoder_hidden_states"][-1].clone(), any("lora" in n for n, _ in m.named_modules()))), with_kwargs=True)
    try:
        shot = concepts.generate("a <tabby> jumps", depth, steps=2, seed=0)
    finally:
        hook.remove()
    sampler = make_sampler("dpmpp", gen.scheduler_config)
    sampler.set_timesteps(2)
    rows = [int(bucket(int(t), 10)) for t in sampler.timesteps]
    assert rows == [9, 4]
    with torch.no_grad():
        want = [concepts.text.states(["a <tabby> jumps"], {"<tabby>": c.table[r][None]})[0] for r in rows]
    assert len(seen) == 2 and all(lora for _, lora in seen)  # the adapter was on during sampling
    for (got, _), w in zip(seen, want):  # the conditional branch of the last frame: the current row's states
        torch.testing.assert_close(got, w, rtol=0, atol=1e-6)
    assert shot.frames.shape == (FRAMES, SIZE, SIZE, 3) and not np.array_equal(shot.frames, plain)
    no_lora = Concepts(gen).add(dataclasses.replace(c, lora={}))
    assert not np.array_equal(shot.frames, no_lora.generate("a <tabby> jumps", depth, steps=2, seed=0).frames)
    # training gives the ControlNet the depth images sampling gives it
    video = gen.pipe.control_video_processor.preprocess_video(depth_conditioning(torch.from_numpy(depth)), SIZE, SIZE)
    torch.testing.assert_close(depth_images(torch.from_numpy(depth)), video[0].transpose(0, 1), rtol=0, atol=0)
    # afterwards the pipeline is as it was and renders what it rendered before
    assert_unchanged(gen, before)
    np.testing.assert_array_equal(gen.generate("a cat jumps", depth, steps=2, seed=0).frames, plain)

    # save / load keeps the CLIP-width table and the adapter, and renders the same frames
    c2 = LearnedConcept.load(c.save(tmp_path / "tabby.safetensors"))
    assert c2.digest == c.digest and c2.table.shape == (10, 32) and c2.lora.keys() == c.lora.keys()
    again = Concepts(gen).add(c2).generate("a <tabby> jumps", depth, steps=2, seed=0)
    np.testing.assert_array_equal(again.frames, shot.frames)


def test_training_is_deterministic_and_resumes_from_its_checkpoint(gen, refs, tmp_path):
    config = PersonalizeConfig(steps=4, frames=2, checkpoint_every=2)
    clean = personalize(refs, "<tabby>", "cat", gen, config).learned

    class Killed(Exception):
        pass

    def die_at_3(done, total):
        if done == 3:
            raise Killed

    ckpt = tmp_path / "tabby.ckpt.safetensors"
    with pytest.raises(Killed):
        personalize(refs, "<tabby>", "cat", gen, config, progress=die_at_3, checkpoint=ckpt)
    assert ckpt.exists() and not any("lora" in n for n, _ in gen.pipe.unet.named_modules())
    started = []
    resumed = personalize(refs, "<tabby>", "cat", gen, config, checkpoint=ckpt, progress=lambda d, n: started.append(d))
    assert started[0] == 2 and len(resumed.losses) == 4
    assert resumed.learned.digest == clean.digest  # same table and adapter as the uninterrupted run


def test_regularisation_clips_train_the_lora(gen, refs):
    from story_pipeline.personalize.data import prior_bank
    from story_pipeline.toyworld import render_clip, sample_specs

    clip = render_clip(sample_specs(1, 5)[0])
    bank = prior_bank([(clip.rgb[:2], np.zeros((2, 64, 64), np.float32), clip.caption, "c0")], size=32)
    config = PersonalizeConfig(steps=2, frames=2, prior_clips=1)
    logged = []
    with_prior = personalize(refs, "<tabby>", "cat", gen, config, prior=bank,
                             log=lambda name, v, step: logged.append(name)).learned
    plain = personalize(refs, "<tabby>", "cat", gen, config).learned
    assert logged.count("prior_loss") == 2
    assert any(not torch.equal(with_prior.lora[k], plain.lora[k]) for k in plain.lora)


def test_a_story_character_is_learnt_and_its_shot_rendered(gen, refs, depth, tmp_path):
    """characters.py with the diffusers generator: the memoised personalization and a shot's conditioning."""
    from story_pipeline.personalize.character import personalize_character_cached
    from story_pipeline.personalize.concepts import shot_personalization
    from story_pipeline.story_file import load_story

    (tmp_path / "refs").mkdir()
    refs[0].save(tmp_path / "refs" / "a.png")
    (tmp_path / "story.yaml").write_text("title: Test\ncharacters:\n  - token: <tabby>\n    class_word: cat\n"
                                         "    images: [refs/a.png]\n"
                                         "shots:\n  - id: leap\n    prompt: a <tabby> jumps\n")
    story = load_story(tmp_path / "story.yaml")
    base = PersonalizeConfig(steps=2, frames=2, sample_steps=1)
    r = personalize_character_cached(story, story.characters[0], gen, base, tmp_path / "memo")
    assert r.path.exists() and not r.cache_hit and {"sem", "id", "final_loss"} <= set(r.metrics)
    p = shot_personalization(story, story.shots[0], gen, {"<tabby>": r.path})
    assert isinstance(p.concepts.text, ClipConceptText) and p.prompt == "a <tabby> cat jumps"  # class_in_prompt
    assert p.concepts.generate(p.prompt, depth, steps=1).frames.shape == (FRAMES, SIZE, SIZE, 3)


def test_bad_tokens_class_words_and_images_are_one_sentence(gen, refs):
    text = ClipConceptText(gen.pipe)
    for token in ("cat", "<|endoftext|>"):  # "cat" is the word cat</w>: every "cat" would read as the token
        with pytest.raises(PersonalizationError, match=f"Token {token} is already a word") as e:
            text.add_token(token)
        assert str(e.value).count(". ") == 0
    with pytest.raises(PersonalizationError, match="Class word '🦄' is unknown to the CLIP tokenizer") as e:
        text.class_embedding("🦄")
    assert str(e.value).count(". ") == 0
    with pytest.raises(PersonalizationError, match="Character <x> has no usable reference image"):
        personalize([None], "<x>", "cat", gen, PersonalizeConfig(steps=1))
    with pytest.raises(PersonalizationError, match="frames .9. is more than the motion adapter's 8"):
        personalize(refs, "<x>", "cat", gen, PersonalizeConfig(steps=1, frames=9))


def test_a_bfloat16_pipeline_learns_in_float32(tmp_path, refs, depth, one_torch_thread, save_tiny_pipeline):
    """A half-precision pipeline, as a GPU user loads it: the table and the LoRA train in float32 and move,
    and the learnt character renders."""
    half = diffusers_backend.load(save_tiny_pipeline(tmp_path / "sd"), dtype="bfloat16")
    c = personalize(refs, "<tabby>", "cat", half, PersonalizeConfig(steps=2, frames=2)).learned
    assert c.table.dtype == torch.float32 and {v.dtype for v in c.lora.values()} == {torch.float32}
    init = ClipConceptText(half.pipe).class_embedding("cat")
    assert not torch.equal(c.table, init.expand_as(c.table))
    shot = Concepts(half).add(c).generate("a <tabby> jumps", depth, steps=1)
    assert shot.frames.shape == (FRAMES, SIZE, SIZE, 3) and shot.metadata["dtype"] == "bfloat16"
