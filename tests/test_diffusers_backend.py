"""The diffusers generator backend on tiny random components saved the way a user's folders are:
a Stable Diffusion pipeline folder (unet, vae, text_encoder, tokenizer, scheduler,
model_index.json) with motion_adapter/ and controlnet/ inside it. No downloads."""

import shutil

import numpy as np
import pytest
import torch

from story_pipeline.errors import ConfigError
from story_pipeline.render.generator import GenerationError, generator_identity, load_generator
from story_pipeline.render import diffusers as diffusers_backend

STEPS, FRAMES, SIZE = 2, 4, 64
@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory, save_tiny_pipeline):
    return save_tiny_pipeline(tmp_path_factory.mktemp("sd15") / "tiny-sd15")


@pytest.fixture(scope="module")
def gen(sd_folder, one_torch_thread):
    return load_generator("diffusers", sd_folder, motion_adapter=str(sd_folder / "motion_adapter"),
                          controlnet=str(sd_folder / "controlnet"))


@pytest.fixture(scope="module")
def depth():
    d = np.linspace(-1, 1, FRAMES * SIZE * SIZE, dtype=np.float32).reshape(FRAMES, SIZE, SIZE)
    d[:, 16:40, 20:44] = 1.0  # a near blob
    return d


@pytest.fixture(scope="module")
def renders(gen, depth):
    """The renders several tests compare, made once."""
    run = lambda **kw: gen.generate("a cat walks", **{"steps": STEPS, "seed": 0, **kw})  # noqa: E731
    size = dict(frames=FRAMES, size=(SIZE, SIZE))
    return {"depth": run(depth=depth), "depth_again": run(depth=depth), "seed1": run(depth=depth, seed=1),
            "tau_half": run(depth=depth, tau=0.5), "strength0": run(depth=depth, strength=0.0),
            "no_depth": run(**size)}


def test_frames_shape_and_seed(renders, gen):
    shot = renders["depth"]
    assert shot.frames.shape == (FRAMES, SIZE, SIZE, 3) and shot.frames.dtype == np.uint8
    assert shot.frames.std() > 0
    np.testing.assert_array_equal(shot.frames, renders["depth_again"].frames)
    assert not np.array_equal(shot.frames, renders["seed1"].frames)
    m = shot.metadata
    assert (m["backend"], m["model_id"], m["steps"], m["structure_steps"], m["sampler"]) == \
        ("diffusers", gen.model_id, STEPS, STEPS, "dpmpp")
    assert m["depth"] and not m["per_step_embeddings"] and len(gen.model_id) == 16


def test_depth_tau_and_strength(renders):
    assert not np.array_equal(renders["depth"].frames, renders["no_depth"].frames)  # depth matters
    assert not np.array_equal(renders["depth"].frames, renders["tau_half"].frames)
    assert renders["tau_half"].metadata["structure_steps"] == 1
    # strength 0 runs without the ControlNet: the same frames as no depth at all
    np.testing.assert_array_equal(renders["strength0"].frames, renders["no_depth"].frames)
    assert renders["strength0"].metadata["structure_steps"] == 0


def test_tau_gives_depth_to_the_first_steps(gen, depth):
    scales = []
    hook = gen.pipe.controlnet.register_forward_pre_hook(
        lambda m, args, kwargs: scales.append(kwargs["conditioning_scale"]), with_kwargs=True)
    try:
        shot = gen.generate("a cat", depth, tau=0.7, strength=0.4, steps=4)
    finally:
        hook.remove()
    # structure_steps(0.7, 4) = round(2.8) = 3, counted from the noisy end, as on the ToyWorld backend
    assert scales == [0.4, 0.4, 0.4, 0.0] and shot.metadata["structure_steps"] == 3


def test_zero_scale_controlnet_equals_the_plain_pipeline(gen, depth, renders):
    """Why strength 0 / no depth may skip the ControlNet: its residuals at scale 0 are exact zeros."""
    from story_pipeline.render.generator import make_sampler
    from story_pipeline.render.diffusers import depth_conditioning

    gen.pipe.scheduler = make_sampler("dpmpp", gen.scheduler_config)
    out = gen.pipe(prompt_embeds=gen.encode_prompt("a cat walks"), negative_prompt_embeds=gen.null_embeds(),
                   num_frames=FRAMES, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=7.5,
                   generator=torch.Generator().manual_seed(0), output_type="np",
                   conditioning_frames=depth_conditioning(torch.from_numpy(depth)), controlnet_conditioning_scale=0.0)
    frames = (np.asarray(out.frames[0]) * 255).round().clip(0, 255).astype(np.uint8)
    np.testing.assert_array_equal(frames, renders["no_depth"].frames)


def test_step_embeds(gen, depth, renders):
    cond, other = gen.encode_prompt("a cat walks"), gen.encode_prompt("zebra")
    calls, seen = [], []
    hook = gen.pipe.unet.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["encoder_hidden_states"].clone()), with_kwargs=True)
    try:
        def same(i, t):
            calls.append((i, t))
            return cond

        shot = gen.generate(depth=depth, step_embeds=same, steps=STEPS, seed=0)
        switched = gen.generate(depth=depth, step_embeds=lambda i, t: other if i == 1 else cond, steps=STEPS, seed=0)
    finally:
        hook.remove()
    assert [i for i, _ in calls] == list(range(STEPS)) and calls[0][1] > calls[1][1]  # once per step, t decreasing
    # the same embeddings every step reproduce the prompt's render exactly
    np.testing.assert_array_equal(shot.frames, renders["depth"].frames)
    assert shot.metadata["per_step_embeddings"] and shot.metadata["prompt"] is None
    # what the UNet saw at step 1 of the second render: [negative, step 1's] once per frame
    null = gen.null_embeds()
    np.testing.assert_array_equal(seen[3].numpy(), torch.cat([null, other]).repeat_interleave(FRAMES, 0).numpy())
    np.testing.assert_array_equal(seen[2].numpy(), torch.cat([null, cond]).repeat_interleave(FRAMES, 0).numpy())
    assert not np.array_equal(switched.frames, shot.frames)


def test_sampler_ddim_and_progress(gen, renders):
    ticks = []
    shot = gen.generate("a cat walks", sampler="ddim", steps=STEPS, frames=FRAMES, size=(SIZE, SIZE),
                        progress=lambda i, n: ticks.append((i, n)))
    assert ticks == [(1, STEPS), (2, STEPS)] and shot.metadata["sampler"] == "ddim"
    assert not np.array_equal(shot.frames, renders["no_depth"].frames)


def test_encode_prompt(gen):
    short = gen.encode_prompt("a cat walks")
    torch.testing.assert_close(short, gen.pipe.encode_prompt("a cat walks", "cpu", 1, False)[0], rtol=0, atol=0)
    with pytest.warns(UserWarning, match="tokens long; the text encoder reads only the first 16") as caught:
        long = gen.encode_prompt("a cat walks through the snow and the rain and the wind")
    assert len(caught) == 1 and long.shape == short.shape == (1, 16, 32)
    caught.clear()  # the pipeline logs its own notice; the cut is the same
    torch.testing.assert_close(long, gen.pipe.encode_prompt("a cat walks through the snow and the rain and the wind",
                                                            "cpu", 1, False)[0], rtol=0, atol=0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(depth=np.zeros((4, 64))), "frames, height, width"),
    (dict(depth=np.full((4, 64, 64), 2.0, np.float32)), r"\[-1, 1\]"),
    (dict(depth=np.zeros((4, 60, 64), np.float32)), "multiples of 8"),
    (dict(tau=1.5), "tau must be in"),
    (dict(sampler="euler"), "sampler must be one of"),
    (dict(frames=9), "motion adapter's 8"),
    (dict(prompt_embeds=torch.zeros(1, 7, 32)), r"prompt_embeds must be a \(1, 16, 32\)"),
    (dict(step_embeds=lambda i, t: torch.zeros(1, 16, 8)), r"step_embeds\(0, t\) must be"),
])
def test_bad_inputs(gen, kwargs, match):
    calls = gen.calls
    with pytest.raises(GenerationError, match=match) as err:
        gen.generate("a cat", **{"steps": STEPS, **kwargs})
    assert str(err.value).count(". ") == 0 and gen.calls == calls  # one sentence, nothing rendered


def test_bfloat16(sd_folder, gen, renders):
    half = diffusers_backend.load(sd_folder, dtype="bfloat16")
    assert half.model_id != gen.model_id  # dtype changes the frames, so the render cache must tell them apart
    shot = half.generate("a cat walks", steps=STEPS, frames=FRAMES, size=(SIZE, SIZE))
    assert shot.frames.dtype == np.uint8 and shot.metadata["dtype"] == "bfloat16"
    assert np.abs(shot.frames.astype(int) - renders["no_depth"].frames).mean() < 8  # same model, rounder numbers


def test_defaults_and_model_id(sd_folder, gen, tmp_path):
    # motion_adapter/ and controlnet/ inside the folder are the defaults; a copy has the same id
    copy = shutil.copytree(sd_folder, tmp_path / "copy")
    again = diffusers_backend.load(copy)
    assert again.model_id == gen.model_id
    # what renders are keyed by is known from the folder alone, as status and the sensor read it
    assert generator_identity("diffusers", copy) == again.identity
    assert generator_identity("diffusers", copy, dtype="bfloat16").model_id != gen.model_id
    weights = copy / "controlnet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    assert diffusers_backend.load(copy).model_id != gen.model_id


def test_missing_files(sd_folder, tmp_path):
    with pytest.raises(ConfigError, match=r"ControlNet folder .*nope does not exist; pass controlnet="):
        load_generator("diffusers", sd_folder, controlnet=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="dtype must be one of"):
        diffusers_backend.load(sd_folder, dtype="float64")
    bare = tmp_path / "bare"
    shutil.copytree(sd_folder, bare, ignore=shutil.ignore_patterns("controlnet"))
    with pytest.raises(ConfigError, match="ControlNet folder .*bare/controlnet does not exist"):
        diffusers_backend.load(bare)
    shutil.copytree(sd_folder / "controlnet", bare / "controlnet")
    (bare / "unet" / "diffusion_pytorch_model.safetensors").rename(bare / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ConfigError, match="only unet/diffusion_pytorch_model.bin, a pickle, which is never loaded"):
        diffusers_backend.load(bare)
    (bare / "unet" / "diffusion_pytorch_model.bin").unlink()
    with pytest.raises(ConfigError, match=r"Generator folder .*bare has no unet/diffusion_pytorch_model\.safetensors; "
                                          "it must be a Stable Diffusion"):
        diffusers_backend.load(bare)
    shutil.rmtree(bare / "unet")
    with pytest.raises(ConfigError, match="has no unet/config.json"):
        diffusers_backend.load(bare)
    (bare / "unet").mkdir()
    shutil.copy(sd_folder / "unet" / "config.json", bare / "unet")
    (bare / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ConfigError, match="The UNet in .*could not be loaded"):
        diffusers_backend.load(bare)
    with pytest.raises(ConfigError, match="Motion adapter folder .*missing does not exist"):
        diffusers_backend.load(sd_folder, motion_adapter=str(tmp_path / "missing"))


def test_motion_unet_takes_the_loaded_tensors_over(sd_folder, gen):
    """UNet + motion adapter become one UNetMotionModel without a random init or a copy (diffusers' own
    merge doubled the RAM of loading at Stable Diffusion 1.5 size: bench/real_size.py), equal to it."""
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    def parts():
        return (UNet2DConditionModel.from_pretrained(sd_folder, subfolder="unet"),
                MotionAdapter.from_pretrained(sd_folder / "motion_adapter"))

    unet, adapter = parts()
    loaded = {p.data_ptr() for p in [*unet.parameters(), *adapter.parameters()]}
    merged = diffusers_backend.motion_unet(unet, adapter)
    assert {p.data_ptr() for p in merged.parameters()} <= loaded  # the loaded tensors themselves
    want, got = UNetMotionModel.from_unet2d(*parts()).state_dict(), merged.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    # the generator's pipelines share that one model and keep no second copy of the adapter
    assert gen.pipe.unet is gen.plain_pipe.unet and gen.pipe.motion_adapter is None and gen.max_frames == 8


def test_the_resource_reads_the_generator_settings(sd_folder, gen, tmp_path, monkeypatch):
    """STORY_GENERATOR_* name the three folders and the dtype (docs/real-weights.md); resource fields win."""
    from story_pipeline.resources import GeneratorResource

    for name, value in (("BACKEND", "diffusers"), ("FOLDER", sd_folder),
                        ("MOTION_ADAPTER", sd_folder / "motion_adapter"), ("CONTROLNET", sd_folder / "controlnet")):
        monkeypatch.setenv(f"STORY_GENERATOR_{name}", str(value))
    assert GeneratorResource().identity().model_id == gen.model_id
    monkeypatch.setenv("STORY_GENERATOR_DTYPE", "bfloat16")
    half = generator_identity("diffusers", sd_folder, dtype="bfloat16").model_id
    assert GeneratorResource().identity().model_id == half != gen.model_id
    assert GeneratorResource(dtype="float32").identity().model_id == gen.model_id
    monkeypatch.setenv("STORY_GENERATOR_CONTROLNET", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="ControlNet folder .*nope does not exist"):
        GeneratorResource().identity()
