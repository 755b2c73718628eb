"""Zero-shot recognition with the toy CLIP (the frame encoder + MiniLM prompts): the species, colour and
setting of frames, ID separation of the novel characters, and the frame encoder's held-out metrics.
Used by ``train/frame_encoder.py`` (model selection, the model card) and ``eval/video.py`` (the gates).
"""

import dataclasses
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from story_pipeline.metrics import id_separation, sem_score, zero_shot_scores
from story_pipeline.models.frame_encoder import encode_frames, load_frame_encoder
from story_pipeline.models.text_encoder import get_text_encoder
from story_pipeline.toyworld import (
    CORPUS_COLOURS, MOTIONS, NOVEL_CHARACTERS, SETTINGS, SPECIES, ClipSpec, render_clip, sample_specs,
    write_reference_images,
)
from story_pipeline.toyworld.captions import SETTING_PHRASES, _article

TEST_SPEC_SEED = -1  # sample_specs seed of the reported held-out clips (training never reaches it)
# Recoloured look-alikes of the novel characters for the harder ID check: same species, pattern
# and accessory, corpus colours far from the novel ones.
LOOKALIKE_COLOURS = {"teal": "red", "gold": "blue", "lavender": "green"}


def species_prompts() -> list[str]:
    return [f"a photo of a {s}" for s in SPECIES]


def colour_prompts(species: str) -> list[str]:
    return [_article(f"{c} {species}") for c in CORPUS_COLOURS]


def setting_prompts(species: str) -> list[str]:
    return [f"{_article(species)} {SETTING_PHRASES[s][0]}" for s in SETTINGS]


class PromptEmbeddings:
    """Zero-shot label prompts, embedded once with the frozen MiniLM."""

    def __init__(self):
        enc = get_text_encoder()
        self.species = enc.encode(species_prompts())  # (10, D)
        self.colour = {s: enc.encode(colour_prompts(s)) for s in SPECIES}  # species -> (11, D)
        self.setting = {s: enc.encode(setting_prompts(s)) for s in SPECIES}  # species -> (7, D)


def zero_shot_accuracy(emb: np.ndarray, attrs: list, prompts: PromptEmbeddings) -> dict:
    """emb (N, D) frame embeddings; attrs: N attribute dicts -> accuracy of species, colour, setting.

    species: argmax over "a photo of a <species>"; colour: argmax over "a <colour> <true species>"
    (corpus colours); setting: argmax over "a <true species> <setting phrase>"."""
    sp = np.array([a["species"] for a in attrs])
    pred_sp = zero_shot_scores(emb, prompts.species).argmax(1)
    col_ok, set_ok = [], []
    for s in SPECIES:
        m = sp == s
        if m.any():
            col_ok.append(np.array(CORPUS_COLOURS)[zero_shot_scores(emb[m], prompts.colour[s]).argmax(1)]
                          == np.array([a["colour"] for a, k in zip(attrs, m) if k]))
            set_ok.append(np.array(SETTINGS)[zero_shot_scores(emb[m], prompts.setting[s]).argmax(1)]
                          == np.array([a["setting"] for a, k in zip(attrs, m) if k]))
    return {"species": float((np.array(SPECIES)[pred_sp] == sp).mean()),
            "colour": float(np.concatenate(col_ok).mean()), "setting": float(np.concatenate(set_ok).mean())}


def render_eval_clips(n: int, seed: int, frames_per_clip: int) -> tuple:
    """Held-out clips of sample_specs(n, seed) at their full length; frames_per_clip evenly spaced
    frames each. -> (frames (n*k, 128, 128, 3) uint8, attrs per frame, captions per clip)."""
    frames, attrs, captions = [], [], []
    for spec in sample_specs(n, seed):
        clip = render_clip(spec)
        idx = ((np.arange(frames_per_clip) + 0.5) * len(clip.rgb) / frames_per_clip).astype(int)
        frames.append(clip.rgb[idx])
        attrs += [clip.attributes] * frames_per_clip
        captions.append(clip.caption)
    return np.concatenate(frames), attrs, captions


@torch.no_grad()
def validate(model, val_x: torch.Tensor, val_attrs: list, prompts: PromptEmbeddings, bf16: bool) -> dict:
    model.eval()
    embs = []
    for i in range(0, len(val_x), 128):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            embs.append(F.normalize(model(val_x[i:i + 128]).float(), dim=-1))
    model.train()
    acc = zero_shot_accuracy(torch.cat(embs).numpy(), val_attrs, prompts)
    acc["mean"] = (acc["species"] + acc["colour"] + acc["setting"]) / 3
    return acc


def read_png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def id_eval(model, n_refs: int = 4, clips_per_character: int = 3, frames_per_clip: int = 4) -> dict:
    """ID separation on the NOVEL_CHARACTERS (never trained on): frames of clips of each character vs the
    reference images of every character (written by write_reference_images, read back as PNG), and vs
    the references of a recoloured look-alike (same species, pattern and accessory; corpus colours)."""
    rng = random.Random("frame-encoder-id-eval")
    frame_embs, ref_embs, lookalike_embs = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, ch in enumerate(NOVEL_CHARACTERS):
            refs = [read_png(p) for p in write_reference_images(ch, Path(tmp) / f"novel{i}", n=n_refs, seed=i)]
            ref_embs.append(encode_frames(model, np.stack(refs)))
            twin = dataclasses.replace(ch, colour=LOOKALIKE_COLOURS[ch.colour], colour2=LOOKALIKE_COLOURS[ch.colour2])
            twins = [read_png(p) for p in write_reference_images(twin, Path(tmp) / f"twin{i}", n=n_refs, seed=i)]
            lookalike_embs.append(encode_frames(model, np.stack(twins)))
            frames = []
            for _ in range(clips_per_character):
                spec = ClipSpec(ch, rng.choice(MOTIONS), rng.choice(SETTINGS), rng.randrange(2**31), num_frames=24)
                clip = render_clip(spec)
                idx = ((np.arange(frames_per_clip) + 0.5) * len(clip.rgb) / frames_per_clip).astype(int)
                frames.append(clip.rgb[idx])
            frame_embs.append(encode_frames(model, np.concatenate(frames)))
    sep = id_separation(frame_embs, ref_embs)
    own = [np.mean(f @ r.T) for f, r in zip(frame_embs, ref_embs)]
    twin = [np.mean(f @ t.T) for f, t in zip(frame_embs, lookalike_embs)]
    sep["lookalike"] = float(np.mean(twin))
    sep["lookalike_wins"] = float(np.mean(np.array(own) > np.array(twin)))  # own refs beat the recoloured twin's
    sep["characters"] = [c.name() for c in NOVEL_CHARACTERS]
    return sep


def final_metrics(out: Path, test_clips: int, test_frames_per_clip: int) -> dict:
    """The shipped (fp16) weights through load_frame_encoder + encode_frames on held-out clips at 128 px."""
    model = load_frame_encoder(out)
    prompts = PromptEmbeddings()
    frames, attrs, captions = render_eval_clips(test_clips, TEST_SPEC_SEED, test_frames_per_clip)
    t0 = time.time()
    emb = encode_frames(model, frames)  # (N*k, D)
    ms = 1000 * (time.time() - t0) / len(frames)
    m = {"clips": test_clips, "frames": len(frames), "encode_ms_per_frame": ms,
         "zero_shot": zero_shot_accuracy(emb, attrs, prompts),
         "chance": {"species": 1 / len(SPECIES), "colour": 1 / len(CORPUS_COLOURS), "setting": 1 / len(SETTINGS)}}
    pred = np.array(SPECIES)[zero_shot_scores(emb, prompts.species).argmax(1)]
    ok = pred == np.array([a["species"] for a in attrs])
    motions = np.array([a["motion"] for a in attrs])
    m["species_by_motion"] = {mo: float(ok[motions == mo].mean()) for mo in MOTIONS if (motions == mo).any()}
    # Sem: each clip's frames with its own caption vs with another clip's caption
    k = test_frames_per_clip
    cap = get_text_encoder().encode(captions)  # (n, D)
    shuffled = np.roll(cap, 1, axis=0)
    own = np.array([sem_score(emb[i * k:(i + 1) * k], cap[i]) for i in range(len(captions))])
    other = np.array([sem_score(emb[i * k:(i + 1) * k], shuffled[i]) for i in range(len(captions))])
    m["sem"] = {"own": float(own.mean()), "shuffled": float(other.mean()), "own_wins": float((own > other).mean())}
    # text -> clip retrieval among the held-out clips (the frame-embedding column of the index)
    clip_emb = emb.reshape(len(captions), k, -1).mean(1)  # (n, D)
    rank = (-(cap @ clip_emb.T)).argsort(1)  # (n, n)
    pos = (rank == np.arange(len(captions))[:, None]).argmax(1)
    m["retrieval"] = {"recall@1": float((pos < 1).mean()), "recall@5": float((pos < 5).mean())}
    m["id"] = id_eval(model)
    return m
