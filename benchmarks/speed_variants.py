"""Candidate speed-ups of our CLIP, measured side by side with HF and open_clip in one `speed.py` run.

    python benchmarks/speed_variants.py --config b32 --profile $OUT ...   (same flags as speed.py)

Each variant is the shipped model with one method swapped on its instances, so the gain of each idea is measured
on the same machine, weights and inputs before it is written into `minimal/transformer.py`. This file is the
record of what was tried (see `benchmarks/results/` for the numbers).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import speed  # noqa: E402

from minimal.clip import CLIP, CLIPConfig  # noqa: E402
from minimal.losses import LOGIT_SCALE_MAX  # noqa: E402
from minimal.transformer import MLP, Attention  # noqa: E402


def three_matmul_qkv(self, x, causal=False):
    """The textbook form: three projections, three matmuls."""
    B, T, D = x.shape
    q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return self.out_proj(out.transpose(1, 2).reshape(B, T, D))


def fused_qkv(self, x, causal=False):
    """One matmul against the three weights stacked (the parameters stay q_proj/k_proj/v_proj)."""
    B, T, D = x.shape
    w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
    b = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
    q, k, v = F.linear(x, w, b).view(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return self.out_proj(out.transpose(1, 2).reshape(B, T, D))


def textbook_mlp(self, x):
    return self.fc2(self.act(self.fc1(x)))


def folded_quick_gelu_mlp(self, x):
    """quick_gelu(h) = h·σ(1.702h) = silu(1.702h)/1.702: the constants go into the small weights, the wide
    activation becomes one fused silu kernel (forward and backward)."""
    if self.act_name != "quick_gelu":
        return self.fc2(self.act(self.fc1(x)))
    a = 1.702
    h = F.silu(F.linear(x, self.fc1.weight * a, self.fc1.bias * a))
    return F.linear(h, self.fc2.weight / a, self.fc2.bias)


def loss_nocheck(model):
    """Our loss without the input checks (they read a value back to the host: a sync and a graph break)."""
    def f(px, ids):
        img = F.normalize(model.encode_image(px), dim=-1)
        txt = F.normalize(model.encode_text(ids), dim=-1)
        logits = model.logit_scale.clamp(max=LOGIT_SCALE_MAX).exp() * img @ txt.T
        labels = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    return f


def last_block_rows(block, x, rows, causal: bool):
    """The final block evaluated only at one position per sequence (`rows`, (B,)): keys and values still come
    from every position, but queries, out_proj and the MLP run on B rows instead of B·T."""
    attn, B, T, D = block.self_attn, *x.shape
    h = block.layer_norm1(x)
    pick = torch.arange(B, device=x.device)
    xq, hq = x[pick, rows][:, None], h[pick, rows][:, None]                      # (B, 1, D)
    q, k, v = attn._split(attn.q_proj(hq)), attn._split(attn.k_proj(h)), attn._split(attn.v_proj(h))
    mask = (torch.arange(T, device=x.device)[None] <= rows[:, None])[:, None, None] if causal else None
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)                # (B, H, 1, d)
    xq = xq + attn.out_proj(out.transpose(1, 2).reshape(B, 1, D))
    return (xq + block.mlp(block.layer_norm2(xq)))[:, 0]                         # (B, D)


def pruned(hf):
    """fused QKV + folded quick_gelu + no checks + the last block of each tower only where the loss reads it."""
    model, _ = patched(hf, attn=fused_qkv, mlp=folded_quick_gelu_mlp, nocheck=True)

    def encode_image(px):
        v = model.visual
        x = v.pre_layernorm(v.embed(px))
        for blk in v.transformer.blocks[:-1]:
            x = blk(x)
        rows = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return model.visual_projection(v.post_layernorm(last_block_rows(v.transformer.blocks[-1], x, rows, False)))

    def encode_text(ids):
        t = model.text
        x = t.token_embedding(ids) + t.position_embedding[: ids.shape[1]]
        for blk in t.transformer.blocks[:-1]:
            x = blk(x, causal=True)
        rows = ids.to(torch.int).argmax(dim=-1)
        return model.text_projection(t.final_layer_norm(last_block_rows(t.transformer.blocks[-1], x, rows, True)))

    model.encode_image, model.encode_text = encode_image, encode_text
    return model, loss_nocheck


def patched(hf, attn=None, mlp=None, nocheck=False):
    model = CLIP.from_hf_state_dict(hf.state_dict(), CLIPConfig.from_hf(hf.config))
    for m in model.modules():
        if attn is not None and isinstance(m, Attention):
            m.forward = types.MethodType(attn, m)
        if mlp is not None and isinstance(m, MLP):
            m.forward = types.MethodType(mlp, m)
    if nocheck:
        model.text.check_ids = lambda ids: None
        model.visual.check_pixels = lambda px: None
    return model, (loss_nocheck if nocheck else speed.loss_ours)


def variants(hf):
    return {
        "ours_3mm": patched(hf, attn=three_matmul_qkv, mlp=textbook_mlp),
        "ours_qkv": patched(hf, attn=fused_qkv, mlp=textbook_mlp),
        "ours_mlp": patched(hf, attn=three_matmul_qkv, mlp=folded_quick_gelu_mlp),
        "ours_both": patched(hf, attn=fused_qkv, mlp=folded_quick_gelu_mlp),
        "ours_both_nocheck": patched(hf, attn=fused_qkv, mlp=folded_quick_gelu_mlp, nocheck=True),
        "ours_prune": pruned(hf),
    }


if __name__ == "__main__":
    speed.main(variants=variants)
