"""Zero-shot classification and retrieval with a trained CLIP (chapters 05 and 06, book §14.2.3).

Zero-shot (제로샷) classification needs no labelled training data: each class name is written into a sentence —
a *prompt* (프롬프트) such as "a photo of a {}." — the text tower embeds it, and an image gets the class whose
sentence lies closest. Bare labels are often ambiguous or unlike the captions the model was trained on, so a
sentence helps; averaging the embeddings of *several* sentences per class — prompt ensembling (프롬프트
앙상블) — helps again. The averaged, re-normalised vectors are the weights of a linear classifier built from
text alone.

Retrieval (검색) uses the same similarity in both directions: text→image ("image retrieval": for each caption,
is its image among the top K?) and image→text ("text retrieval": for each image, is *any* of its captions among
the top K?). Recall@K follows CLIP_benchmark's definition; ties between a positive and a negative score are counted
against the model, so a model that scores everything the same gets no credit.

Everything here works on embeddings or on plain encode functions, so the same code runs our tiny CLIP, our CLIP
loaded with OpenAI's weights, or a Hugging Face `CLIPModel` (`encoders(model, tokenizer)` builds the functions).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

EncodeText = Callable[[list[str]], torch.Tensor]
EncodeImage = Callable[[torch.Tensor], torch.Tensor]

# ----------------------------------------------------------------------------------------------------------------
# Prompts

LABEL_ONLY = "{}"
PHOTO_TEMPLATE = "a photo of a {}."   # the paper's default prompt


@dataclass(frozen=True)
class Prompts:
    """A prompt set for one task: `templates` (each with one "{}") and `names`, the phrase a label is written as
    inside a prompt (the paper's cleaned-up class names); labels missing from `names` are used as they are."""

    templates: tuple[str, ...]
    names: Mapping[str, str] = field(default_factory=dict)

    def texts(self, label: str) -> list[str]:
        """Every prompt for one label."""
        return [fill(t, self.names.get(label, label)) for t in self.templates]


_ARTICLE = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


def fill(template: str, label: str) -> str:
    """Write `label` into `template` and fix the English article: fill("a {} shape", "orange") -> "an orange shape"."""
    if template.count("{}") != 1:
        raise ValueError(f"a template needs exactly one '{{}}' placeholder, got {template!r}")
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"labels must be non-empty strings, got {label!r}")
    return _ARTICLE.sub(r"\1n ", template.replace("{}", label))


# Prompt ensembles for the Shapes world's zero-shot tasks (`minimal.data.ZERO_SHOT_TASKS`), written in the style of
# its captions ("a small red circle on the left", "there is one shape: a red circle"). Like the paper's "a photo of a
# big {}" / "a photo of a small {}", they average over the attributes the task does *not* ask about.
SHAPES_PROMPTS: dict[str, Prompts] = {
    "colour": Prompts(("a {} shape", "a small {} shape", "a large {} shape", "a {} shape on the left",
                       "a {} shape in the centre", "a {} shape at the top", "there is one shape: a {} shape")),
    "shape": Prompts(("a {}", "a small {}", "a large {}", "a {} on the left", "a {} in the centre",
                      "there is one shape: a {}", "a small {} at the bottom")),
    "colour_shape": Prompts(("a {}", "a small {}", "a large {}", "a {} on the right", "a {} at the top",
                             "there is one shape: a {}", "there is one shape: a large {}")),
    "size": Prompts(tuple(f"a {{}} {s}" for s in ("circle", "square", "triangle", "diamond", "cross", "star"))
                    + ("a {} shape",)),
    "position": Prompts(("a shape {}", "a circle {}", "a square {}", "a triangle {}", "a star {}", "a red shape {}",
                         "a blue shape {}"),
                        {"left": "on the left", "right": "on the right", "top": "at the top",
                         "bottom": "at the bottom", "centre": "in the centre"}),
    "count": Prompts(("there {}", "there {}: a circle", "there {}: a red shape", "there {}: a small shape",
                      "there {}: a large shape"),
                     {"one": "is one shape", "two": "are two shapes", "three": "are three shapes"}),
}


def prompt_texts(labels: Sequence[str], templates: Sequence[str] | Prompts = (PHOTO_TEMPLATE,)) -> list[list[str]]:
    """The prompts of every label: a list (one per label) of lists (one per template) of strings."""
    _check_labels(labels)
    prompts = templates if isinstance(templates, Prompts) else Prompts(tuple(templates))
    if not prompts.templates:
        raise ValueError("need at least one template")
    return [prompts.texts(label) for label in labels]


def _check_labels(labels: Sequence[str]) -> None:
    if isinstance(labels, str):
        raise ValueError(f"labels must be a list of class names, not one string ({labels!r})")
    if len(labels) == 0:
        raise ValueError("the label list is empty: zero-shot classification needs at least one class name")
    duplicates = sorted(k for k, n in Counter(labels).items() if n > 1)
    if duplicates:
        raise ValueError(f"duplicate labels {duplicates}: each class must be named once")


# ----------------------------------------------------------------------------------------------------------------
# Encoders: model + tokenizer -> two functions that return (un-normalised) embeddings


def encoders(model: torch.nn.Module, tokenizer: Callable, *, image_transform: Callable | None = None,
             context_length: int | None = None, device: torch.device | str | None = None,
             batch_size: int = 256) -> tuple[EncodeImage, EncodeText]:
    """(encode_image, encode_text) for our `minimal.clip.CLIP` or a Hugging Face `CLIPModel`.

    encode_image: pixels (B, 3, H, W) -> (B, E); `image_transform` (e.g. `minimal.data.normalize`) is applied to
      each batch first. encode_text: list of B strings -> (B, E). Both run under `torch.no_grad()`, in batches of
      `batch_size`, on `device` (default: the model's), and return float32 on the CPU.
    model: ours (has `encode_image`/`encode_text`) or HF (`get_image_features`/`get_text_features`).
    tokenizer: ours (`tokenizer(texts, context_length) -> LongTensor`, also when wrapping OpenAI's BPE) or a HF
      tokenizer (returns "input_ids" and "attention_mask"). Any pairing works, e.g. a HF model with our ids.
    context_length: for our tokenizer; default: our model's `cfg.text.context_length` (else the tokenizer's).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    ours = hasattr(model, "encode_text") and hasattr(model, "encode_image")
    if context_length is None and ours and hasattr(model, "cfg"):   # our CLIP: use its whole text window
        context_length = model.cfg.text.context_length

    def _features(out) -> torch.Tensor:   # HF >= 5 returns a ModelOutput whose pooler_output is the projection
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @torch.no_grad()
    def encode_image(pixels: torch.Tensor) -> torch.Tensor:
        if pixels.ndim != 4:
            raise ValueError(f"encode_image expects pixels (B, 3, H, W), got shape {tuple(pixels.shape)}")
        chunks = []
        for start in range(0, len(pixels), batch_size):
            x = pixels[start:start + batch_size].to(device)
            x = image_transform(x) if image_transform is not None else x
            out = model.encode_image(x) if ours else _features(model.get_image_features(pixel_values=x))
            chunks.append(out.float().cpu())
        return torch.cat(chunks) if chunks else torch.empty(0, 0)

    hf_tokenizer = hasattr(tokenizer, "model_input_names")

    @torch.no_grad()
    def encode_text(texts: list[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        chunks = []
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start:start + batch_size])
            if hf_tokenizer:
                enc = tokenizer(batch, padding=True, truncation=True, return_tensors="pt")
                ids, mask = enc["input_ids"], enc.get("attention_mask")
            else:
                ids = tokenizer(batch) if context_length is None else tokenizer(batch, context_length=context_length)
                ids, mask = (ids, None) if isinstance(ids, torch.Tensor) else (ids["input_ids"], None)
            ids = ids.to(device)
            if ours:
                out = model.encode_text(ids)
            else:
                kwargs = {} if mask is None else {"attention_mask": mask.to(device)}
                out = _features(model.get_text_features(input_ids=ids, **kwargs))
            chunks.append(out.float().cpu())
        return torch.cat(chunks) if chunks else torch.empty(0, 0)

    return encode_image, encode_text


def embed(encode: Callable, inputs) -> torch.Tensor:
    """L2-normalised embeddings (N, E) of `inputs` (pixels (N,3,H,W) or N strings) through `encode`."""
    out = encode(inputs)
    _check_2d(out, "embeddings")
    return F.normalize(out.float(), dim=-1)


def _check_2d(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D tensor (N, E), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")


def _check_widths(a: torch.Tensor, b: torch.Tensor, what_a: str, what_b: str) -> None:
    _check_2d(a, what_a)
    _check_2d(b, what_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding widths differ: {what_a} are {a.shape[1]}-d, {what_b} are {b.shape[1]}-d "
                         "(were they made by the same CLIP?)")


# ----------------------------------------------------------------------------------------------------------------
# Zero-shot classification


def classifier_weights(encode_text: EncodeText, labels: Sequence[str],
                       templates: Sequence[str] | Prompts = (PHOTO_TEMPLATE,)) -> torch.Tensor:
    """The zero-shot classifier (E, C): for each class, the mean of its prompts' normalised text embeddings,
    normalised again. One template gives plain prompting; several give a prompt ensemble."""
    texts = prompt_texts(labels, templates)
    per_class = len(texts[0])
    emb = embed(encode_text, [t for group in texts for t in group])       # (C*T, E)
    if emb.shape[0] != len(labels) * per_class:
        raise ValueError(f"encode_text returned {emb.shape[0]} rows for {len(labels) * per_class} prompts")
    weights = emb.view(len(labels), per_class, -1).mean(dim=1)              # (C, E)
    return F.normalize(weights, dim=-1).T.contiguous()                      # (E, C)


def zero_shot_logits(image_embeds: torch.Tensor, weights: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """(N, C) scaled cosine similarities of images (N, E) to the classifier `weights` (E, C)."""
    _check_2d(weights, "classifier weights")
    _check_widths(image_embeds, weights.T, "image embeddings", "classifier weights")
    return scale * F.normalize(image_embeds.float(), dim=-1) @ weights.float()


def predict(image_embeds: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(N,) index of the best class for each image embedding (N, E)."""
    return zero_shot_logits(image_embeds, weights).argmax(dim=-1)


def accuracy(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of equal entries of two (N,) tensors."""
    if predictions.shape != targets.shape or predictions.numel() == 0:
        raise ValueError(f"need two non-empty tensors of one shape, got {tuple(predictions.shape)} and "
                         f"{tuple(targets.shape)}")
    return (predictions.cpu() == targets.cpu()).float().mean().item()


# ----------------------------------------------------------------------------------------------------------------
# Retrieval


def similarity(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """Cosine similarities (Q, G) between query embeddings (Q, E) and gallery embeddings (G, E)."""
    _check_widths(queries, gallery, "query embeddings", "gallery embeddings")
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
    _check_2d(scores, "scores")
    if positives.shape != scores.shape or positives.dtype != torch.bool:
        raise ValueError(f"positives must be a bool tensor of the scores' shape {tuple(scores.shape)}, got "
                         f"{positives.dtype} {tuple(positives.shape)}")
    _check_k(k, scores.shape[1], "gallery items")
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
    idx = torch.as_tensor(text_to_image, dtype=torch.long)
    if idx.ndim != 1 or idx.numel() == 0:
        raise ValueError(f"text_to_image must be a non-empty 1-D list of image indices, got shape {tuple(idx.shape)}")
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
