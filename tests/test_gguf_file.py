"""minimal/gguf_file.py: our one-pass GGUF reader gives what transformers' GGUF loader gives, on a small llama
written here the way llama.cpp's converter writes one (q and k rows reordered, blocks of 4 and 8 bits), and it
recovers the original weights: exactly where they are stored as float32, within one quantisation step elsewhere.
(The course's real file is read by the same code in tests/test_llm.py.)"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
from transformers.convert_slow_tokenizer import bytes_to_unicode  # GPT-2's 256 byte characters
from transformers.utils import logging as hf_logging

from minimal import gguf_file

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "i n", "Ġ a", "h e", "Ġt he", "r e"]
TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
            "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# how each weight is stored in the file: q and k as float32, so that undoing llama.cpp's row order is checked exactly
STORAGE = {"attn_q": "F32", "attn_k": "F32", "attn_v": "Q4_0", "attn_output": "F16", "ffn_gate": "Q4_1",
           "ffn_up": "Q4_1", "ffn_down": "Q8_0"}
HF_PART = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
           "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
           "ffn_down": "mlp.down_proj"}


def _llamacpp_order(w: np.ndarray, heads: int) -> np.ndarray:
    """The row order llama.cpp's converter gives q and k (each head's two halves interleaved)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _stored(writer: gguf.GGUFWriter, name: str, w: np.ndarray, kind: str) -> None:
    qtype = gguf.GGMLQuantizationType[kind]
    if kind in ("F32", "F16"):
        writer.add_tensor(name, w.astype(np.float32 if kind == "F32" else np.float16))
    else:
        writer.add_tensor(name, gguf.quants.quantize(w, qtype), raw_dtype=qtype)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple:
    """(file, original float model, vocabulary): a 2-layer llama with grouped keys/values, written to GGUF."""
    tokens = SPECIAL + list(bytes_to_unicode().values()) + [m.replace(" ", "") for m in MERGES]
    cfg = LlamaConfig(vocab_size=len(tokens), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    for norm in (p for n, p in model.named_parameters() if "norm" in n):
        torch.nn.init.uniform_(norm.data, 0.5, 1.5)      # not all ones, so a misplaced norm would show
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    for add, value in ((writer.add_block_count, 2), (writer.add_context_length, 128),
                       (writer.add_embedding_length, 64), (writer.add_feed_forward_length, 96),
                       (writer.add_head_count, 4), (writer.add_head_count_kv, 2), (writer.add_rope_freq_base, 1e4),
                       (writer.add_layer_norm_rms_eps, 1e-5), (writer.add_vocab_size, len(tokens)),
                       (writer.add_tokenizer_model, "gpt2"), (writer.add_token_list, tokens),
                       (writer.add_token_types, [3] * len(SPECIAL) + [1] * (len(tokens) - len(SPECIAL))),
                       (writer.add_token_merges, MERGES), (writer.add_bos_token_id, 1), (writer.add_eos_token_id, 2),
                       (writer.add_pad_token_id, 2), (writer.add_unk_token_id, 0), (writer.add_add_bos_token, False),
                       (writer.add_chat_template, TEMPLATE)):
        add(value)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    _stored(writer, "token_embd.weight", sd["model.embed_tokens.weight"], "Q8_0")
    _stored(writer, "output_norm.weight", sd["model.norm.weight"], "F32")
    for i in range(2):
        layer = f"model.layers.{i}."
        _stored(writer, f"blk.{i}.attn_norm.weight", sd[layer + "input_layernorm.weight"], "F32")
        _stored(writer, f"blk.{i}.ffn_norm.weight", sd[layer + "post_attention_layernorm.weight"], "F32")
        for part, kind in STORAGE.items():
            w = sd[f"{layer}{HF_PART[part]}.weight"]
            w = _llamacpp_order(w, 4 if part == "attn_q" else 2) if part in ("attn_q", "attn_k") else w
            _stored(writer, f"blk.{i}.{part}.weight", w, kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, model, tokens


def test_equals_transformers_gguf_loader(tiny):
    path, _, _ = tiny
    ours, our_tok = gguf_file.llama_from_gguf(path)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        theirs = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
        their_tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    finally:
        hf_logging.set_verbosity(verbosity)
    theirs_sd = theirs.state_dict()
    assert ours.state_dict().keys() == theirs_sd.keys()
    assert all(torch.equal(v, theirs_sd[k]) for k, v in ours.state_dict().items())
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "vocab_size",
                "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(ours.config, key) == getattr(theirs.config, key), key
    text = our_tok.apply_chat_template([{"role": "user", "content": "in the hat\n<|im_end|> ü 7"}],
                                       tokenize=False, add_generation_prompt=True)
    assert text == their_tok.apply_chat_template([{"role": "user", "content": "in the hat\n<|im_end|> ü 7"}],
                                                 tokenize=False, add_generation_prompt=True)
    # the same tokens and the same text back; not the same JSON: transformers' conversion has changed between
    # versions (5.17 adds a byte-fallback decoder chain that gives the same results), ours does not move
    for sample in (text, "the hat 12345", "  in\n\n the", "안녕 😀", "<|im_start|>the<|endoftext|>"):
        ids = our_tok(sample).input_ids
        assert ids == their_tok(sample).input_ids, sample
        assert our_tok.decode(ids) == their_tok.decode(ids), sample
    assert (our_tok.bos_token, our_tok.eos_token, our_tok.pad_token, our_tok.unk_token) == \
           (their_tok.bos_token, their_tok.eos_token, their_tok.pad_token, their_tok.unk_token)
    ids = torch.tensor([our_tok(text).input_ids])
    with torch.no_grad():
        assert torch.equal(ours(ids).logits, theirs(ids).logits)


def test_recovers_the_original_weights(tiny):
    path, original, tokens = tiny
    ours, tokenizer = gguf_file.llama_from_gguf(path)
    got, want = ours.state_dict(), original.state_dict()
    for i in range(2):
        for part, kind in STORAGE.items():
            key = f"model.layers.{i}.{HF_PART[part]}.weight"
            w = want[key]
            # one step of the block's grid: 4 bits span the block's range, 8 bits its largest magnitude
            step = {"F32": 0, "F16": 1e-3, "Q8_0": w.abs().max() / 127, "Q4_0": w.abs().max() / 7,
                    "Q4_1": (w.max() - w.min()) / 15}[kind]
            assert (got[key] - w).abs().max() <= step, (key, kind)
    assert torch.equal(got["model.norm.weight"], want["model.norm.weight"])
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    assert tokenizer.convert_tokens_to_ids("Ġthe") == tokens.index("Ġthe")
    assert tokenizer("<|im_start|>").input_ids == [1]


def test_bad_files_are_named(tmp_path):
    not_gguf = tmp_path / "model.safetensors"
    not_gguf.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a GGUF file"):
        gguf_file.read_gguf(not_gguf)


def test_an_unknown_tensor_name_is_named(tiny):
    with pytest.raises(KeyError, match="no tensor named 'blk.9.attn_q.weight'"):
        gguf_file.read_gguf(tiny[0], names=["blk.9.attn_q.weight"])


@pytest.mark.parametrize("names", ["token_embd.weight", [3]])
def test_names_must_be_a_list_of_names(tiny, names):
    with pytest.raises(TypeError, match="names must be"):
        gguf_file.read_gguf(tiny[0], names=names)


@pytest.mark.parametrize("dtype", ["float32", torch.int8])
def test_dtype_must_be_a_float_dtype(tiny, dtype):
    with pytest.raises(TypeError, match="dtype must be"):
        gguf_file.llama_from_gguf(tiny[0], dtype=dtype)
