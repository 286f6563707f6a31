"""Text→image and image→text retrieval with a trained CLIP (chapter 06, book §14.2.3).

Retrieval (검색) uses the zero-shot similarity in both directions: text→image ("image retrieval": for each
caption, is its image among the top K?) and image→text ("text retrieval": for each image, is *any* of its captions
among the top K?). Recall@K follows CLIP_benchmark's definition; ties between a positive and a negative score are
counted against the model, so a model that scores everything the same gets no credit.

    images = zeroshot.embed(encode_image, pixels); texts = zeroshot.embed(encode_text, captions)
    retrieval_metrics(images, texts, ks=(1, 5))      # {"t2i_r1": ..., "i2t_r1": ..., ...}
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence

import torch
import torch.nn.functional as F

from .weights import check_finite, check_int
from .zeroshot import check_widths


def similarity(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """Cosine similarities (Q, G) between query embeddings (Q, E) and gallery embeddings (G, E)."""
    check_widths(queries, gallery, "query embeddings", "gallery embeddings")
    return F.normalize(queries.float(), dim=-1) @ F.normalize(gallery.float(), dim=-1).T


def search(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-k gallery items per query: (scores (Q, k), indices (Q, k)), best first."""
    scores = similarity(queries, gallery)
    _check_k(k, scores.shape[1], "gallery items")
    return scores.topk(k, dim=1)


def _check_k(k: int, n: int, what: str) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"K must be a positive int, got {k!r}")
    if k > n:
        raise ValueError(f"K={k} is larger than the gallery ({n} {what}): Recall@{k} would be meaningless")


def hits_at_k(scores: torch.Tensor, positives: torch.Tensor, k: int, chunk: int = 4096) -> torch.Tensor:
    """(Q,) bool: does query q have at least one positive among its top-k gallery items?

    scores (Q, G); positives (Q, G) bool, each row with at least one True. Ties are broken against the model: a
    positive is in the top k when fewer than k *negatives* score at least as high as the best positive. With no
    ties this is exactly CLIP_benchmark's `recall_at_k(...) > 0`.
    """
    if not isinstance(scores, torch.Tensor) or scores.ndim != 2 or scores.dtype == torch.bool or scores.is_complex():
        raise ValueError(f"scores must be a 2-D (queries, gallery) tensor of real numbers, got "
                         f"{f'{scores.dtype} {tuple(scores.shape)}' if isinstance(scores, torch.Tensor) else scores!r}")
    check_finite(scores, "scores", row="query row")
    if not isinstance(positives, torch.Tensor) or positives.shape != scores.shape or positives.dtype != torch.bool:
        got = f"{positives.dtype} {tuple(positives.shape)}" if isinstance(positives, torch.Tensor) else positives
        raise ValueError(f"positives must be a bool tensor of the scores' shape {tuple(scores.shape)}, got {got}")
    _check_k(k, scores.shape[1], "gallery items")
    check_int(chunk, "chunk")
    empty = ~positives.any(dim=1)
    if empty.any():
        raise ValueError(f"{int(empty.sum())} queries have no positive in the gallery (first: query "
                         f"{int(empty.nonzero()[0])}); Recall@K is undefined for them")
    out = []
    for start in range(0, scores.shape[0], chunk):
        s, p = scores[start:start + chunk], positives[start:start + chunk]
        best = s.masked_fill(~p, float("-inf")).max(dim=1, keepdim=True).values   # best positive score
        beaten_by = ((s >= best) & ~p).sum(dim=1)                                  # negatives at or above it
        out.append(beaten_by < k)
    return torch.cat(out)


def recall_at_k(scores: torch.Tensor, positives: torch.Tensor, k: int) -> float:
    """Fraction of queries with a positive in their top k (see `hits_at_k`). scores, positives: (Q, G)."""
    return hits_at_k(scores, positives, k).float().mean().item()


def paired_positives(text_to_image: torch.Tensor | Sequence[int], n_images: int) -> torch.Tensor:
    """(M, N) bool: caption m is a positive of image n iff `text_to_image[m] == n` (several captions per image)."""
    idx = torch.as_tensor(text_to_image)
    if idx.ndim != 1 or idx.numel() == 0:
        raise ValueError(f"text_to_image must be a non-empty 1-D list of image indices, got shape {tuple(idx.shape)}")
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise ValueError(f"text_to_image must hold integer image indices, got dtype {idx.dtype}")
    idx = idx.long()
    if idx.min() < 0 or idx.max() >= n_images:
        raise ValueError(f"text_to_image holds indices outside 0..{n_images - 1} "
                         f"(min {int(idx.min())}, max {int(idx.max())})")
    pos = torch.zeros(len(idx), n_images, dtype=torch.bool)
    pos[torch.arange(len(idx)), idx] = True
    return pos


def key_positives(text_keys: Sequence[Hashable], image_keys: Sequence[Hashable]) -> torch.Tensor:
    """(M, N) bool: caption m and image n match iff their keys are equal (e.g. the same attributes)."""
    if len(text_keys) == 0 or len(image_keys) == 0:
        raise ValueError("need at least one caption key and one image key")
    ids: dict[Hashable, int] = {}
    t = torch.tensor([ids.setdefault(key, len(ids)) for key in text_keys])
    i = torch.tensor([ids.setdefault(key, len(ids)) for key in image_keys])
    return t[:, None] == i[None, :]


def caption_positives(captions: Sequence[str], true_captions: Sequence[Collection[str]]) -> torch.Tensor:
    """(M, N) bool: caption m is a positive of image n iff it is one of image n's true descriptions
    (`true_captions[n]`, e.g. every caption template realised for its scene). This is the "semantic" notion of a
    hit: any image the sentence is true of counts, not only the one it was written for."""
    if len(captions) == 0 or len(true_captions) == 0:
        raise ValueError("need at least one caption and one image")
    index: dict[str, list[int]] = {}
    for n, truths in enumerate(true_captions):
        if isinstance(truths, str):
            raise ValueError(f"true_captions[{n}] is one string; pass a collection of strings per image")
        for t in set(truths):
            index.setdefault(t, []).append(n)
    pos = torch.zeros(len(captions), len(true_captions), dtype=torch.bool)
    for m, c in enumerate(captions):
        pos[m, index.get(c, [])] = True
    return pos


def retrieval_metrics(image_embeds: torch.Tensor, text_embeds: torch.Tensor,
                      text_to_image: torch.Tensor | Sequence[int] | None = None,
                      ks: Sequence[int] = (1, 5, 10), positives: torch.Tensor | None = None) -> dict[str, float]:
    """Recall@K both ways: {"t2i_r1": ..., "i2t_r1": ..., ...} for each K in `ks`.

    image_embeds (N, E), text_embeds (M, E). Pairing: `text_to_image` (M,) gives each caption's image (CLIP_benchmark's
    definition; default: caption m belongs to image m, so M == N), or pass `positives` (M, N) bool for any other
    notion of a match (e.g. `key_positives` for a "semantic" hit rate).
    t2i ("image retrieval"): for each caption, is one of its images in the top K of the N images?
    i2t ("text retrieval"): for each image, is any of its captions in the top K of the M captions?
    """
    check_widths(text_embeds, image_embeds, "text_embeds", "image_embeds")
    if isinstance(ks, (str, int)) or len(ks) == 0:
        raise ValueError(f"ks must be a non-empty list of K values, got {ks!r}")
    scores = similarity(text_embeds, image_embeds)                      # (M, N)
    m, n = scores.shape
    if positives is None:
        if text_to_image is None:
            if m != n:
                raise ValueError(f"{m} captions for {n} images: pass text_to_image to say which image each belongs to")
            text_to_image = torch.arange(n)
        positives = paired_positives(text_to_image, n)
    elif text_to_image is not None:
        raise ValueError("pass text_to_image or positives, not both")
    if positives.shape != (m, n):
        raise ValueError(f"positives must be (captions, images) = {(m, n)}, got {tuple(positives.shape)}")
    lonely = ~positives.any(dim=0)
    if lonely.any():
        raise ValueError(f"{int(lonely.sum())} images have no caption (first: image {int(lonely.nonzero()[0])}); "
                         "text retrieval is undefined for them")
    out = {}
    for k in ks:
        out[f"t2i_r{k}"] = recall_at_k(scores, positives, k)
        out[f"i2t_r{k}"] = recall_at_k(scores.T, positives.T, k)
    return out
