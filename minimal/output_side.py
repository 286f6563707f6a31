"""The output side of a multimodal LLM, assembled (chapter 09, book §14.1.1, §14.3): a request goes through the
frozen LLM backbone, the trained output projector decides text or image, and the frozen modality generator draws.

    side = OutputSide.load()                           # frozen LLM + shipped projector + shipped generator
    reply = side("왼쪽에 작은 파란 별을 그려 줘")          # Reply(wants_image=True, image=(3,32,32), ...)
    reply = side("what is the capital of France?")     # Reply(wants_image=False, text="Paris ...")

The components live in their own files: `minimal.llm` (the backbone), `minimal.hidden_states` (`llm_states`,
which reads it), `minimal.output_projector`, `minimal.modality_generator`. How the shipped ones were trained and how
the whole is evaluated: `minimal.recipes.output_side`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .accounting import freeze
from .hidden_states import llm_states
from .llm import answer, chat_ids, check_fits, check_text, check_texts, load_llm, pad_states
from .modality_generator import GENERATOR_PATH, GUIDANCE, SAMPLE_STEPS, ModalityGenerator, load_modality_generator
from .output_projector import OUTPUT_PROJECTOR_PATH, OutputProjector, ProjectorOutput, load_output_projector
from .weights import check_int, check_real

SYSTEM = "Answer briefly."   # a short system message: fewer tokens per request than SmolLM2's default one


@dataclass
class Reply:
    """What the system answers: an image (3, H, W) in [0, 1] with the `cond` it was drawn from, or text."""

    request: str
    wants_image: bool
    p_image: float
    text: str | None = None
    image: torch.Tensor | None = None
    cond: torch.Tensor | None = None


class OutputSide(nn.Module):
    """Frozen LLM + trained output projector + frozen modality generator. Call it with a request (or a list).

    steps: the generator's Euler steps (a positive int). guidance: its classifier-free guidance weight (a finite
    number ≥ 0; 1 = plain conditional).
    """

    def __init__(self, llm: Any, tokenizer: Any, projector: OutputProjector, generator: ModalityGenerator,
                 steps: int = SAMPLE_STEPS, guidance: float = GUIDANCE):
        super().__init__()
        self.llm, self.tokenizer = freeze(llm), tokenizer
        self.projector, self.generator = projector.eval(), freeze(generator)
        self.steps, self.guidance = check_int(steps, "steps"), check_real(guidance, "guidance", low=0)
        self.states_cache: dict[tuple[int, str], torch.Tensor] = {}   # the LLM is frozen: its states never change

    @classmethod
    def load(cls, projector: str | Path = OUTPUT_PROJECTOR_PATH, generator: str | Path = GENERATOR_PATH,
             verbose: bool = True, **kwargs) -> OutputSide:
        """The course's frozen LLM (`minimal.llm.load_llm`; verbose: print its one-line summary) with the shipped
        projector and generator."""
        llm, tokenizer = load_llm(verbose=verbose)
        return cls(llm, tokenizer, load_output_projector(projector), load_modality_generator(generator), **kwargs)

    def states(self, texts: list[str]) -> list[torch.Tensor]:
        """The frozen LLM's states at the projector's layer for each request (T_i, hidden), cached per text."""
        return llm_states(self.llm, self.tokenizer, texts, self.projector.cfg.layer, cache=self.states_cache,
                          system=SYSTEM)

    @torch.no_grad()
    def decide(self, texts: list[str]) -> ProjectorOutput:
        """Run the frozen LLM (up to the projector's layer) and the projector on a batch of requests."""
        states, mask = pad_states(self.states(texts))
        return self.projector(states, mask)

    @torch.no_grad()
    def forward(self, requests: str | list[str], seed: int = 0, max_new_tokens: int = 32) -> Reply | list[Reply]:
        """Answer requests: drawings for those the projector judges to be drawing requests, text for the others.

        requests: a str or a non-empty list of them (none empty). A request whose prompt would not fit the LLM's
        context window with `max_new_tokens` (a positive int) more is refused before any work; what a user types
        is read as plain text (`minimal.llm.chat_ids`), so typed control tokens are only text.
        """
        texts = [check_text(requests, "requests")] if isinstance(requests, str) else check_texts(requests, "requests")
        check_int(max_new_tokens, "max_new_tokens")
        for i, t in enumerate(texts):
            check_fits(self.llm, len(chat_ids(self.tokenizer, t, system=SYSTEM)), f"requests[{i}]", max_new_tokens)
        out = self.decide(texts)
        replies = [Reply(t, bool(w), float(p)) for t, w, p in zip(texts, out.wants_image, out.logit.sigmoid(),
                                                                   strict=True)]
        draw = [i for i, r in enumerate(replies) if r.wants_image]
        if draw:
            images = self.generator.sample(out.cond[draw], self.steps, self.guidance,
                                           torch.Generator().manual_seed(seed))
            for k, i in enumerate(draw):
                replies[i].image, replies[i].cond = images[k], out.cond[i]
        for r in replies:
            if not r.wants_image:
                r.text = answer(self.llm, self.tokenizer, r.request, max_new_tokens=max_new_tokens, system=SYSTEM)
        return replies[0] if isinstance(requests, str) else replies
