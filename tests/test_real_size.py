"""Opt-in: the real-size smoke of bench/real_size.py with fewer steps. Stable Diffusion 1.5 + AnimateDiff
motion adapter + depth ControlNet and DPT-Hybrid, random weights at the published sizes, saved as a user
downloads them and loaded through the project's configuration (STORY_GENERATOR_* / STORY_DEPTH_*).
Writes ~10 GB to the temp folder and takes ~1 min on 2 quiet cores (several under load), so it is skipped unless

    STORY_REAL_SIZE_TESTS=1 .venv/bin/pytest tests/test_real_size.py -q
"""

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "real_size.py"

pytestmark = [pytest.mark.real_size,
              pytest.mark.skipif(not os.environ.get("STORY_REAL_SIZE_TESTS"),
                                 reason="real-size models (~10 GB on disk): set STORY_REAL_SIZE_TESTS=1 to run")]


@pytest.fixture(scope="module")
def real_size():
    """bench/real_size.py as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("real_size", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def root(tmp_path_factory, real_size):
    root = tmp_path_factory.mktemp("real_size")
    real_size.build_generator_folders(root)
    real_size.build_depth_folders(root, ["hybrid"])
    yield root
    shutil.rmtree(root)  # don't leave 9 GB in pytest's kept temp folders


def test_generator_at_real_size(real_size, root, monkeypatch):
    from story_pipeline.render.generator import _cached

    for k, v in real_size.generator_env(root, "float32").items():
        monkeypatch.setenv(k, v)
    try:
        out = real_size.run_generator([64], frames=8, steps=2, train_steps=1, load_only=False)
    finally:
        _cached.cache_clear()  # the 7.5 GB generator must not outlive the test
    load = out["load"]
    # the published sizes: SD 1.5 UNet, AnimateDiff v2 motion modules, ControlNet, VAE, CLIP ViT-L/14 text tower
    assert {k: round(n / 1e6, 1) for k, n in load["params"].items()} == {
        "unet": 859.5, "motion_modules": 453.2, "controlnet": 361.3, "vae": 83.7, "text_encoder": 123.1}
    assert load["tokenizer"] == {"vocab": 49408, "max_length": 77}
    assert load["max_frames"] == 32 and load["default_size"] == [512, 512]
    # loading holds the weights once: ~7.5 GB fp32 in all, most of it memory-mapped file pages
    assert load["anon_after"] < 3e9, load
    train, render = out["train"][0], out["render"][0]
    assert train["trained"] == {"table": 2 * 768, "lora": 597504} and np.isfinite(train["losses"]).all()
    assert render["std"] > 0 and len(render["step_seconds"]) == 2


def test_depth_backends_at_real_size(real_size, root, monkeypatch):
    from story_pipeline.depth.estimators import clear_estimator_cache

    rows = []
    for backend, folder in (("transformers", root / "dpt-hybrid"), ("controlnet_aux", root / "annotators-hybrid")):
        monkeypatch.setenv("STORY_DEPTH_BACKEND", backend)
        monkeypatch.setenv("STORY_DEPTH_FOLDER", str(folder))
        rows.append(real_size.run_depth(backend, folder, frames=2, size=256))
    clear_estimator_cache()
    # DPT-Hybrid, ViT-B/16 on a ResNet-50 stem: transformers' port, and MiDaS' module (+ timm's unused head)
    assert 121e6 < rows[0]["params"] < rows[1]["params"] < 124e6, rows
    assert rows[0]["model_id"].startswith("transformers:dpt@")
    assert rows[1]["model_id"].startswith("controlnet_aux:dpt_hybrid@")
