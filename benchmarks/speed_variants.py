"""Candidate speed-ups of our CLIP, measured side by side with HF and open_clip in one `speed.py` run.

    python benchmarks/speed_variants.py --config b32 --profile $OUT ...   (same flags as speed.py)

Each variant is our model with one method swapped on its instances, so the gain of each idea is measured on the
same machine, weights and inputs. This file is the record of what was tried (numbers: `benchmarks/results/`):

* ours_before   — the model as it was before issue 8: q, k, v as three matmuls; quick_gelu as x·sigmoid(1.702x);
* ours_3mm      — the shipped model without the fused QKV matmul (isolates that change);
* ours_fold_mlp — quick_gelu with its constants folded into fc1/fc2's weights (one silu on the activations);
* ours_prune    — the shipped model, but each tower's last block only at the row the loss reads ([CLS] / eos);
* ours_nosync   — the shipped model without its eager input checks that read values back to the host
                  (`int(ids.min())`, `int(ids.max())` in `TextTransformer.check_ids`, `isfinite(...).all()` on both
                  feature batches in `clip_loss`): four waits for the GPU per step, in the middle of the forward;
* ours_flash / ours_cudnn / ours_effic — the shipped model with `F.scaled_dot_product_attention` pinned to one
                  backend (flash-attention 2, cuDNN, memory-efficient) instead of PyTorch's own choice.

`--variants a,b` picks some of them (default: all).
"""

from __future__ import annotations

import sys
import types

import speed
import torch
import torch.nn.functional as F

from minimal.clip import CLIP, CLIPConfig
from minimal.losses import clip_logits
from minimal.transformer import MLP, Attention


def textbook_attention(self, x, causal=False):
    """Before: three projections, three matmuls (and three casts of x under autocast)."""
    B, T, D = x.shape
    q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return self.out_proj(out.transpose(1, 2).reshape(B, T, D))


def textbook_mlp(self, x):
    """Before: quick_gelu written as x·sigmoid(1.702x) — three elementwise kernels forward, five backward."""
    h = self.fc1(x)
    return self.fc2(h * torch.sigmoid(1.702 * h) if self.act_name == "quick_gelu" else self.act(h))


def folded_quick_gelu_mlp(self, x):
    """Tried: quick_gelu(h) = silu(1.702h)/1.702 with both constants folded into the (small) weights, so the wide
    activation is a single silu. Fewer bytes moved on the GPU, but more small ops to launch."""
    if self.act_name != "quick_gelu":
        return self.fc2(self.act(self.fc1(x)))
    a = 1.702
    h = F.silu(F.linear(x, self.fc1.weight * a, self.fc1.bias * a))
    return F.linear(h, self.fc2.weight / a, self.fc2.bias)


def last_block_rows(block, x, rows, causal: bool):
    """The final block evaluated only at one position per sequence (`rows`, (B,)): keys and values still come
    from every position, but queries, out_proj and the MLP run on B rows instead of B·T."""
    attn, (B, T, D) = block.self_attn, x.shape
    h = block.layer_norm1(x)
    pick = torch.arange(B, device=x.device)
    xq, hq = x[pick, rows][:, None], h[pick, rows][:, None]                      # (B, 1, D)
    q, k, v = attn._split(attn.q_proj(hq)), attn._split(attn.k_proj(h)), attn._split(attn.v_proj(h))
    mask = (torch.arange(T, device=x.device)[None] <= rows[:, None])[:, None, None] if causal else None
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)                # (B, H, 1, d)
    xq = xq + attn.out_proj(out.transpose(1, 2).reshape(B, 1, D))
    return (xq + block.mlp(block.layer_norm2(xq)))[:, 0]                         # (B, D)


def patched(hf, attn=None, mlp=None):
    """Our CLIP with the HF weights, `attn` / `mlp` replacing the forward of every Attention / MLP."""
    model = CLIP.from_hf_state_dict(hf.state_dict(), CLIPConfig.from_hf(hf.config))
    for m in model.modules():
        if attn is not None and isinstance(m, Attention):
            m.forward = types.MethodType(attn, m)
        if mlp is not None and isinstance(m, MLP):
            m.forward = types.MethodType(mlp, m)
    return model, speed.loss_ours


def pruned(hf):
    """The shipped model, but the last block of each tower only where the loss reads it ([CLS] / eos)."""
    model, loss = patched(hf)

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
        rows = ids.to(torch.int).argmax(dim=-1)   # argmax pooling, as the benchmark's config uses
        return model.text_projection(t.final_layer_norm(last_block_rows(t.transformer.blocks[-1], x, rows, True)))

    model.encode_image, model.encode_text = encode_image, encode_text
    return model, loss


def no_sync(hf):
    """The shipped model, its host-reading checks off: no `check_ids`, and the loss without `_check_features`."""
    model, _ = patched(hf)
    model.text.check_ids = lambda ids: None

    def loss_factory(m):
        def f(px, ids):
            logits = clip_logits(m.encode_image(px), m.encode_text(ids), m.logit_scale)
            labels = torch.arange(logits.shape[0], device=logits.device)
            return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        return f
    return model, loss_factory


def pinned_attention(hf, backend):
    """The shipped model with every attention call restricted to one SDPA backend."""
    from torch.nn.attention import sdpa_kernel

    model, loss = patched(hf)

    def loss_factory(m):
        inner = loss(m)

        def f(px, ids):
            with sdpa_kernel(backend):
                return inner(px, ids)
        return f
    return model, loss_factory


def variants(hf, only=None):
    from torch.nn.attention import SDPBackend

    makers = {
        "ours_before": lambda: patched(hf, attn=textbook_attention, mlp=textbook_mlp),
        "ours_3mm": lambda: patched(hf, attn=textbook_attention),
        "ours_fold_mlp": lambda: patched(hf, mlp=folded_quick_gelu_mlp),
        "ours_prune": lambda: pruned(hf),
        "ours_nosync": lambda: no_sync(hf),
        "ours_flash": lambda: pinned_attention(hf, SDPBackend.FLASH_ATTENTION),
        "ours_cudnn": lambda: pinned_attention(hf, SDPBackend.CUDNN_ATTENTION),
        "ours_effic": lambda: pinned_attention(hf, SDPBackend.EFFICIENT_ATTENTION),
    }
    return {name: make() for name, make in makers.items() if only is None or name in only}


if __name__ == "__main__":
    argv = sys.argv[1:]
    only = None
    if "--variants" in argv:  # our own flag; everything else is speed.py's
        i = argv.index("--variants")
        only = set(argv[i + 1].split(","))
        argv = argv[:i] + argv[i + 2:]
    speed.main(argv, variants=lambda hf: variants(hf, only))
