"""What personalization learns and how it is configured: ``PersonalizeConfig``, the TimeInv
``TokenTable`` (rows per timestep bucket), the saved ``LearnedConcept`` and the LoRA helpers.

TimeInv (paper step 6): a character's pseudo-word as a timestep-dependent embedding table, optionally
with LoRA on the video model's spatial attention. Timestep ``t`` reads row ``b(t) = t * B // T``: a
random timestep picks its row in training, the current timestep's row at sampling (through the
generator's ``step_embeds`` hook). B = 1 is plain Textual Inversion; B = T is the paper's form; the
default B = 2 is what ``bench/table2.py`` found best at the default 100 steps (``docs/results.md``).
Model side (``*_lora`` methods): peft LoRA adapters on q/k/v of the U-Net's spatial self- and
cross-attention (not the temporal layers). Only V and the LoRA weights are trained.
"""

import contextlib
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from story_pipeline.personalize.config import NUM_TRAIN_TIMESTEPS

LORA_TARGETS = r".*\.attentions\.\d+\.transformer_blocks\.\d+\.attn[12]\.to_[qkv]"  # spatial attention only
FORMAT_VERSION = 1


def bucket(t: int | torch.Tensor, buckets: int):
    """Row of the TimeInv table read at timestep t (0..T-1)."""
    return (t * buckets) // NUM_TRAIN_TIMESTEPS


@dataclass
class LearnedConcept:
    token: str
    class_word: str
    method: str
    table: torch.Tensor  # (B, D) input-embedding rows
    lora: dict[str, torch.Tensor] = field(default_factory=dict)  # peft state dict (empty: no LoRA)
    lora_rank: int = 0
    metrics: dict = field(default_factory=dict)
    phrase: str = ""  # how prompts name the character ("<tabby> cat"; "" = the token alone, as files before it)

    @property
    def prompt_phrase(self) -> str:
        return self.phrase or self.token

    @property
    def digest(self) -> str:
        h = hashlib.sha256(self.token.encode() + self.method.encode())
        h.update(self.table.float().numpy().tobytes())
        for k in sorted(self.lora):
            h.update(k.encode())
            h.update(self.lora[k].float().numpy().tobytes())
        return h.hexdigest()[:16]

    def save(self, path: Path) -> Path:
        """safetensors: ``table`` + ``lora.<key>`` tensors; token, class word, method, metrics in the metadata."""
        from safetensors.torch import save_file

        from story_pipeline.fsutil import atomic_path

        tensors = {"table": self.table.contiguous()} | {f"lora.{k}": v.contiguous() for k, v in self.lora.items()}
        meta = {"format": str(FORMAT_VERSION), "token": self.token, "class_word": self.class_word,
                "method": self.method, "lora_rank": str(self.lora_rank), "metrics": json.dumps(self.metrics),
                "phrase": self.phrase}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> "LearnedConcept":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        return cls(meta["token"], meta["class_word"], meta["method"], tensors.pop("table"),
                   {k[5:]: v for k, v in tensors.items()}, int(meta["lora_rank"]), json.loads(meta["metrics"]),
                   meta.get("phrase", ""))


# --- training -------------------------------------------------------------------------------------------
class TokenTable(torch.nn.Module):
    """The pseudo-word's trainable input embedding: rows V (B, D), every row the class word's embedding at
    the start; ``table(rows)`` reads rows, ``table.full()`` is V. With ``shared`` (and B > 1), V = v + R:
    one vector ``v`` every step trains plus per-bucket residuals ``R`` (zero at the start) trained when
    their bucket is drawn. Same function class as a plain table; what differs is how far a row gets
    in a fixed number of steps (a plain row is drawn in ~batch/B of them)."""

    def __init__(self, init: torch.Tensor, buckets: int, shared: bool = False):
        super().__init__()
        self.shared = torch.nn.Parameter(init[None].clone()) if shared and buckets > 1 else None
        rows = torch.zeros(buckets, init.shape[-1]) if self.shared is not None else init[None].repeat(buckets, 1)
        self.rows = torch.nn.Parameter(rows)  # both are new tensors: nothing shares memory with init

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.rows[idx] if self.shared is None else self.shared[0] + self.rows[idx]

    def full(self) -> torch.Tensor:
        return self.rows if self.shared is None else self.shared + self.rows



# --- model side -----------------------------------------------------------------------------------------
def lora_config(rank: int):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS, lora_dropout=0.0, init_lora_weights=True)


def adapter_name(token: str) -> str:
    return "c_" + hashlib.sha1(token.encode()).hexdigest()[:10]


@contextlib.contextmanager
def lora_applied(model, concepts: list[LearnedConcept]):
    """Adds the concepts' LoRA adapters to the video model for the duration of the block, then removes them."""
    from peft.utils import set_peft_model_state_dict

    names = []
    try:
        for c in concepts:
            if not c.lora:
                continue
            name = adapter_name(c.token)
            model.unet.add_adapter(lora_config(c.lora_rank), adapter_name=name)
            set_peft_model_state_dict(model.unet, c.lora, adapter_name=name)
            names.append(name)
        if names:
            model.unet.set_adapters(names)
        yield model
    finally:
        if names:
            model.unet.unload_lora()  # back to the plain layers (delete_adapters keeps the wrappers)


def class_prompt(prompt: str, concepts: dict[str, LearnedConcept]) -> str:
    """The prompt with each concept token (or its phrase) replaced by its class word (what Sem is measured against)."""
    for tok, c in concepts.items():
        prompt = prompt.replace(c.prompt_phrase, c.class_word).replace(tok, c.class_word)
    return prompt


def concept_phrase(token: str, class_word: str, class_in_prompt: bool) -> str:
    """How training captions and render prompts name a learnt character: "<tabby> cat" or "<tabby>"."""
    return f"{token} {class_word}" if class_in_prompt else token


def with_phrase(prompt: str, token: str, phrase: str) -> str:
    """``prompt`` with ``token`` written as ``phrase`` ("a <tabby> jumps" -> "a <tabby> cat jumps"), unless
    the prompt already says it ("a <tabby> cat jumps" stays)."""
    if phrase == token:
        return prompt
    rest = phrase[len(token):].strip() if phrase.startswith(token) else ""
    follows = rf"(?!\s+{re.escape(rest)}\b)" if rest else ""
    return re.sub(re.escape(token) + follows, lambda _: phrase, prompt)



