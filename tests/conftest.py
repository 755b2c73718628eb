import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs a worker per core: one thread each (and their
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # subprocesses), else the workers' torch threads fight

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Model tests run torch on one thread: on this 2-core machine the other core is often busy."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def save_tiny_video_model():
    """``save(folder, seed=0) -> folder``: a random ToyVideoUNet (+ scheduler) in the shipped layout."""
    from tiny_models import save_tiny_video_model

    return save_tiny_video_model


@pytest.fixture(scope="session")
def save_tiny_pipeline():
    """``save(folder, seed=0) -> folder``: a tiny Stable Diffusion pipeline folder with motion_adapter/ and
    controlnet/ inside, saved with save_pretrained as users' folders are."""
    from tiny_models import save_tiny_pipeline

    return save_tiny_pipeline
