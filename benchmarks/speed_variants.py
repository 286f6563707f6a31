"""Candidate speed-ups of our CLIP, measured side by side with HF and open_clip in one `speed.py` run.

    python benchmarks/speed_variants.py --config b32 --profile $OUT ...   (same flags as speed.py)

Each variant is our model with one method swapped on its instances, so the gain of each idea is measured on the
same machine, weights and inputs. This file is the record of what was tried (numbers: `benchmarks/results/`):

Since the second round of 2026-12-02 "ours" makes q, k and v from one stacked (3D, D) parameter, `qkv_proj` (it was
the variant `ours_qkvp` until then):

* ours_prev_qkv    — the model before that: three q/k/v weights, concatenated at every step for one matmul.

From the first round of 2026-12-02 "ours" runs attention through the memory-efficient SDPA kernel on a GPU
(`transformer.attend`):

* ours_prev_attn   — the model before that: PyTorch's own pick of kernel (cuDNN's on an H100/H200).

Every variant that predates the stacked parameter is written for three projections and runs on the model converted
back to them (`three_projections`); it stays as it was measured.

From 2026-12-01 to then "ours" was the model with the dtype-keeping LayerNorm and the unbind(2) q/k/v layout;
measured against it:

* ours_prev        — the model before that (plain nn.LayerNorm, q/k/v split by permute(2, 0, 3, 1, 4).unbind(0));
* ours_prev_ln     — ours_prev + the dtype-keeping LayerNorm alone;
* ours_prev_layout — ours_prev + the unbind(2) layout alone;
* ours_qkvp        — ours + one fused `qkv` parameter (made once) instead of three stacked at run time (shipped since
                     2026-12-02; see ours_prev_qkv).

Earlier variants (the shipped model of their day was ours_prev or older):

* ours_before   — the model as it was before issue 8: q, k, v as three matmuls; quick_gelu as x·sigmoid(1.702x);
* ours_3mm      — the shipped model without the fused QKV matmul (isolates that change);
* ours_fold_mlp — quick_gelu with its constants folded into fc1/fc2's weights (one silu on the activations);
* ours_prune    — the shipped model, but each tower's last block only at the row the loss reads ([CLS] / eos);
* ours_nosync   — the shipped model without its eager input checks that read values back to the host: the
                  pixels' NaN/inf check (`check_finite` in `VisionTransformer.check_pixels`), `int(ids.min())` and
                  `int(ids.max())` in `TextTransformer.check_ids`, the features' (and logit_scale's) NaN/inf check
                  in `clip_loss`: four waits for the GPU per step (`minimal.weights.can_read_back` patched to say
                  no, as it does inside torch.compile and CUDA-graph capture);
* ours_deferred — the checks kept, without the waits: each check leaves a 0-d "bad" flag on the GPU (one
                  isfinite/aminmax reduction), and the flags are read back together once per 64 checks (16 steps);
                  the design proposed for minimal/ (see benchmarks/NOTES_speed.md);
* ours_qkv      — one fused `qkv` Linear (3D × D) made once from q/k/v, instead of concatenating the three weights
                  and biases in every forward (the fused matmul shipped then) — no per-step cat, no backward split
                  (the same change as ours_qkvp, shipped since 2026-12-02);
* ours_ln       — LayerNorm that hands back its input's dtype (as open_clip's `LayerNorm`): under bf16 autocast
                  the vision tower's residual stream stays bf16 (its input, the patch projection, is bf16), half
                  the bytes through every norm, residual add and cast; the text tower (fp32 embeddings) unchanged;
* ours_bf16     — ours_ln, and the text tower's embeddings cast to the autocast dtype: both streams in bf16;
* ours_buckets4 — `encode_text(ids, length_buckets=4)`: captions sorted by length, 4 groups each cut at its own
                  longest caption (eager only: host reads of the lengths, shapes that change with the data);
* ours_combo    — ours_qkv + ours_ln + ours_deferred together (what porting the paying ideas would give);
* ours_flash / ours_cudnn / ours_effic — the shipped model with `F.scaled_dot_product_attention` pinned to one
                  backend (flash-attention 2, cuDNN, memory-efficient) instead of PyTorch's own choice.
* ours_prefer_effic / ours_prefer_flash — the same choice made *inside* `Attention.forward` (as it would ship):
                  ``sdpa_kernel([EFFICIENT, FLASH, MATH] or [FLASH, EFFICIENT, MATH], set_priority=True)`` around the
                  one SDPA call, so the rest of the process keeps PyTorch's default (cuDNN on an H100/H200). Question
                  asked (2026-12-02): does a backend with less host work per call than cuDNN's pay in the host-bound
                  eager and compiled steps?

`--variants a,b` picks some of them (default: all but ours_before, ours_3mm and ours_prune, measured before).
"""

from __future__ import annotations

import sys
import types
from contextlib import contextmanager

import speed
import torch
import torch.nn.functional as F
from torch import nn

import minimal.clip
import minimal.losses
import minimal.vit
import minimal.weights
from minimal.clip import CLIP, CLIPConfig
from minimal.losses import clip_loss
from minimal.text import TextOutput
from minimal.transformer import MLP, Attention, attend


def heads(attn, t):
    """(B, T, D) -> (B, H, T, D/H)."""
    B, T, _ = t.shape
    return t.view(B, T, attn.heads, attn.head_dim).transpose(1, 2)


def three_projections(model: CLIP) -> CLIP:
    """The model as it was before 2026-12-02's stacked parameter: three Linears q_proj, k_proj, v_proj per layer
    (the rows of `qkv_proj`, same values) — the layout every older variant here was written for."""
    for m in model.modules():
        if isinstance(m, Attention):
            for name, w, b in zip("qkv", m.qkv_proj.weight.chunk(3), m.qkv_proj.bias.chunk(3), strict=True):
                layer = nn.Linear(m.width, m.width, device=w.device, dtype=w.dtype)
                with torch.no_grad():
                    layer.weight.copy_(w)
                    layer.bias.copy_(b)
                setattr(m, f"{name}_proj", layer)
            del m.qkv_proj
    return model


def textbook_attention(self, x, causal=False):
    """Before: three projections, three matmuls (and three casts of x under autocast)."""
    B, T, D = x.shape
    q, k, v = heads(self, self.q_proj(x)), heads(self, self.k_proj(x)), heads(self, self.v_proj(x))
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
    q, k, v = heads(attn, attn.q_proj(hq)), heads(attn, attn.k_proj(h)), heads(attn, attn.v_proj(h))
    mask = (torch.arange(T, device=x.device)[None] <= rows[:, None])[:, None, None] if causal else None
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)                # (B, H, 1, d)
    xq = xq + attn.out_proj(out.transpose(1, 2).reshape(B, 1, D))
    return (xq + block.mlp(block.layer_norm2(xq)))[:, 0]                         # (B, D)


def patched(hf, attn=None, mlp=None):
    """Our CLIP with the HF weights, `attn` / `mlp` replacing the forward of every Attention / MLP (an `attn` here
    is written for three projections: the model is converted back to them first)."""
    model = CLIP.from_hf_state_dict(hf.state_dict(), CLIPConfig.from_hf(hf.config))
    if attn is not None:
        three_projections(model)
    for m in model.modules():
        if attn is not None and isinstance(m, Attention):
            m.forward = types.MethodType(attn, m)
        if mlp is not None and isinstance(m, MLP):
            m.forward = types.MethodType(mlp, m)
    return model, speed.loss_ours


def pruned(hf):
    """The model of its day, but the last block of each tower only where the loss reads it ([CLS] / eos)."""
    model, loss = patched(hf, attn=three_weights_attention)

    def encode_image(px):
        v = model.visual
        x = v.pre_layernorm(v.embed(px))
        for blk in v.transformer.blocks[:-1]:
            x = blk(x)
        rows = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return model.visual_projection(v.post_layernorm(last_block_rows(v.transformer.blocks[-1], x, rows, False)))

    def encode_text(ids, length_buckets=None):   # (the signature of CLIP.encode_text; no buckets here)
        t = model.text
        x = t.token_embedding(ids) + t.position_embedding[: ids.shape[1]]
        for blk in t.transformer.blocks[:-1]:
            x = blk(x, causal=True)
        rows = ids.to(torch.int).argmax(dim=-1)   # argmax pooling, as the benchmark's config uses
        return model.text_projection(t.final_layer_norm(last_block_rows(t.transformer.blocks[-1], x, rows, True)))

    model.encode_image, model.encode_text = encode_image, encode_text
    return model, loss


# ---- the input checks: read back at once (shipped), never, or deferred -----------------------------------------

def _never(x):
    return False


@contextmanager
def no_read_back():
    """`can_read_back` says no everywhere (weights' `check_finite`, losses, clip), as inside torch.compile."""
    mods = (minimal.weights, minimal.losses, minimal.clip)
    saved = [m.can_read_back for m in mods]
    for m in mods:
        m.can_read_back = _never
    try:
        yield
    finally:
        for m, f in zip(mods, saved, strict=True):
            m.can_read_back = f


def no_sync(hf):
    """The shipped model, its host-reading checks off: no min/max of the ids, no NaN/inf read-backs."""
    model, _ = patched(hf)
    model.text.check_ids = lambda ids: None

    def loss_factory(m):
        def f(px, ids):
            if torch.compiler.is_compiling():
                return clip_loss(m.encode_image(px), m.encode_text(ids), m.logit_scale)
            with no_read_back():
                return clip_loss(m.encode_image(px), m.encode_text(ids), m.logit_scale)
        return f
    return model, loss_factory


class DeferredChecks:
    """Checks that never wait for the GPU: each `note(name, bad)` keeps a 0-d bool tensor (computed on the device,
    asynchronously); every `every` notes — or at `flush()`, e.g. where a training loop reads its loss anyway — all
    pending flags come back in one read, and the first bad one is a ValueError naming the input."""

    def __init__(self, every: int = 64):
        self.every, self.pending = every, []

    def note(self, name: str, bad: torch.Tensor) -> None:
        if self.pending and self.pending[0][1].device != bad.device:
            self.flush()   # flags of another device (the CPU check before the GPU run) are read first
        self.pending.append((name, bad))
        if len(self.pending) >= self.every:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        names, flags = zip(*self.pending, strict=True)
        self.pending = []
        for name, bad in zip(names, torch.stack(flags).tolist(), strict=True):
            if bad:
                raise ValueError(f"{name} held NaN/inf or out-of-range values in a recent step")


def eager(x: torch.Tensor) -> bool:
    """Not inside torch.compile, not inside a CUDA-graph capture (where the shipped checks skip themselves)."""
    return not torch.compiler.is_compiling() and not (x.is_cuda and torch.cuda.is_current_stream_capturing())


def deferred(model: CLIP, loss_factory=None):
    """`model` with its input checks deferred (eager; skipped under compile / capture as the shipped ones)."""
    checks = DeferredChecks()
    vocab = model.cfg.text.vocab_size

    def check_finite(x, name, row="row"):
        if x.is_floating_point() and eager(x):
            checks.note(name, ~torch.isfinite(x).all())

    def check_ids(ids):
        if eager(ids):
            lo, hi = torch.aminmax(ids)
            checks.note("input_ids", (lo < 0) | (hi >= vocab))

    model.text.check_ids = check_ids
    inner_factory = loss_factory or speed.loss_ours

    def factory(m):
        inner = inner_factory(m)

        def f(px, ids):
            if torch.compiler.is_compiling():
                return inner(px, ids)
            saved = minimal.vit.check_finite
            minimal.vit.check_finite = check_finite
            try:
                with no_read_back():
                    img, txt = m.encode_image(px), m.encode_text(ids)
                    check_finite(torch.cat([img.flatten(), txt.flatten(), m.logit_scale.reshape(1).to(img.dtype)]),
                                 "features or logit_scale")
                    return speed.OURS_LOSS(img, txt, m.logit_scale)
            finally:
                minimal.vit.check_finite = saved
        return f
    model._deferred_checks = checks
    return model, factory


# ---- the q/k/v layout; norms that keep the dtype; bf16 text stream ---------------------------------------------

def permute_attention(self, x, causal=False):
    """Before 2026-12-01: the stacked q/k/v split as ``permute(2, 0, 3, 1, 4).unbind(0)`` — same forward, but the
    backward stacks dq, dk, dv as (3, B, H, T, d) and then copies that into the Linear's (B, T, 3D) layout."""
    B, T, D = x.shape
    w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
    b = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
    q, k, v = F.linear(x, w, b).view(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return self.out_proj(out.transpose(1, 2).reshape(B, T, D))


def plain_norms(model: CLIP) -> CLIP:
    """Before 2026-12-01: every norm a plain `nn.LayerNorm` (float32 out under autocast)."""
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            m.forward = types.MethodType(nn.LayerNorm.forward, m)
    return model


def layer_norm_keep_dtype(self, x):
    """LayerNorm computed as autocast says (float32), handed back in the input's dtype (open_clip's LayerNorm)."""
    return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


def norms_keep_dtype(model: CLIP) -> CLIP:
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            m.forward = types.MethodType(layer_norm_keep_dtype, m)
    return model


def bf16_text_forward(self, input_ids, return_hidden=False):
    """TextTransformer.forward with the embeddings cast to the autocast dtype (the stream stays bf16)."""
    self.check_ids(input_ids)
    input_ids = input_ids.long()
    x = self.token_embedding(input_ids) + self.position_embedding[: input_ids.shape[1]]
    if torch.is_autocast_enabled(x.device.type):
        x = x.to(torch.get_autocast_dtype(x.device.type))
    x = self.final_layer_norm(self.transformer(x, causal=True))
    pos = self.eos_positions(input_ids)
    return TextOutput(x, x[torch.arange(x.shape[0], device=x.device), pos], None, pos)


def bf16_streams(model: CLIP) -> CLIP:
    norms_keep_dtype(model)
    model.text.forward = types.MethodType(bf16_text_forward, model.text)
    return model


def buckets(hf, n=4):
    model, _ = patched(hf)
    return model, lambda m: lambda px, ids: speed.OURS_LOSS(m.encode_image(px), m.encode_text(ids, length_buckets=n),
                                                             m.logit_scale)


def combo(hf, *changes):
    model, _ = patched(hf)
    for change in changes:
        change(model)
    return deferred(model)


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


def three_weights_qkv(self, x):
    """q, k, v (B, H, T, D/H) as `Attention.forward` made them until 2026-12-02's stacked parameter: the three
    weights (and biases) concatenated at every step, one matmul."""
    B, T, D = x.shape
    w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
    b = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
    return (t.transpose(1, 2) for t in F.linear(x, w, b).view(B, T, 3, self.heads, self.head_dim).unbind(2))


def preferred_attention(order):
    """Attention.forward with SDPA's backends tried in `order` (the shipped code plus one `with`)."""
    from torch.nn.attention import sdpa_kernel

    def forward(self, x, causal=False):
        q, k, v = three_weights_qkv(self, x)
        with sdpa_kernel(order, set_priority=True):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(x.shape))
    return forward


def three_weights_attention(self, x, causal=False):
    """Before 2026-12-02's stacked parameter (second round): the shipped forward of the first round."""
    q, k, v = three_weights_qkv(self, x)
    return self.out_proj(attend(q, k, v, causal).transpose(1, 2).reshape(x.shape))


def default_backend_attention(self, x, causal=False):
    """Before 2026-12-02: the same forward, with SDPA's kernel left to PyTorch (cuDNN's on an H100/H200)."""
    q, k, v = three_weights_qkv(self, x)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return self.out_proj(out.transpose(1, 2).reshape(x.shape))


def variants(hf, only=None):
    from torch.nn.attention import SDPBackend

    makers = {
        "ours_prev_qkv": lambda: patched(hf, attn=three_weights_attention),
        "ours_prev_attn": lambda: patched(hf, attn=default_backend_attention),
        "ours_prev": lambda: (plain_norms(patched(hf, attn=permute_attention)[0]), speed.loss_ours),
        "ours_prev_ln": lambda: patched(hf, attn=permute_attention),
        "ours_prev_layout": lambda: (plain_norms(patched(hf)[0]), speed.loss_ours),
        "ours_before": lambda: patched(hf, attn=textbook_attention, mlp=textbook_mlp),
        "ours_3mm": lambda: patched(hf, attn=textbook_attention),
        "ours_prune": lambda: pruned(hf),
        "ours_nosync": lambda: no_sync(hf),
        "ours_deferred": lambda: deferred(patched(hf)[0]),
        "ours_ln": lambda: (norms_keep_dtype(patched(hf)[0]), speed.loss_ours),
        "ours_bf16": lambda: (bf16_streams(patched(hf)[0]), speed.loss_ours),
        "ours_fold_mlp": lambda: patched(hf, mlp=folded_quick_gelu_mlp),
        "ours_buckets4": lambda: buckets(hf, 4),
        "ours_flash": lambda: pinned_attention(hf, SDPBackend.FLASH_ATTENTION),
        "ours_cudnn": lambda: pinned_attention(hf, SDPBackend.CUDNN_ATTENTION),
        "ours_effic": lambda: pinned_attention(hf, SDPBackend.EFFICIENT_ATTENTION),
        "ours_prefer_effic": lambda: patched(hf, attn=preferred_attention(
            [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH])),
        "ours_prefer_flash": lambda: patched(hf, attn=preferred_attention(
            [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])),
        "ours_combo": lambda: combo(hf, norms_keep_dtype),       # (its fused qkv parameter is now shipped)
        "ours_combo_bf16": lambda: combo(hf, bf16_streams),
    }
    old = {"ours_before", "ours_3mm", "ours_prune"}
    return {name: make() for name, make in makers.items() if (name in only if only else name not in old)}


if __name__ == "__main__":
    argv = sys.argv[1:]
    only = None
    if "--variants" in argv:  # our own flag; everything else is speed.py's
        i = argv.index("--variants")
        only = set(argv[i + 1].split(","))
        argv = argv[:i] + argv[i + 2:]
    speed.main(argv, variants=lambda hf: variants(hf, only))
