"""The text transformer — CLIP's text tower (chapter 03, book §14.2.2).

Token ids are looked up in an embedding table (토큰 임베딩), learned position embeddings are added, and the same
pre-LN blocks as the ViT run over them — but *causally* (인과적 마스크): token t sees only tokens 0..t, as in a
GPT. A final LayerNorm follows, and the caption's summary is read at its end-of-text token (문장 끝 토큰): thanks to
the causal mask, that is the first position that has seen the whole caption, and nothing after it (padding) can
leak in.

Layout and semantics follow Hugging Face's `CLIPTextModel`: `last_hidden_state` is *after* the final norm, and
pooling is at the first `eos_token_id` — or, for old configs with ``eos_token_id == 2``, at the position of the
largest id (the original OpenAI rule, where end-of-text was the largest id in the vocabulary).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .transformer import HFTower, LayerNorm, Transformer, get_activation, hf_tower_settings, rename_hf_tower
from .weights import can_read_back, check_int, check_real, load_state_dict_strict


@dataclass
class TextConfig:
    """Hyper-parameters of the text tower. `vocab_size`, `eos_token_id` and `pad_token_id` come from the tokenizer.

    pool: "eos_id" — read the first position whose id is `eos_token_id`; "argmax" — read the position of the
    largest id (HF's legacy rule, used automatically by `from_hf` when a HF config has ``eos_token_id == 2``).
    """

    vocab_size: int
    context_length: int = 32
    width: int = 128
    layers: int = 2
    heads: int = 4
    mlp_hidden: int = 512
    act: str = "quick_gelu"
    eps: float = 1e-5
    eos_token_id: int = 3     # our tokenizer's <eos> (deliberately not 2: HF reads eos 2 as "use the argmax rule")
    pad_token_id: int = 0
    pool: str = "eos_id"

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "width", "layers", "heads", "mlp_hidden"):
            check_int(getattr(self, name), f"TextConfig.{name}")
        check_real(self.eps, "TextConfig.eps", low=0, low_open=True)
        if self.width % self.heads:
            raise ValueError(f"width={self.width} is not divisible by heads={self.heads}")
        if self.pool not in ("eos_id", "argmax"):
            raise ValueError(f"TextConfig.pool must be 'eos_id' or 'argmax', got {self.pool!r}")
        for name in ("eos_token_id", "pad_token_id"):
            check_int(getattr(self, name), f"TextConfig.{name}", minimum=0)
        if self.pool == "eos_id" and not 0 <= self.eos_token_id < self.vocab_size:
            raise ValueError(f"eos_token_id={self.eos_token_id} is outside the vocabulary (size {self.vocab_size})")
        if self.pad_token_id >= self.vocab_size:
            raise ValueError(f"pad_token_id={self.pad_token_id} is outside the vocabulary (size {self.vocab_size})")
        get_activation(self.act)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_hf(cls, hf_config) -> TextConfig:
        """From a HF `CLIPTextConfig` (or its dict, or a `CLIPConfig`, whose `text_config` is used)."""
        c = hf_tower_settings(hf_config, "text_config")
        eos = c.get("eos_token_id", 2)
        return cls(vocab_size=c["vocab_size"], context_length=c["max_position_embeddings"], width=c["hidden_size"],
                   layers=c["num_hidden_layers"], heads=c["num_attention_heads"], mlp_hidden=c["intermediate_size"],
                   act=c.get("hidden_act", "quick_gelu"), eps=c.get("layer_norm_eps", 1e-5), eos_token_id=eos,
                   pad_token_id=1 if c.get("pad_token_id") is None else c["pad_token_id"],
                   pool="argmax" if eos == 2 else "eos_id")


@dataclass
class TextOutput:
    """What the text tower returns.

    last_hidden_state: (B, T, D), after `final_layer_norm` (HF convention).
    pooled: (B, D), last_hidden_state at the end-of-text position of each caption.
    hidden_states: None, or a tuple of layers+1 tensors (B, T, D): the embeddings, then after each block (the
      last one before the final norm, as in HF).
    eos_positions: (B,) long, where each caption was pooled.
    """

    last_hidden_state: torch.Tensor
    pooled: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    eos_positions: torch.Tensor | None = None


class TextTransformer(HFTower, nn.Module):
    """Token + position embeddings -> causal transformer -> final LayerNorm -> pooled at end-of-text."""

    config_class = TextConfig   # what `from_hf` (HFTower) reads a HF CLIPTextConfig into

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.width
        self.token_embedding = nn.Embedding(cfg.vocab_size, D)
        self.position_embedding = nn.Parameter(0.01 * torch.randn(cfg.context_length, D))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.transformer = Transformer(D, cfg.layers, cfg.heads, cfg.mlp_hidden, cfg.act, cfg.eps)
        self.final_layer_norm = LayerNorm(D, eps=cfg.eps)

    def check_ids(self, input_ids: torch.Tensor) -> None:
        """Raise a ValueError naming the problem unless `input_ids` is an integer (B, T) batch this model takes."""
        cfg = self.cfg
        if not isinstance(input_ids, torch.Tensor):
            raise ValueError(f"input_ids must be a torch.Tensor of token ids, got {type(input_ids).__name__} "
                             f"(use the tokenizer: tok(texts) -> LongTensor)")
        if input_ids.dtype not in (torch.long, torch.int32, torch.int16, torch.uint8, torch.int8):
            raise ValueError(f"input_ids have dtype {input_ids.dtype}; expected integer token ids")
        if input_ids.ndim != 2:
            hint = " (a single caption? use ids.unsqueeze(0))" if input_ids.ndim == 1 else ""
            raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}{hint}")
        T = input_ids.shape[1]
        if T == 0:
            raise ValueError("input_ids have length 0: an empty caption has no end-of-text token to pool")
        if T > cfg.context_length:
            raise ValueError(f"sequence length {T} is longer than the context length {cfg.context_length}; "
                             f"the tokenizer truncates (keeping end-of-text) when given context_length")
        # Reading values back (min/max) waits for the GPU and would split a torch.compile graph: see can_read_back.
        if input_ids.numel() and can_read_back(input_ids):
            lo, hi = int(input_ids.min()), int(input_ids.max())
            if lo < 0 or hi >= cfg.vocab_size:
                bad = lo if lo < 0 else hi
                raise ValueError(f"token id {bad} is outside the vocabulary [0, {cfg.vocab_size})")

    def eos_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B,) the position pooled for each caption (see `TextConfig.pool`)."""
        if self.cfg.pool == "argmax":
            return input_ids.to(torch.int).argmax(dim=-1)
        is_eos = input_ids == self.cfg.eos_token_id
        # (nonzero() waits for the GPU: checked where check_ids reads values back, see can_read_back)
        missing = (~is_eos.any(dim=-1)).nonzero().flatten() if can_read_back(input_ids) else None
        if missing is not None and len(missing):
            raise ValueError(f"caption(s) at batch index {missing.tolist()[:8]} have no end-of-text token "
                             f"(id {self.cfg.eos_token_id}); tokenize with the model's tokenizer")
        return is_eos.int().argmax(dim=-1)  # argmax returns the *first* maximum: the first eos

    def forward(self, input_ids: torch.Tensor, return_hidden: bool = False) -> TextOutput:
        """input_ids: integer (B, T), T <= context_length -> `TextOutput` (see there for shapes)."""
        self.check_ids(input_ids)
        input_ids = input_ids.long()
        T = input_ids.shape[1]
        x = self.token_embedding(input_ids) + self.position_embedding[:T]
        x, hidden = self.transformer(x, causal=True, return_hidden=True)
        x = self.final_layer_norm(x)
        pos = self.eos_positions(input_ids)
        pooled = x[torch.arange(x.shape[0], device=x.device), pos.to(x.device)]
        return TextOutput(x, pooled, hidden if return_hidden else None, pos)

    @torch.no_grad()
    def attention_maps(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Attention probabilities of every layer: (layers, B, heads, T, T) — zero above the diagonal."""
        self.check_ids(input_ids)
        T = input_ids.shape[1]
        x = self.token_embedding(input_ids.long()) + self.position_embedding[:T]
        return self.transformer.attention_maps(x, causal=True)

    @classmethod
    def from_hf_state_dict(cls, state_dict: dict, cfg: TextConfig) -> TextTransformer:
        """Build a text tower from a HF `CLIPTextModel` state dict (keys with or without ``text_model.``).

        `cfg` is our `TextConfig` or a HF `CLIPTextConfig` (its `eos_token_id` decides the pooling rule, which the
        weights cannot tell). Every key must be used and every shape must match, or a ValueError lists the
        missing, unexpected and mis-shaped keys.
        """
        cfg = cfg if isinstance(cfg, TextConfig) else TextConfig.from_hf(cfg)
        return load_state_dict_strict(cls(cfg), convert_hf_state_dict(state_dict), what=f"TextTransformer({cfg})")


_HF_RENAMES = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "position_embedding",
    "final_layer_norm.weight": "final_layer_norm.weight",
    "final_layer_norm.bias": "final_layer_norm.bias",
}


def convert_hf_state_dict(state_dict: dict, prefix: str = "text_model.") -> dict[str, torch.Tensor]:
    """Rename a HF CLIP text state dict into ours (`prefix` stripped when every key has it; see
    `transformer.rename_hf_tower`)."""
    return rename_hf_tower(state_dict, prefix, _HF_RENAMES)
