"""Reading the frozen LLM backbone's hidden states: what the output side sees of a request (chapter 09, book §14.3).

The output projector does not read the LLM's words; it reads the vectors the LLM computes for a request at one
decoder layer. `llm_states` runs the frozen LLM up to that layer and stops there (the layers above would be wasted
work), one chat turn per request::

    states = llm_states(model, tokenizer, ["draw a red star"], layer=18)   # [(T, 576)]: T tokens, 576 wide
    x, mask = pad_states(states)                                           # (1, T, 576), (1, T) for the projector
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from .llm import (
    chat_ids,
    check_fits,
    check_texts,
    decoder_layers,
    new_kv_cache,
    pad_after_shared_prefix,
    run_shared_prefix,
)
from .shared_runs import shared_result


class _Stop(Exception):
    """Raised by a forward hook once the layer we read has run: the layers above it would be wasted work."""


def llm_states(model: nn.Module, tokenizer, texts: list[str], layer: int, batch_size: int = 32,
               progress: bool = False, cache: dict | None = None, system: str | None = None) -> list[torch.Tensor]:
    """The frozen LLM's hidden states after decoder layer `layer` (1-based) for each text, read as a chat turn.

    Each text is wrapped in the chat template (`chat_ids`: system message `system`, user text, assistant prompt).
    Returns one float32 tensor (T_i, hidden) per text, T_i its token count. Layers above `layer` are not run (a
    hook stops the forward there); texts are batched by length, and the chat template's opening that every text
    shares is run once per batch.
    cache: a dict kept by the caller, {(layer, text): states}; texts already in it are not run again (the LLM is
    frozen, so its states for a text never change). Use one cache per system message.
    """
    texts = [] if isinstance(texts, list | tuple) and not texts else check_texts(texts, "texts")
    n_layers = len(decoder_layers(model))
    if not 1 <= layer <= n_layers:
        raise ValueError(f"layer must be in 1..{n_layers}, got {layer}")
    if cache is not None:
        todo = list(dict.fromkeys(t for t in texts if (layer, t) not in cache))
        if todo:
            cache.update(zip([(layer, t) for t in todo], llm_states(model, tokenizer, todo, layer, batch_size,
                                                                    progress, system=system), strict=True))
        return [cache[(layer, t)] for t in texts]
    ids = [chat_ids(tokenizer, t, system=system) for t in texts]
    for i, n in enumerate(map(len, ids)):
        check_fits(model, n, f"texts[{i}]")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return _run_to_layer(model, ids, layer, pad, batch_size, progress)


@shared_result          # in the course's test command only: the Korean chapter takes the English chapter's states
@torch.no_grad()
def _run_to_layer(model: nn.Module, ids: list[list[int]], layer: int, pad: int, batch_size: int, progress: bool
                  ) -> list[torch.Tensor]:
    """The hidden states after decoder layer `layer` for each row of token ids: [(T_i, hidden)], float32, CPU."""
    layers = decoder_layers(model)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    device = next(model.parameters()).device
    captured: dict[str, torch.Tensor] = {}

    def hook(module, args, output):
        captured["h"] = output[0] if isinstance(output, tuple) else output
        raise _Stop

    def run(**inputs) -> torch.Tensor:
        try:
            model(**inputs)
        except _Stop:
            pass
        return captured.pop("h").float().cpu()

    out: list[torch.Tensor] = [torch.empty(0)] * len(ids)
    handle = layers[layer - 1].register_forward_hook(hook)
    try:
        chunks = range(0, len(order), batch_size)
        for start in tqdm(chunks, desc=f"LLM states (layer {layer})") if progress else chunks:
            chunk = order[start:start + batch_size]
            # The chat template's opening (system message, "user" header) is the same in every row: it is run once,
            # for one row, and its keys/values are copied to the batch (`llm.greedy_generate` does the same).
            x, mask, P = pad_after_shared_prefix([ids[i] for i in chunk], pad)
            x, mask, head = x.to(device), mask.to(device), None
            positions, cache = (mask.cumsum(-1) - 1).clamp(min=0), new_kv_cache(model)
            if P:
                head = run_shared_prefix(run, cache, len(chunk), input_ids=x[:1, :P],
                                         position_ids=positions[:1, :P])[0]
            h = run(input_ids=x[:, P:], attention_mask=mask, position_ids=positions[:, P:], use_cache=bool(P), **cache)
            keep = mask[:, P:].cpu() == 1
            for j, i in enumerate(chunk):
                out[i] = h[j][keep[j]] if head is None else torch.cat([head, h[j][keep[j]]])
    finally:
        handle.remove()
    return out
