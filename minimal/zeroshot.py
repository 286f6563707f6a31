"""Zero-shot classification with a trained CLIP (chapter 05, book §14.2.3): the course's one zero-shot evaluator.

Zero-shot (제로샷) classification needs no labelled training data: each class name is written into a sentence —
a *prompt* (프롬프트) such as "a photo of a {}." — the text tower embeds it, and an image gets the class whose
sentence lies closest. Bare labels are often ambiguous or unlike the captions the model was trained on, so a
sentence helps; averaging the embeddings of *several* sentences per class — prompt ensembling (프롬프트
앙상블) — helps again. The averaged, re-normalised vectors are the weights of a linear classifier built from
text alone.

Everything works on embeddings or on plain encode functions, so the same code runs our tiny CLIP, our CLIP
loaded with OpenAI's weights, or a Hugging Face `CLIPModel` (`encoders(model, tokenizer)` builds the functions).
The Shapes world's tasks are evaluated here too (`task_prompts`, `task_accuracy`, `evaluate_tasks`): the README's
figures, chapter 05 and the output side's judge all classify through `ZeroShotClassifier` with these prompts.
Retrieval, the other use of the same similarity, is in `minimal.retrieval`.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .images import normalize
from .shapes import COLOURS, POSITIONS, SHAPES, SIZES, ZERO_SHOT_TASKS, Obj, zero_shot_set
from .shapes.language import count_phrase, fix_articles, indefinite, noun_phrase
from .weights import check_finite, check_int, check_real

EncodeText = Callable[[list[str]], torch.Tensor]
EncodeImage = Callable[[torch.Tensor], torch.Tensor]

# ----------------------------------------------------------------------------------------------------------------
# Prompts

LABEL_ONLY = "{}"
PHOTO_TEMPLATE = "a photo of a {}."   # the paper's default prompt
PROMPT_STYLES = ("world", "photo")


@dataclass(frozen=True)
class Prompts:
    """A prompt set for one task: `templates` (each with one "{}") and `names`, the phrase a label is written as
    inside a prompt (the paper's cleaned-up class names); labels missing from `names` are used as they are."""

    templates: tuple[str, ...]
    names: Mapping[str, str] = field(default_factory=dict)

    def texts(self, label: str) -> list[str]:
        """Every prompt for one label."""
        return [fill(t, self.names.get(label, label)) for t in self.templates]


# A prompt set: templates with one "{}" each, a `Prompts`, or the prompts themselves, one list per label.
PromptSet = Sequence[str] | Prompts | Sequence[Sequence[str]]


def fill(template: str, label: str) -> str:
    """Write `label` into `template` and fix the English article: fill("a {} shape", "orange") -> "an orange shape"."""
    if template.count("{}") != 1:
        raise ValueError(f"a template needs exactly one '{{}}' placeholder, got {template!r}")
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"labels must be non-empty strings, got {label!r}")
    return fix_articles(template.replace("{}", label))


def prompt_texts(labels: Sequence[str], prompts: PromptSet = (PHOTO_TEMPLATE,)) -> list[list[str]]:
    """The prompts of every label: a list (one per label) of lists (one per template) of strings.

    prompts: templates ("a photo of a {}."), a `Prompts`, or already written prompts, one non-empty list per label.
    """
    _check_labels(labels)
    if isinstance(prompts, str):
        raise ValueError(f"prompts must be a list of templates, not one string ({prompts!r})")
    if not isinstance(prompts, Prompts) and len(prompts) and not isinstance(prompts[0], str):
        texts = [list(group) for group in prompts]            # written out already: one list per label
        if len(texts) != len(labels) or not all(texts) or not all(isinstance(t, str) for g in texts for t in g):
            raise ValueError(f"written-out prompts need one non-empty list of strings per label ({len(labels)} "
                             f"labels), got {len(texts)} lists")
        return texts
    prompts = prompts if isinstance(prompts, Prompts) else Prompts(tuple(prompts))   # type: ignore[arg-type]
    if not prompts.templates:
        raise ValueError("need at least one template")
    return [prompts.texts(label) for label in labels]


def _check_labels(labels: Sequence[str]) -> None:
    if isinstance(labels, str):
        raise ValueError(f"labels must be a list of class names, not one string ({labels!r})")
    if len(labels) == 0:
        raise ValueError("the label list is empty: zero-shot classification needs at least one class name")
    if not all(isinstance(label, str) for label in labels):
        raise ValueError(f"labels must be strings, got {[type(x).__name__ for x in labels if not isinstance(x, str)]}")
    # "Red" and "red " are one class to a reader: two labels that differ only in case or spaces are duplicates too
    seen = Counter(" ".join(label.casefold().split()) for label in labels)
    duplicates = sorted(label for label in labels if seen[" ".join(label.casefold().split())] > 1)
    if duplicates:
        raise ValueError(f"duplicate labels {duplicates} (case and spaces ignored): each class must be named once")


# ----------------------------------------------------------------------------------------------------------------


def task_prompts(task: str, style: str = "world") -> list[list[str]]:
    """The course's prompts for a Shapes zero-shot task: one list per label (in `ZERO_SHOT_TASKS[task].labels`
    order) whose embeddings are averaged, an ensemble over the attributes the task does not ask about.

    style="world": the world's own caption phrasing ("a red shape on the left", "a small circle", ...).
    style="photo": the CLIP paper's "a photo of a {label}." (words our captions never use — shows why prompts matter).
    """
    if task not in ZERO_SHOT_TASKS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(ZERO_SHOT_TASKS)}")
    if style not in PROMPT_STYLES:
        raise ValueError(f"style must be one of {PROMPT_STYLES}, got {style!r}")
    labels = ZERO_SHOT_TASKS[task].labels
    if style == "photo":
        return prompt_texts(labels, [PHOTO_TEMPLATE])

    placeholder = {"shape": SHAPES[0], "colour": COLOURS[0], "size": SIZES[0], "position": POSITIONS[0]}

    def phrase(named: dict[str, str], size: bool = True, colour: bool = True, shape: bool = True,
               where: bool = True) -> str:   # a noun phrase naming only what is left on
        return noun_phrase(Obj(**{**placeholder, **named}), size, colour, shape, where)

    if task == "colour_shape":
        return [[indefinite(label)] for label in labels]
    if task == "colour":
        return [[phrase({"colour": c, "position": p}, size=False, shape=False) for p in POSITIONS] for c in labels]
    if task == "shape":
        return [[phrase({"shape": s, "position": p}, size=False, colour=False) for p in POSITIONS] for s in labels]
    if task == "position":
        return [[phrase({"shape": s, "position": p}, size=False, colour=False) for s in SHAPES] for p in labels]
    if task == "size":
        return [[phrase({"shape": s, "size": z}, colour=False, where=False) for s in SHAPES] for z in labels]
    rng = random.Random(0)   # count: eight short listings per number, "there are two shapes: a circle and a star"
    return [[count_phrase([indefinite(rng.choice(SHAPES)) for _ in range(k)]) for _ in range(8)]
            for k in range(1, len(labels) + 1)]


# ----------------------------------------------------------------------------------------------------------------
# Encoders: model + tokenizer -> two functions that return (un-normalised) embeddings


def encoders(model: Any, tokenizer: Callable, *, image_transform: Callable | None = None,
             context_length: int | None = None, device: torch.device | str | None = None,
             batch_size: int = 256) -> tuple[EncodeImage, EncodeText]:
    """(encode_image, encode_text) for our `minimal.clip.CLIP` or a Hugging Face `CLIPModel`.

    encode_image: pixels (B, 3, H, W) -> (B, E); `image_transform` (e.g. `minimal.images.normalize`) is applied to
      each batch first. encode_text: list of B strings -> (B, E). Both run under `torch.no_grad()`, in batches of
      `batch_size`, on `device` (default: the model's), and return float32 on the CPU.
    model: ours (has `encode_image`/`encode_text`) or HF (`get_image_features`/`get_text_features`).
    tokenizer: ours (`tokenizer(texts, context_length) -> LongTensor`, also when wrapping OpenAI's BPE) or a HF
      tokenizer (returns "input_ids" and "attention_mask"). Any pairing works, e.g. a HF model with our ids.
    context_length: for our tokenizer; default: our model's `cfg.text.context_length` (else the tokenizer's).
    """
    check_int(batch_size, "batch_size")
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
        if not isinstance(texts, list | tuple) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"encode_text takes a list of strings, got {type(texts).__name__}"
                            + (f" holding {sorted({type(t).__name__ for t in texts})}"
                               if isinstance(texts, list | tuple) else ""))
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


def embed(encode: Callable, inputs, what: str = "embeddings") -> torch.Tensor:
    """L2-normalised embeddings (N, E) of `inputs` (pixels (N,3,H,W) or N strings) through `encode`; a ValueError
    (naming `what` and its bad rows) if the encoder returns NaN or inf."""
    out = encode(inputs)
    check_embeddings(out, what)
    return F.normalize(out.float(), dim=-1)


def check_embeddings(x: torch.Tensor, what: str) -> None:
    """A ValueError naming `what` unless `x` is a 2-D (N, E) float tensor of finite numbers (the message counts the
    rows holding NaN or inf: such a row would otherwise get a prediction, or a perfect recall)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D tensor (N, E), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{what} must be float embeddings, got dtype {x.dtype}")
    check_finite(x, what)


def check_widths(a: torch.Tensor, b: torch.Tensor, what_a: str, what_b: str) -> None:
    check_embeddings(a, what_a)
    check_embeddings(b, what_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding widths differ: {what_a} are {a.shape[1]}-d, {what_b} are {b.shape[1]}-d "
                         "(were they made by the same CLIP?)")


# ----------------------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------------------
# Zero-shot classification


def classifier_weights(encode_text: EncodeText, labels: Sequence[str],
                       prompts: PromptSet = (PHOTO_TEMPLATE,)) -> torch.Tensor:
    """The zero-shot classifier (E, C): for each class, the mean of its prompts' normalised text embeddings,
    normalised again. One template gives plain prompting; several give a prompt ensemble. `prompts`: see
    `prompt_texts` (templates, a `Prompts`, or written-out prompts per label)."""
    texts = prompt_texts(labels, prompts)
    counts = [len(group) for group in texts]
    emb = embed(encode_text, [t for group in texts for t in group], "text embeddings of the prompts")
    if emb.shape[0] != sum(counts):
        raise ValueError(f"encode_text returned {emb.shape[0]} rows for {sum(counts)} prompts")
    weights = torch.stack([group.mean(dim=0) for group in emb.split(counts)])   # (C, E)
    return F.normalize(weights, dim=-1).T.contiguous()                          # (E, C)


def zero_shot_logits(image_embeds: torch.Tensor, weights: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """(N, C) scaled cosine similarities of images (N, E) to the classifier `weights` (E, C); `scale` > 0."""
    check_real(scale, "scale", low=0, low_open=True)
    if not isinstance(weights, torch.Tensor) or weights.ndim != 2:
        raise ValueError(f"classifier weights must be an (E, C) tensor, got "
                         f"{tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__}")
    check_widths(image_embeds, weights.T, "image embeddings", "classifier weights")   # (rows of weights.T: classes)
    return scale * F.normalize(image_embeds.float(), dim=-1) @ weights.float()


def predict(image_embeds: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(N,) index of the best class for each image embedding (N, E)."""
    return zero_shot_logits(image_embeds, weights).argmax(dim=-1)


def accuracy(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of equal entries of two (N,) tensors (NaN or inf in either is a ValueError, not a wrong answer)."""
    for name, x in (("predictions", predictions), ("targets", targets)):
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a tensor, got {type(x).__name__}")
        check_finite(x, name, row="entry")
    if predictions.shape != targets.shape or predictions.numel() == 0:
        raise ValueError(f"need two non-empty tensors of one shape, got {tuple(predictions.shape)} and "
                         f"{tuple(targets.shape)}")
    return int((predictions.cpu() == targets.cpu()).sum()) / predictions.numel()   # an exact fraction


class ZeroShotClassifier:
    """An image classifier built from text alone: `encode_image` plus the class weights of a prompt set.

    classifier(pixels (N, 3, H, W)) -> (N,) class indices; `.names(pixels)` -> the labels themselves.
    """

    def __init__(self, encode_image: EncodeImage, weights: torch.Tensor, labels: Sequence[str]):
        if not isinstance(weights, torch.Tensor):
            raise ValueError(f"classifier weights must be an (E, C) tensor, got {type(weights).__name__}")
        check_embeddings(weights.T, "classifier weights")
        if weights.shape[1] != len(labels):
            raise ValueError(f"{weights.shape[1]} classes in the weights but {len(labels)} labels")
        self.encode_image, self.weights, self.labels = encode_image, weights, list(labels)

    @classmethod
    def from_prompts(cls, encode_image: EncodeImage, encode_text: EncodeText, labels: Sequence[str],
                     prompts: PromptSet = (PHOTO_TEMPLATE,)) -> ZeroShotClassifier:
        return cls(encode_image, classifier_weights(encode_text, labels, prompts), labels)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return predict(embed(self.encode_image, pixels, "image embeddings"), self.weights)

    def names(self, pixels: torch.Tensor) -> list[str]:
        return [self.labels[i] for i in self(pixels).tolist()]


# ----------------------------------------------------------------------------------------------------------------
# The Shapes world's tasks


def task_classifier(model: torch.nn.Module, tokenizer: Callable, task: str, style: str = "world"
                    ) -> ZeroShotClassifier:
    """A zero-shot classifier for one Shapes task with the course's prompts (`task_prompts`); images in [0, 1]."""
    encode_image, encode_text = encoders(model, tokenizer, image_transform=normalize)
    labels = ZERO_SHOT_TASKS[task].labels if task in ZERO_SHOT_TASKS else []
    return ZeroShotClassifier.from_prompts(encode_image, encode_text, labels, task_prompts(task, style))


def task_accuracy(model: torch.nn.Module, tokenizer: Callable, task: str, n: int = 1000, seed: int = 12345,
                  split: str = "any", style: str = "world") -> float:
    """Zero-shot accuracy on `n` fresh images of a task (world seed `seed`, `split`); the model is put in eval
    mode for the measurement and restored after."""
    check_int(n, "n")
    was_training = model.training
    model.eval()
    try:
        images, targets, _ = zero_shot_set(task, n, seed=seed, split=split)
        return accuracy(task_classifier(model, tokenizer, task, style)(images), targets)
    finally:
        model.train(was_training)


def evaluate_tasks(model: torch.nn.Module, tokenizer: Callable, seed: int = 12345, n: int = 1000,
                   style: str = "world") -> dict:
    """The tiny CLIP's zero-shot figures (the `"clip"` part of `benchmarks/quality.py` and its card).

    zeroshot_seen / zeroshot_unseen: `2n` one-object images of train-split pairs / of held-out pairs, classified
    among all 48 colour–shape labels. colour, shape, size, position, count: `n` images of each task (split "any").
    """
    out: dict[str, Any] = {
        "zeroshot_seen": task_accuracy(model, tokenizer, "colour_shape", 2 * n, seed, "train", style),
        "zeroshot_unseen": task_accuracy(model, tokenizer, "colour_shape", 2 * n, seed + 1, "heldout", style)}
    for i, task in enumerate(("colour", "shape", "size", "position", "count")):
        out[task] = task_accuracy(model, tokenizer, task, n, seed + 2 + i, "any", style)
    out["chance"] = {name: 1 / len(t.labels) for name, t in ZERO_SHOT_TASKS.items()}
    out.update({"n_images": n, "world_seed": seed, "prompt_style": style})
    return out
