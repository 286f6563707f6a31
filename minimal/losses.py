"""The contrastive (InfoNCE / CLIP) loss, and its distributed form.

A batch of B image–text pairs gives a B×B table of similarities. Entry (i, j) says how well image i matches
caption j; only the diagonal holds true pairs. CLIP reads each row as a B-way classification ("which caption is
mine?") and each column as another ("which image is mine?"), and averages the two cross-entropies:

    logits = exp(logit_scale) · normalise(images) @ normalise(texts)ᵀ          (B, B)
    loss   = ½ · [CE(logits, arange(B)) + CE(logitsᵀ, arange(B))]

`logit_scale` is the learnable log inverse temperature: it starts at ln(1/0.07) ≈ 2.66 and is clamped at
ln 100 ≈ 4.61 so the softmax can never become arbitrarily sharp (the CLIP paper's fix for training instability).

With several processes (DDP) every process holds only its own B_local pairs, yet each image should be contrasted
with *every* caption in the global batch: more negatives per step is what makes contrastive learning work.
`clip_loss_distributed` all-gathers the features of all processes. Its gather keeps the autograd graph: in the
backward pass each process receives the gradient that every other process's loss sent to its features (an
all-reduce of the gradients), so after DDP averages the parameter gradients they equal — exactly — the gradient of
the one-process loss on the concatenated batch. With `local_loss=True` a process computes only its own rows and
columns (B_local × B_global logits instead of B_global²): the same loss on average, far less memory.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .weights import can_read_back, check_finite

LOGIT_SCALE_INIT = math.log(1 / 0.07)  # ≈ 2.659: temperature 0.07, as in CLIP
LOGIT_SCALE_MAX = math.log(100.0)      # ≈ 4.605: the clamp (temperature never below 0.01)


def _check_features(image_embeds: torch.Tensor, text_embeds: torch.Tensor,
                    logit_scale: torch.Tensor | float | None = None) -> None:
    """Clear errors for the mistakes that otherwise give a silent wrong loss or a cryptic shape error."""
    for name, x in (("image_embeds", image_embeds), ("text_embeds", text_embeds)):
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a (batch, dim) tensor, got {got}")
        if x.shape[0] == 0:
            raise ValueError(f"{name} is an empty batch; the contrastive loss needs at least one pair")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a float tensor, got dtype {x.dtype}")
    if image_embeds.shape[0] != text_embeds.shape[0]:
        raise ValueError(f"image and text batch sizes differ ({image_embeds.shape[0]} images, "
                         f"{text_embeds.shape[0]} texts): the loss needs one caption per image")
    if image_embeds.shape[1] != text_embeds.shape[1]:
        raise ValueError(f"image and text embedding sizes differ ({image_embeds.shape[1]} vs "
                         f"{text_embeds.shape[1]}); both towers must project into the same space")
    scale = _scale_tensor(logit_scale, image_embeds.device) if logit_scale is not None else None
    # One read-back for all three (skipped inside torch.compile and CUDA graph capture); details only on failure.
    if can_read_back(image_embeds):
        ok = torch.isfinite(image_embeds).all() & torch.isfinite(text_embeds).all()
        if not bool(ok if scale is None else ok & torch.isfinite(scale).all()):
            check_finite(image_embeds, "image_embeds")
            check_finite(text_embeds, "text_embeds")
            check_finite(scale.reshape(()), "logit_scale")   # type: ignore[union-attr]


def _scale_tensor(logit_scale: torch.Tensor | float, device: torch.device) -> torch.Tensor:
    """`logit_scale` as a tensor on `device`: a real number or a one-element float tensor, else a ValueError."""
    if isinstance(logit_scale, torch.Tensor):
        if logit_scale.numel() != 1 or not logit_scale.is_floating_point():
            raise ValueError(f"logit_scale must be a scalar float tensor, got {logit_scale.dtype} "
                             f"{tuple(logit_scale.shape)}")
    elif isinstance(logit_scale, bool) or not isinstance(logit_scale, numbers.Real):
        raise ValueError(f"logit_scale must be a number or a scalar float tensor, got {logit_scale!r} "
                         f"({type(logit_scale).__name__})")
    return torch.as_tensor(logit_scale, device=device)


def clip_logits(image_embeds: torch.Tensor, text_embeds: torch.Tensor,
                logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Scaled cosine similarities.

    Args:
        image_embeds: (N, E) image features (any norm; normalised here).
        text_embeds: (M, E) text features.
        logit_scale: scalar log inverse temperature (clamped at ln 100).
    Returns:
        (N, M) logits_per_image = exp(clamp(logit_scale)) · cos(image_i, text_j).
    """
    scale = _scale_tensor(logit_scale, image_embeds.device).clamp(max=LOGIT_SCALE_MAX).exp()
    return scale * F.normalize(image_embeds, dim=-1) @ F.normalize(text_embeds, dim=-1).T


def clip_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor,
              logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE loss of CLIP (equals `transformers.CLIPModel(..., return_loss=True)`).

    Args:
        image_embeds: (B, E) image features of B pairs, un-normalised.
        text_embeds: (B, E) text features; row i is the caption of image i.
        logit_scale: scalar tensor (usually a Parameter), log of the inverse temperature; clamped at ln 100.
    Returns:
        scalar loss. A batch of one pair is allowed: with no negatives the loss is exactly 0 (and so is its
        gradient) — defined, but it teaches nothing.
    Raises:
        ValueError on mismatched batch or embedding sizes, empty batches, non-float features, and NaN/inf in the
        features (saying how many rows) or in logit_scale.
    """
    _check_features(image_embeds, text_embeds, logit_scale)
    logits = clip_logits(image_embeds, text_embeds, logit_scale)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


class _AllGather(torch.autograd.Function):
    """all_gather whose backward hands each process the summed gradient of its own slice.

    Forward: every process contributes x (B, E) and receives all W slices. Backward: the gradient w.r.t. the
    gathered tensor differs per process (each has its own loss), so we all-reduce (sum) it and keep our slice —
    the gradient that *all* the losses sent to our features.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        grad = torch.stack(grads)          # (W, B, E)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[dist.get_rank()]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(B, E) on each of W processes → (W·B, E), rank order, differentiable (see `_AllGather`).

    Every process must pass the same batch size (pad or drop the last batch otherwise).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return torch.cat(_AllGather.apply(x), dim=0)


def clip_loss_distributed(image_embeds: torch.Tensor, text_embeds: torch.Tensor,
                          logit_scale: torch.Tensor | float, local_loss: bool = False) -> torch.Tensor:
    """CLIP loss over the global batch of all DDP processes; `clip_loss` when not distributed.

    Args:
        image_embeds, text_embeds: (B_local, E) this process's pairs (same B_local on every process).
        logit_scale: scalar log inverse temperature (identical on every process, as DDP keeps it).
        local_loss: False → each process computes the full (W·B)² loss (the same number everywhere).
            True → each process computes only its own B_local rows of logits_per_image and of logits_per_text
            (B_local × W·B each): O(B) memory per process; this process's loss differs from the others', but their
            mean — and, after DDP's gradient averaging, every gradient — equals the global loss's.
    Returns:
        scalar loss. In both modes DDP's averaged gradients equal the one-process gradients on the concatenated
        batch (tested with 2 gloo processes).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return clip_loss(image_embeds, text_embeds, logit_scale)       # clip_loss checks its inputs
    _check_features(image_embeds, text_embeds, logit_scale)           # once, before the gather
    all_images = all_gather_with_grad(image_embeds)
    all_texts = all_gather_with_grad(text_embeds)
    if not local_loss:
        return clip_loss(all_images, all_texts, logit_scale)
    b = image_embeds.shape[0]
    labels = torch.arange(b, device=image_embeds.device) + dist.get_rank() * b
    per_image = clip_logits(image_embeds, all_texts, logit_scale)   # my images vs every caption  (B, W·B)
    per_text = clip_logits(text_embeds, all_images, logit_scale)    # my captions vs every image  (B, W·B)
    return (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels)) / 2
