"""The ToyWorld frame encoder ("toy CLIP") and the Sem/ID metrics: shipped weights load and classify
held-out clips zero-shot well above chance, Sem prefers a clip's own caption, missing weights give
one clear error, save/load reproduces a model's embeddings, and the metric helpers compute what
their docstrings say."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from story_pipeline.errors import ConfigError
from story_pipeline.metrics import cosine_matrix, id_score, id_separation, sem_score, zero_shot
from story_pipeline.models.frame_encoder import (
    CONFIG_NAME, WEIGHTS_NAME, FrameEncoderConfig, build_frame_encoder, encode_frames, load_frame_encoder,
)
from story_pipeline.models.text_encoder import get_text_encoder
from story_pipeline.toyworld import SPECIES, render_clip, sample_specs
from story_pipeline.eval.zero_shot import TEST_SPEC_SEED, species_prompts
from story_pipeline.train.frame_encoder import clip_loss

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "models" / "toyworld_frame_encoder"
TINY = FrameEncoderConfig(input_size=32, stem_channels=8, channels=(8, 16), blocks_per_stage=(1, 1), groups=4)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shipped():
    return load_frame_encoder(SHIPPED)


@pytest.fixture(scope="module")
def heldout():
    """30 held-out clips (the card's test seed: never trained on), 3 frames each at 128 px."""
    frames, species, captions = [], [], []
    for spec in sample_specs(30, TEST_SPEC_SEED):
        clip = render_clip(spec)
        idx = ((np.arange(3) + 0.5) * len(clip.rgb) / 3).astype(int)
        frames.append(clip.rgb[idx])  # (3, 128, 128, 3)
        species.append(spec.character.species)
        captions.append(clip.caption)
    return np.stack(frames), np.array(species), captions  # (30, 3, H, W, 3)


def test_shipped_weights_load_small_and_unit_norm(shipped, heldout):
    assert (SHIPPED / WEIGHTS_NAME).stat().st_size < 10e6
    assert json.loads((SHIPPED / CONFIG_NAME).read_text())["embed_dim"] == get_text_encoder().dim
    emb = encode_frames(shipped, heldout[0][0])  # (3, 384)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_shipped_zero_shot_species_well_above_chance(shipped, heldout):
    frames, species, _ = heldout
    emb = encode_frames(shipped, frames.reshape(-1, *frames.shape[2:]))  # (90, 384)
    pred = np.array(SPECIES)[zero_shot(emb, species_prompts())]
    accuracy = (pred == np.repeat(species, frames.shape[1])).mean()
    assert accuracy > 0.6, f"species zero-shot accuracy {accuracy:.2f} (measured 0.88 on these frames; chance 0.10)"


def test_sem_prefers_own_caption_to_a_shuffled_one(shipped, heldout):
    frames, _, captions = heldout
    cap = get_text_encoder().encode(captions)  # (30, 384)
    own = [sem_score(encode_frames(shipped, f), c) for f, c in zip(frames, cap)]
    other = [sem_score(encode_frames(shipped, f), c) for f, c in zip(frames, np.roll(cap, 1, axis=0))]
    assert np.mean(own) > np.mean(other) + 0.1
    assert np.mean(np.array(own) > np.array(other)) > 0.8


def test_missing_weights_folder_is_one_clear_error(tmp_path):
    folder = tmp_path / "no_such_encoder"
    with pytest.raises(ConfigError) as err:
        load_frame_encoder(folder)
    message = str(err.value)
    assert str(folder) in message and CONFIG_NAME in message and "\n" not in message


def test_save_load_round_trip_reproduces_embeddings(tmp_path):
    torch.manual_seed(0)
    model = build_frame_encoder(TINY).eval()
    model.save_pretrained(str(tmp_path), safe_serialization=True)
    loaded = load_frame_encoder(tmp_path)
    assert loaded.config.channels == [8, 16] or tuple(loaded.config.channels) == (8, 16)
    frames = np.random.default_rng(0).integers(0, 256, (5, 48, 40, 3), dtype=np.uint8)  # not square, not 32 px
    a, b = encode_frames(model, frames), encode_frames(loaded, frames)
    assert a.shape == (5, 384)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(a[0], a[1])  # different frames, different embeddings
    (tmp_path / WEIGHTS_NAME).unlink()
    with pytest.raises(ConfigError, match=WEIGHTS_NAME):
        load_frame_encoder(tmp_path)


def test_encode_frames_rejects_float_frames(shipped):
    with pytest.raises(ValueError, match="uint8"):
        encode_frames(shipped, np.zeros((2, 64, 64, 3), np.float32))


def test_metric_helpers():
    e = np.eye(4)  # four orthogonal unit directions
    frames = np.array([[1.0, 0, 0, 0], [0.6, 0.8, 0, 0]])  # (2, 4)
    assert sem_score(frames, e[0]) == pytest.approx((1.0 + 0.6) / 2)
    assert sem_score(2 * frames, 3 * e[0][None]) == pytest.approx(0.8)  # scale-free: true cosines
    assert id_score(frames, e[:2]) == pytest.approx((1.0 + 0.0 + 0.6 + 0.8) / 4)
    np.testing.assert_array_equal(zero_shot(frames, e[[2, 0, 1]]), [1, 2])
    assert cosine_matrix(frames, e).shape == (2, 4)
    sep = id_separation([e[[0]], e[[1]], e[[2]]], [e[[0]], e[[1]], e[[2]]])
    assert sep["same"] == pytest.approx(1.0) and sep["different"] == pytest.approx(0.0) and sep["accuracy"] == 1.0
    with pytest.raises(ValueError, match="embedding sizes"):
        sem_score(frames, np.ones(3))


def test_clip_loss_does_not_push_apart_duplicate_captions():
    txt = torch.nn.functional.normalize(torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]]), dim=-1)
    img = txt.clone().requires_grad_()  # every frame sits on its caption; frames 0 and 1 share one caption
    loss, acc = clip_loss(img, txt, torch.tensor(np.log(20.0)), soft_tau=0.05)
    loss.backward()
    assert acc == 1.0
    # a one-hot target would pull frame 0 toward "caption 0" and away from the identical "caption 1":
    # a non-zero gradient at the ideal embedding. The caption-similarity target has none.
    assert img.grad.abs().max().item() < 1e-4
