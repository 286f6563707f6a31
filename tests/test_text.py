"""The text tower: equal to HF's CLIPTextModel on random tiny configs (both pooling rules); bad inputs."""

import pytest
import torch

from minimal.text import TextConfig, TextTransformer, convert_hf_state_dict

transformers = pytest.importorskip("transformers")

HF_CONFIGS = [
    # a real eos id (first occurrence pooled), quick_gelu
    dict(vocab_size=50, max_position_embeddings=12, hidden_size=32, num_attention_heads=4, num_hidden_layers=2,
         intermediate_size=64, hidden_act="quick_gelu", eos_token_id=49, pad_token_id=49, bos_token_id=48),
    # HF's legacy eos_token_id == 2: pooled at the largest id (argmax rule)
    dict(vocab_size=99, max_position_embeddings=16, hidden_size=48, num_attention_heads=3, num_hidden_layers=3,
         intermediate_size=80, hidden_act="gelu", eos_token_id=2, pad_token_id=1, bos_token_id=0),
    # eos in the middle of the vocabulary, gelu, other eps
    dict(vocab_size=300, max_position_embeddings=20, hidden_size=64, num_attention_heads=8, num_hidden_layers=1,
         intermediate_size=96, hidden_act="gelu", eos_token_id=7, pad_token_id=0, bos_token_id=5,
         layer_norm_eps=1e-6),
    # our own tokenizer's layout: pad 0, bos 2, eos 3
    dict(vocab_size=120, max_position_embeddings=8, hidden_size=40, num_attention_heads=5, num_hidden_layers=4,
         intermediate_size=40, hidden_act="quick_gelu", eos_token_id=3, pad_token_id=0, bos_token_id=2),
]


def _hf_text(kwargs, seed):
    torch.manual_seed(seed)
    model = transformers.CLIPTextModel(transformers.CLIPTextConfig(**kwargs)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _random_ids(c, B, seed):
    """Captions of random lengths: bos, words, eos, then padding. Words avoid the special ids."""
    g = torch.Generator().manual_seed(seed)
    T, V, eos, pad, bos = (c["max_position_embeddings"], c["vocab_size"], c["eos_token_id"], c["pad_token_id"],
                           c["bos_token_id"])
    ids = torch.full((B, T), pad, dtype=torch.long)
    for b in range(B):
        n = int(torch.randint(1, T - 1, (1,), generator=g))
        words = torch.randint(0, V, (n,), generator=g)
        words[(words == eos) | (words == bos) | (words == pad)] = 10
        row = torch.cat([torch.tensor([bos]), words, torch.tensor([eos])])
        if eos == 2:  # legacy rule: end-of-text is the largest id of the row
            row[-1] = V - 1
            row[:-1] = row[:-1].clamp(max=V - 2)
        ids[b, : len(row)] = row
    return ids


@pytest.mark.parametrize("i", range(len(HF_CONFIGS)))
def test_equals_hf_clip_text(i):
    c = HF_CONFIGS[i]
    hf = _hf_text(c, seed=i)
    ours = TextTransformer.from_hf(hf).eval()
    assert ours.cfg.pool == ("argmax" if c["eos_token_id"] == 2 else "eos_id")
    ids = _random_ids(c, B=4, seed=10 + i)
    with torch.no_grad():
        ref = hf(input_ids=ids, output_hidden_states=True)
        out = ours(ids, return_hidden=True)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooled, ref.pooler_output, atol=1e-5, rtol=1e-5)
    assert len(out.hidden_states) == len(ref.hidden_states) == c["num_hidden_layers"] + 1
    for a, b in zip(out.hidden_states, ref.hidden_states, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # shorter sequences than the context work too (HF slices its positions the same way)
    with torch.no_grad():
        short = ids[:, : c["max_position_embeddings"] // 2].clone()
        short[:, -1] = c["eos_token_id"] if c["eos_token_id"] != 2 else c["vocab_size"] - 1
        torch.testing.assert_close(ours(short).pooled, hf(input_ids=short).pooler_output, atol=1e-5, rtol=1e-5)


def test_pools_first_eos_and_is_causal():
    """Padding after the first eos (even with pad == eos) cannot change the pooled output."""
    cfg = TextConfig(vocab_size=30, context_length=10, width=32, heads=4, layers=2, mlp_hidden=64, eos_token_id=3)
    model = TextTransformer(cfg).eval()
    a = torch.tensor([[2, 11, 12, 3, 0, 0, 0, 0, 0, 0]])
    b = torch.tensor([[2, 11, 12, 3, 3, 3, 17, 25, 9, 3]])
    out_a, out_b = model(a), model(b)
    assert out_a.eos_positions.tolist() == [3]
    torch.testing.assert_close(out_a.pooled, out_b.pooled)
    torch.testing.assert_close(out_a.last_hidden_state[:, :4], out_b.last_hidden_state[:, :4])
    maps = model.attention_maps(b)
    assert maps.shape == (2, 1, 4, 10, 10)
    assert float(maps.triu(diagonal=1).abs().max()) == 0.0


def test_hf_mapping_is_strict():
    hf = _hf_text(HF_CONFIGS[0], seed=0)
    sd = {"text_model." + k: v for k, v in hf.state_dict().items()}
    sd["text_model.embeddings.position_ids"] = torch.arange(12)[None]
    TextTransformer.from_hf_state_dict(sd, hf.config)  # prefix + old position_ids buffer are fine
    sd.pop("text_model.final_layer_norm.weight")
    sd["text_model.text_projection.weight"] = torch.zeros(8, 32)
    with pytest.raises(ValueError) as e:
        TextTransformer.from_hf_state_dict(sd, TextConfig.from_hf(hf.config))
    assert "missing (1): final_layer_norm.weight" in str(e.value)
    assert "unexpected (1): text_projection.weight" in str(e.value)
    with pytest.raises(ValueError, match=r"token_embedding.weight: given \(50, 32\) vs"):
        TextTransformer.from_hf_state_dict(hf.state_dict(), TextConfig(
            vocab_size=51, context_length=12, width=32, heads=4, layers=2, mlp_hidden=64, eos_token_id=49))
    assert set(convert_hf_state_dict({"x": torch.zeros(1)})) == {"x"}


def test_bad_ids():
    cfg = TextConfig(vocab_size=30, context_length=6, width=16, heads=2, layers=1, mlp_hidden=16, eos_token_id=3)
    model = TextTransformer(cfg)
    with pytest.raises(ValueError, match="sequence length 7 is longer than the context length 6"):
        model(torch.full((1, 7), 3))
    with pytest.raises(ValueError, match="length 0"):
        model(torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"torch\.float32"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        model(torch.tensor([2, 5, 3]))
    with pytest.raises(ValueError, match="token id 30 is outside the vocabulary"):
        model(torch.tensor([[2, 30, 3]]))
    with pytest.raises(ValueError, match="token id -1"):
        model(torch.tensor([[2, -1, 3]]))
    with pytest.raises(ValueError, match=r"batch index \[1\] have no end-of-text token \(id 3\)"):
        model(torch.tensor([[2, 5, 3], [2, 5, 6]]))
    with pytest.raises(ValueError, match="list"):
        model([[2, 5, 3]])


def test_bad_configs():
    with pytest.raises(ValueError, match="eos_token_id=40 is outside"):
        TextConfig(vocab_size=30, eos_token_id=40)
    with pytest.raises(ValueError, match="pool"):
        TextConfig(vocab_size=30, pool="mean")
    with pytest.raises(ValueError, match="vocab_size must be a positive int, got 0"):
        TextConfig(vocab_size=0)
