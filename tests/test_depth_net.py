"""The ToyWorld depth net: shipped weights load and beat the ground-plane baseline on held-out
frames; missing weights give one clear error; save/load reproduces a model's outputs."""

from pathlib import Path

import numpy as np
import pytest
import torch

from story_pipeline.errors import ConfigError
from story_pipeline.models.depth_net import (
    WEIGHTS_NAME, DepthNetConfig, build_depth_net, ground_plane_baseline, load_depth_net, predict_depth,
    row_ramp_baseline, si_rmse,
)
from story_pipeline.toyworld import render_clip
from story_pipeline.train.depth_net import heldout_specs

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "models" / "toyworld_depth"


@pytest.fixture(scope="module")
def heldout_frames():
    """42 frames from 14 held-out clips (2 per setting; the training never sees sample_specs seed 0)."""
    clips = [render_clip(spec) for spec in heldout_specs(14, frames_per_clip=3)]
    rgb = np.concatenate([c.rgb for c in clips])  # (42, 128, 128, 3)
    depth = np.concatenate([c.depth for c in clips])  # (42, 128, 128)
    return rgb, depth


def test_si_rmse_ignores_scale_and_shift_and_sees_objects(heldout_frames):
    _, depth = heldout_frames
    assert si_rmse(3.0 / depth + 2.0, depth) < 1e-6  # any affine map of the true inverse depth is perfect
    constant = si_rmse(np.zeros_like(depth), depth)
    assert constant > 0.1
    assert si_rmse(-1.0 / depth, depth) == pytest.approx(constant)  # near/far swapped is worth nothing
    assert si_rmse(ground_plane_baseline(*depth.shape), depth) > 0.03  # characters and props are not ground


def test_shipped_weights_beat_ground_plane_baseline_2x(heldout_frames):
    rgb, depth = heldout_frames
    model = load_depth_net(SHIPPED)
    assert sum(p.numel() for p in model.parameters()) < 2_500_000  # < 5 MB in fp16
    pred = predict_depth(model, rgb)
    assert pred.shape == depth.shape and pred.dtype == np.float32
    net = si_rmse(pred, depth)
    ground = si_rmse(ground_plane_baseline(*depth.shape), depth)
    ramp = si_rmse(row_ramp_baseline(*depth.shape), depth)
    print(f"held-out si-RMSE: net {net:.4f}, ground-plane baseline {ground:.4f} ({ground / net:.1f}x), "
          f"row ramp {ramp:.4f}")
    assert net * 2 <= ground, f"net {net:.4f} is not 2x better than the ground-plane baseline {ground:.4f}"
    # nearer = larger: the character (drawn in front of the ground at its feet) is nearer than the sky
    assert pred[:, :10].mean() < pred[:, -10:].mean()


def test_missing_weights_raise_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"has no config\.json") as err:
        load_depth_net(tmp_path)
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)
    build_depth_net(DepthNetConfig(input_size=32, channels=(8, 16), groups=4)).save_pretrained(str(tmp_path))
    (tmp_path / WEIGHTS_NAME).unlink()
    with pytest.raises(ConfigError, match=WEIGHTS_NAME.replace(".", r"\.")):
        load_depth_net(tmp_path)


def test_save_load_round_trip_reproduces_outputs(tmp_path):
    torch.manual_seed(0)
    model = build_depth_net(DepthNetConfig(input_size=32, channels=(8, 16), groups=4)).eval()
    frames = np.random.default_rng(0).integers(0, 256, (3, 48, 80, 3), dtype=np.uint8)  # not square, not 32 px
    before = predict_depth(model, frames)
    model.save_pretrained(str(tmp_path))
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))  # safetensors only
    after = predict_depth(load_depth_net(tmp_path), frames)
    assert before.shape == (3, 48, 80) and before.std() > 0
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)
