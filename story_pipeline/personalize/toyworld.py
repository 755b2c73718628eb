"""Personalization on the ``toyworld`` generator: MiniLM with pseudo-words for the text side, concept
videos in pixel space, the toy video model's v-prediction target (``train.personalize`` runs the loop).

The pseudo-word (``<tabby>``) is added to a copy of the MiniLM tokenizer; its input embedding is not a
row of the frozen embedding matrix but a row of the ``TokenTable`` (every row initialised from the
class word's embedding).
"""


import torch

from story_pipeline.config import get_settings
from story_pipeline.personalize.config import PersonalizationError
from story_pipeline.personalize.data import PriorBank, concept_bank

N_AUG = 16  # augmented copies of each reference still


class ConceptText:
    """MiniLM with pseudo-words: prompt states where each concept token's input embedding comes
    from its table row. The shared encoder's weights are read, never changed."""

    def __init__(self, text_encoder, length: int | None = None):
        import copy

        from story_pipeline.models.text_encoder import PROMPT_LENGTH

        self.encoder = text_encoder
        self.tokenizer = copy.deepcopy(text_encoder.tokenizer)  # adding tokens must not touch the shared one
        self.model = text_encoder.model
        self.length = length or PROMPT_LENGTH
        self.token_ids: dict[str, int] = {}

    @property
    def word_embeddings(self) -> torch.Tensor:
        return self.model.embeddings.word_embeddings.weight

    def add_token(self, token: str) -> None:
        if token in self.token_ids:
            return
        if token in self.tokenizer.get_vocab():
            raise PersonalizationError(f"Token {token} is already a word of the text encoder's vocabulary; "
                                       "choose another name, e.g. <my-cat>.")
        self.tokenizer.add_tokens([token])
        self.token_ids[token] = self.tokenizer.convert_tokens_to_ids(token)

    def class_embedding(self, class_word: str) -> torch.Tensor:
        """(D,) mean input embedding of the class word's word pieces; one sentence if it has none."""
        ids = self.tokenizer(class_word, add_special_tokens=False)["input_ids"]
        unk = self.tokenizer.unk_token_id
        if not ids or unk in ids:
            raise PersonalizationError(f"Class word {class_word!r} is unknown to the text encoder (it reads as "
                                       "[UNK]); use a common English word such as 'cat' or 'robot'.")
        return self.word_embeddings[ids].detach().float().mean(0)

    def states(self, prompts: list[str], rows: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, L, D) last-layer states; ``rows[token]`` is (N, D): that token's input embedding per prompt."""
        texts = [" ".join(p.split()) for p in prompts]
        tok = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.length, return_tensors="pt")
        ids = tok["input_ids"]
        vocab = self.word_embeddings.shape[0]
        emb = self.model.embeddings.word_embeddings(ids.clamp(max=vocab - 1))  # added ids are replaced below
        for token, r in rows.items():
            mask = (ids == self.token_ids[token])[..., None]  # (N, L, 1)
            emb = torch.where(mask, r[:, None, :].to(emb.dtype), emb)
        return self.model(inputs_embeds=emb, attention_mask=tok["attention_mask"]).last_hidden_state



class Adapter:
    """What the training loop needs from the toyworld generator."""

    def __init__(self, generator):
        self.generator = generator
        self.lora_host = generator.model  # LoRA adapters go on lora_host.unet
        self.param_root = generator.model  # checkpoints name the LoRA weights from here
        self.device = torch.device("cpu")

    def concept_text(self) -> ConceptText:
        return ConceptText(self.generator.text_encoder)

    def check(self, config) -> None:
        pass

    def freeze(self, text: ConceptText) -> None:
        for p in self.generator.model.parameters():
            p.requires_grad_(False)
        for p in text.model.parameters():
            p.requires_grad_(False)

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.generator.bf16)

    def concept_videos(self, images: list, config, rng, estimator=None) -> None:
        from story_pipeline.models.depth_net import load_depth_net
        from story_pipeline.models.video_unet import make_scheduler

        self.sched = make_scheduler()
        depth_fn = estimator or load_depth_net(get_settings().models_dir / "toyworld_depth")
        self.x, self.d = concept_bank(images, depth_fn, config.size, N_AUG, config.augment, rng)  # (N, 3, S, S), (N, S, S)

    @property
    def bank_size(self) -> int:
        return len(self.x)

    def concept_batch(self, pick: torch.Tensor, config, gen: torch.Generator):
        x0 = self.x[pick][:, :, None].expand(-1, -1, config.frames, -1, -1)  # (B, 3, L, S, S) still video
        depth = self.d[pick][:, None, None].expand(-1, 1, config.frames, -1, -1)  # (B, 1, L, S, S)
        return x0, depth

    def prior_batch(self, prior: PriorBank, j: int, config, gen: torch.Generator):
        return prior.x[j:j + 1, :, :config.frames], prior.depth[j:j + 1, :, :config.frames]  # (1, 3|1, L, S, S)

    def predict(self, x0, depth, states, t, noise):
        """(the model's v-prediction, the true velocity) for videos x0 noised to timesteps t."""
        xt = self.sched.add_noise(x0, noise, t)
        return self.generator.model(xt, t, states, depth=depth), self.sched.get_velocity(x0, noise, t)
