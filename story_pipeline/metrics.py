"""The paper's Sem and ID metrics, and zero-shot classification, on frame/text embeddings.

    from story_pipeline.metrics import id_score, sem_score, zero_shot
    from story_pipeline.models.frame_encoder import encode_frames, load_frame_encoder
    from story_pipeline.models.text_encoder import get_text_encoder
    enc = load_frame_encoder("data/models/toyworld_frame_encoder")
    frames = encode_frames(enc, video)                      # (F, 384)
    sem_score(frames, get_text_encoder().encode([prompt]))  # Sem: prompt <-> each frame, averaged
    id_score(frames, encode_frames(enc, reference_images))  # ID: each frame <-> each reference image, averaged
    zero_shot(frames, ["a photo of a cat", "a photo of a dog"])  # (F,) index of the best-matching text

Animate-A-Story (Table 2) computes both metrics with CLIP; this project uses its own frame
encoder, whose frame embeddings live in the frozen MiniLM caption space (see
``story_pipeline.models.frame_encoder``). So absolute values are not comparable with the paper's
CLIP numbers (0.25-0.30 Sem, 0.67-0.90 ID): compare methods, shots or checkpoints with the same
encoder, and compare a score with its baseline (e.g. Sem with a shuffled prompt, ID against
another identity's references; the model card of the encoder reports both).

Everything here is numpy on (N, D) embeddings; rows are L2-normalised again before use, so
every score is a true cosine whatever the caller passes.
"""

import numpy as np


def _unit_rows(x, name: str) -> np.ndarray:
    """(D,) or (N, D) -> (N, D) float64 unit rows; a one-sentence ValueError for anything else."""
    x = np.asarray(x, np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) array of embeddings, got shape {x.shape}.")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if not np.all(norms > 0):
        raise ValueError(f"{name} contains an all-zero embedding; it has no direction to compare.")
    return x / norms


def _check_dims(a: np.ndarray, b: np.ndarray, names: str):
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{names} have different embedding sizes ({a.shape[1]} vs {b.shape[1]}); "
                         "embed both with the same frame/text encoder pair.")


def cosine_matrix(a, b) -> np.ndarray:
    """(N, D), (M, D) -> (N, M) cosine similarities."""
    a, b = _unit_rows(a, "a"), _unit_rows(b, "b")
    _check_dims(a, b, "a and b")
    return a @ b.T


def sem_score(frame_emb, text_emb) -> float:
    """Sem: the mean over frames of cosine(frame, text).

    frame_emb: (F, D) embeddings of one video's frames. text_emb: (D,) or (1, D), the prompt the video
    was generated from (or its caption). With several text rows (T, D) the mean is over all F x T pairs.
    """
    frames, text = _unit_rows(frame_emb, "frame_emb"), _unit_rows(text_emb, "text_emb")
    _check_dims(frames, text, "frame_emb and text_emb")
    return float((frames @ text.T).mean())


def id_score(frame_emb, ref_emb) -> float:
    """ID: the mean over frames and reference images of cosine(frame, reference).

    frame_emb: (F, D) embeddings of a video's frames. ref_emb: (R, D) embeddings of the character's
    reference (concept) images. 1.0 = every frame looks exactly like every reference.
    """
    frames, refs = _unit_rows(frame_emb, "frame_emb"), _unit_rows(ref_emb, "ref_emb")
    _check_dims(frames, refs, "frame_emb and ref_emb")
    return float((frames @ refs.T).mean())


def zero_shot(frame_emb, label_texts, text_encoder=None) -> np.ndarray:
    """(N,) index of the label whose text embedding is most similar to each frame (CLIP-style zero-shot).

    label_texts: K prompts (strings, e.g. "a photo of a cat"), embedded with ``text_encoder``
    (default: the bundled MiniLM from ``story_pipeline.models.text_encoder``), or their (K, D) embeddings.
    Use ``zero_shot_scores`` for the (N, K) similarities.
    """
    return zero_shot_scores(frame_emb, label_texts, text_encoder).argmax(axis=1)


def zero_shot_scores(frame_emb, label_texts, text_encoder=None) -> np.ndarray:
    """(N, K) cosine between each frame and each label prompt (see ``zero_shot``)."""
    if isinstance(label_texts, str):
        raise TypeError("label_texts must be a list of prompts (one per label), not a single string.")
    if isinstance(label_texts, np.ndarray) and label_texts.dtype.kind == "f":
        labels = label_texts
    else:
        label_texts = list(label_texts)
        if not label_texts:
            raise ValueError("zero_shot needs at least one label prompt.")
        if text_encoder is None:
            from story_pipeline.models.text_encoder import get_text_encoder

            text_encoder = get_text_encoder()
        labels = text_encoder.encode(label_texts)  # (K, D)
    return cosine_matrix(frame_emb, labels)


def id_separation(frame_embs: list, ref_embs: list) -> dict:
    """How well ID tells identities apart: frames of identity i against the references of every identity j.

    frame_embs, ref_embs: one (F_i, D) / (R_j, D) array per identity, in the same order.
    Returns ``same`` (mean ID with the own references), ``different`` (mean ID with the other
    identities' references), ``gap`` (same - different), ``accuracy`` (share of identities whose
    own references give the highest ID) and ``matrix`` (the K x K ID scores, rows = frames).
    """
    if len(frame_embs) != len(ref_embs) or len(frame_embs) < 2:
        raise ValueError("id_separation needs the same number (>= 2) of frame and reference sets, "
                         f"got {len(frame_embs)} and {len(ref_embs)}.")
    k = len(frame_embs)
    matrix = np.array([[id_score(f, r) for r in ref_embs] for f in frame_embs])  # (K, K)
    off = ~np.eye(k, dtype=bool)
    same, different = float(np.diag(matrix).mean()), float(matrix[off].mean())
    return {"same": same, "different": different, "gap": same - different,
            "accuracy": float((matrix.argmax(axis=1) == np.arange(k)).mean()), "matrix": matrix.tolist()}
