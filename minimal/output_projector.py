"""The output projector (출력 프로젝터, trained — "fire"; chapter 09, book §14.1.1, §14.3).

An LLM writes text. To answer "draw a small blue star on the left" with a picture, the book's figure adds two
components after the LLM backbone: this one, and the modality generator (`minimal.modality_generator`). The output
projector reads the frozen LLM's hidden states for a request (`minimal.hidden_states.llm_states`) and (a) decides
whether the user asked for an image at all and (b) if so, writes a *prompt for the generator* — here not words but a
vector in the generator's conditioning space, the tiny CLIP's text-embedding space. Its target for a request is the CLIP
text embedding of the phrase that describes what was asked for ("a small blue star on the left": `TargetTable`).

    projector = load_output_projector()                     # the shipped one
    out = projector(states, mask)                           # ProjectorOutput(logit (B,), cond (B, 64))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .shapes import all_target_phrases
from .weights import CHECKPOINT_DIR, can_read_back, check_finite, check_floating, check_int, check_real, load_module
from .zeroshot import check_embeddings, embed, encoders

OUTPUT_PROJECTOR_PATH = CHECKPOINT_DIR / "output_projector.safetensors"


@dataclass
class OutputProjectorConfig:
    """Attention pooling over the LLM's token states, then an MLP with two heads (decision, conditioning)."""

    hidden_size: int = 576      # the LLM's width (SmolLM2-135M)
    layer: int = 18             # which decoder layer's states it reads (1-based; 18 of SmolLM2's 30, see chapter 09)
    cond_dim: int = 64          # the generator's conditioning space = the tiny CLIP's embedding size
    heads: int = 4              # attention-pooling heads: each learns which tokens to read (the verb, the colour...)
    width: int = 256
    dropout: float = 0.1

    def __post_init__(self):
        for name in ("hidden_size", "layer", "cond_dim", "heads", "width"):
            check_int(getattr(self, name), f"OutputProjectorConfig.{name}")
        check_real(self.dropout, "OutputProjectorConfig.dropout", low=0, high=1, high_open=True)


@dataclass
class ProjectorOutput:
    """logit (B,): > 0 means "the user wants an image"; cond (B, cond_dim): unit-norm generator conditioning."""

    logit: torch.Tensor
    cond: torch.Tensor

    @property
    def wants_image(self) -> torch.Tensor:
        return self.logit > 0


class OutputProjector(nn.Module):
    """The trained bridge from the frozen LLM to the frozen generator (≈0.68 M parameters, 0.5 % of the LLM)."""

    def __init__(self, cfg: OutputProjectorConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or OutputProjectorConfig()
        self.norm = nn.LayerNorm(cfg.hidden_size)
        self.score = nn.Linear(cfg.hidden_size, cfg.heads)
        self.mlp = nn.Sequential(nn.Linear(cfg.heads * cfg.hidden_size, cfg.width), nn.GELU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(cfg.width, cfg.width), nn.GELU())
        self.decide = nn.Linear(cfg.width, 1)
        self.to_cond = nn.Linear(cfg.width, cfg.cond_dim)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> ProjectorOutput:
        """states (B, T, hidden) from `hidden_states.llm_states` (padded: `llm.pad_states`), mask (B, T) bool
        -> ProjectorOutput."""
        check_floating(states, "states")
        if states.dim() != 3 or states.shape[-1] != self.cfg.hidden_size:
            raise ValueError(f"states must be (B, T, {self.cfg.hidden_size}), got {tuple(states.shape)}")
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != states.shape[:2]:
            got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"mask must be a bool tensor of shape {tuple(states.shape[:2])}, got {got}")
        # one read-back for both checks; NaN in the padding counts too (it would reach the output as 0 · NaN)
        if can_read_back(states) and not bool(torch.isfinite(states).all() & mask.any(dim=1).all()):
            check_finite(states, "states", row="request")
            empty = (~mask.any(dim=1)).nonzero().flatten()
            raise ValueError(f"mask marks no token in {len(empty)} of {mask.shape[0]} requests (first: request "
                             f"{int(empty[0])}); every request needs at least one token")
        h = self.norm(states)
        scores = self.score(h).masked_fill(~mask[..., None], float("-inf"))       # (B, T, heads)
        weights = scores.softmax(dim=1)
        pooled = torch.einsum("bth,btd->bhd", weights, h).flatten(1)               # (B, heads * hidden)
        z = self.mlp(pooled)
        return ProjectorOutput(self.decide(z).squeeze(-1), F.normalize(self.to_cond(z), dim=-1))


def output_projector_loss(out: ProjectorOutput, wants: torch.Tensor, target: torch.Tensor, cond_weight: float = 4.0
                   ) -> torch.Tensor:
    """Binary cross-entropy on the decision + cond_weight × (1 − cosine) to the target, on drawing requests only."""
    loss = F.binary_cross_entropy_with_logits(out.logit, wants.float())
    draw = wants.bool()
    if draw.any():
        loss = loss + cond_weight * (1 - (out.cond[draw] * target[draw]).sum(-1)).mean()
    return loss


# ---- the modality generator: a tiny conditional flow-matching U-Net ------------------------------------------------


class TargetTable:
    """Every phrase a drawing request can target (`shapes.all_target_phrases`, 864 of them) and its unit-norm
    tiny-CLIP text embedding, computed once: where the output projector must land, and what it "meant"."""

    def __init__(self, clip: nn.Module, tokenizer):
        self.phrases = all_target_phrases()
        self.index = {p: i for i, p in enumerate(self.phrases)}
        self.embeddings = embed(encoders(clip, tokenizer, batch_size=512)[1], self.phrases)     # (864, E)

    def __call__(self, phrases: list[str]) -> torch.Tensor:
        """(N, E) embeddings of the given phrases (each must be one of `all_target_phrases()`)."""
        unknown = [p for p in phrases if p not in self.index]
        if unknown:
            raise ValueError(f"{len(unknown)} phrases are no request target (first: {unknown[0]!r})")
        return self.embeddings[[self.index[p] for p in phrases]]

    def nearest(self, cond: torch.Tensor) -> list[str]:
        """The phrase whose embedding is closest to each row of cond (N, E): what the projector "meant"."""
        check_embeddings(cond, "cond")
        if cond.shape[1] != self.embeddings.shape[1]:
            raise ValueError(f"cond must be (N, {self.embeddings.shape[1]}), got {tuple(cond.shape)}")
        return [self.phrases[i] for i in (cond @ self.embeddings.T).argmax(-1).tolist()]


def load_output_projector(path: str | Path = OUTPUT_PROJECTOR_PATH) -> OutputProjector:
    """The shipped output projector (eval mode; trainable if you want to fine-tune it)."""
    return load_module(path, OutputProjector, OutputProjectorConfig, "output projector",
                       train_command="python -m minimal.recipes.output_side projector")
