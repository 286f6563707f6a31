"""The multimodal LLM (멀티 모달 LLM): frozen image encoder → trained input projector → frozen LLM (chapter 08).

The book's central figure, made real at the smallest scale that still works::

    pixels (B,3,32,32) ─ tiny CLIP ViT (frozen) ─ features of one layer (or several) ─ (B,16[+1],96)
        ─ InputProjector (trained: linear or MLP, optional pixel shuffle) ─ (B,n,576) "soft tokens"
        ─ written into the LLM's input embeddings where the prompt has <image> slots
        ─ SmolLM2-135M-Instruct (frozen; + small LoRA adapters, trained in stage 2) ─ next-token loss on answers

Which encoder layer, and the [CLS] token. LLaVA takes the *penultimate* layer of CLIP and drops [CLS]: the last
layer is shaped most by the contrastive objective, which only ever reads the [CLS] summary, while the layer
before it keeps more per-patch detail (which patch holds what). That is `MLLMConfig`'s default. Our ViT has only 3
blocks and its [CLS] reads colour and shape well; the shipped recipe (`minimal.recipes.mllm`) reads the *last*
layer with [CLS] kept, which a recipe search found better at the same budget.

The prompt. Each `<image>` in a user message is expanded to `n_image_tokens` copies of IMAGE_TOKEN_ID (-200,
LLaVA's IMAGE_TOKEN_INDEX: an id no tokenizer uses) so `input_ids`, `attention_mask` and `labels` all have the
final sequence length; `embed` then writes the projected image tokens exactly at those positions. Labels are
-100 (ignored) everywhere except the assistant's answer tokens (and its end-of-turn token, so it learns to stop).

    mllm = build_mllm(adapters_path=MLLM_ADAPTERS)      # the shipped model
    mllm.chat(image, "what colour is the star?")          # 'red'

The two training stages and the evaluation live in `minimal.recipes.mllm`; the shipped checkpoint
(`data/checkpoints/mllm_adapters.safetensors`) holds what the MLLM adds to the frozen parts: projector, adapters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from .accounting import count_parameters, freeze
from .clip import load_tiny_clip
from .images import as_image_tensor, normalize
from .input_projector import KINDS, InputProjector
from .llm import (
    chat_slots,
    check_fits,
    check_text,
    check_texts,
    encode_slots,
    greedy_generate,
    load_llm,
    new_kv_cache,
    pad_after_shared_prefix,
    pad_states,
    run_shared_prefix,
)
from .lora import add_lora, lora_parameters
from .shared_runs import shared_result
from .vit import VisionTransformer
from .weights import CHECKPOINT_DIR, check_int, check_real, check_state_dict, read_checkpoint, save_with_card

IMAGE_TOKEN = "<image>"
IMAGE_TOKEN_ID = -200   # marks image slots in input_ids (never looked up in the embedding table)
IGNORE_INDEX = -100     # label of positions that carry no loss (prompt, image, padding)
DEFAULT_SYSTEM = None   # None: the LLM's own default system message (training computes that shared prefix once)
MLLM_ADAPTERS = CHECKPOINT_DIR / "mllm_adapters.safetensors"


@dataclass
class MLLMConfig:
    """How the encoder's features reach the LLM.

    projector: "linear" (LLaVA-1) or "mlp" (LLaVA-1.5). shuffle: pixel-shuffle factor (1: 16 tokens per 32-px
    image, 2: 4 tokens). feature_layer: index into the ViT's hidden states (-2 = penultimate, as LLaVA; -1 = last).
    use_cls: keep the [CLS] token as an extra image token. system: the system message of every prompt.
    lora_rank: 0 (LLaVA's recipe: the LLM stays exactly as it was) or the rank of LoRA adapters (`minimal.lora`)
    added to the LLM's `lora_targets` layers, scaled by `lora_alpha` (None: 2·rank). Which stage trains them is
    the recipe's choice (`minimal.recipes.mllm.MLLMRecipe.lora_stages`).
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

    def __post_init__(self):   # a wrong field fails here, naming it, not deep inside a forward pass
        if self.projector not in KINDS:
            raise ValueError(f"MLLMConfig.projector must be one of {KINDS}, got {self.projector!r}")
        check_int(self.shuffle, "MLLMConfig.shuffle")
        check_int(self.lora_rank, "MLLMConfig.lora_rank", minimum=0)
        if self.lora_alpha is not None:
            check_real(self.lora_alpha, "MLLMConfig.lora_alpha (None or a number)", low=0, low_open=True)
        for flag in ("use_cls", "feature_norm", "instruction_aware"):
            if not isinstance(getattr(self, flag), bool):   # the string "False" would read as True
                raise TypeError(f"MLLMConfig.{flag} must be a bool, got {getattr(self, flag)!r}")
        if not isinstance(self.lora_targets, list | tuple) or not all(isinstance(t, str) for t in self.lora_targets):
            raise TypeError(f"MLLMConfig.lora_targets must be a list of layer names, got {self.lora_targets!r}")
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


class MLLM(nn.Module):
    """A LLaVA-style multimodal LLM: `vision` (frozen ViT) + `projector` (trained) + `llm` (frozen causal LM, with
    trainable LoRA adapters added to it in place when `cfg.lora_rank` > 0 — pass an LLM no other MLLM uses then).

    Args:
        vision: a `minimal.vit.VisionTransformer` (e.g. `load_tiny_clip()[0].visual`); frozen here.
        llm, tokenizer: from `minimal.llm.load_llm()`; frozen here.
        cfg: `MLLMConfig`. projector: an existing `InputProjector` (default: a fresh one built from cfg).
    Images are float (B, 3, 32, 32) in [0, 1] (`minimal.images.to_tensor`), normalised inside as CLIP was trained.
    """

    def __init__(self, vision: VisionTransformer, llm: Any, tokenizer: Any, cfg: MLLMConfig | None = None,
                 projector: InputProjector | None = None):
        super().__init__()
        self.cfg = cfg or MLLMConfig()
        n = vision.cfg.layers   # the encoder's hidden states: indices -n-1..n
        if not self.cfg.layers or not all(type(k) is int and -n - 1 <= k <= n for k in self.cfg.layers):
            raise ValueError(f"MLLMConfig.feature_layer must be an int or a list of ints in {-n - 1}..{n} (this "
                             f"encoder's hidden states), got {self.cfg.feature_layer!r}")
        self.vision, self.llm, self.tokenizer = vision, llm, tokenizer
        freeze(self.vision)
        freeze(self.llm)
        if self.cfg.lora_rank:   # adapters inside the LLM: trainable, and zero at first (the LLM is unchanged)
            if missing := set(self.cfg.lora_targets) - {n.rpartition(".")[2] for n, _ in llm.named_modules()}:
                raise ValueError(f"MLLMConfig.lora_targets names layers the LLM does not have: {sorted(missing)}")
            add_lora(self.llm, self.cfg.lora_targets, self.cfg.lora_rank, self.cfg.lora_alpha)
        d_vision, d_llm = vision.cfg.width * len(self.cfg.layers), llm.config.hidden_size
        self.projector = projector or InputProjector(d_vision, d_llm, self.cfg.projector, self.cfg.shuffle,
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
        out = self.vision(normalize(pixels), return_hidden=True)
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

    def tokenize(self, turns: Sequence[tuple[str, str | None]]) -> tuple[list[int], list[int]]:
        """A conversation -> (input_ids, labels), both of the final length (image slots expanded).

        turns: [(user, assistant), ...]; put "<image>" in a user message where the image goes. The last
        assistant may be None: the ids then end with the generation prompt (for `generate`). Labels are
        IGNORE_INDEX except on assistant answers, whose end-of-turn token is labelled too (the model must learn
        to stop); the newline the template puts after it is not. Typed control tokens stay text (`llm.encode_slots`).
        """
        image = {IMAGE_TOKEN: [IMAGE_TOKEN_ID] * self.n_image_tokens}   # each <image>: n_image_tokens slots
        messages, ids, labels, done = [], [], [], ""
        for k, (user, assistant) in enumerate(turns):
            if assistant is None and k != len(turns) - 1:
                raise ValueError("only the last turn may have no assistant answer")
            messages.append({"role": "user", "content": user})
            prompt, said = chat_slots(self.tokenizer, messages, self.cfg.system, add_generation_prompt=True)
            new = encode_slots(self.tokenizer, prompt[len(done):], said, image)
            ids += new
            labels += [IGNORE_INDEX] * len(new)
            done = prompt
            if assistant is None:
                break
            messages.append({"role": "assistant", "content": assistant})
            full, said = chat_slots(self.tokenizer, messages, self.cfg.system, add_generation_prompt=False)
            if not full.startswith(done):
                raise ValueError("this tokenizer's chat template rewrites earlier turns; cannot split answers")
            answer = full[len(done):]
            eos = self.tokenizer.eos_token
            cut = answer.index(eos) + len(eos) if eos and eos in answer else len(answer.rstrip())
            supervised = encode_slots(self.tokenizer, answer[:cut], said, image)
            last = k == len(turns) - 1   # the last turn's newline is not needed
            rest = [] if last else encode_slots(self.tokenizer, answer[cut:], said, image)
            ids += supervised + rest
            labels += supervised + [IGNORE_INDEX] * len(rest)
            done = full
        return ids, labels

    def collate(self, examples: list[tuple[list[int], list[int]]], padding_side: str = "right") -> dict[str, Tensor]:
        """Pad a list of (ids, labels) to a batch: input_ids, attention_mask, labels, each (B, T) long."""
        pad, left = self.tokenizer.pad_token_id or 0, padding_side != "right"
        ids, mask = pad_states([torch.tensor(i, dtype=torch.long) for i, _ in examples], pad, left)
        labels, _ = pad_states([torch.tensor(lab, dtype=torch.long) for _, lab in examples], IGNORE_INDEX, left)
        return {"input_ids": ids, "attention_mask": mask.long(), "labels": labels}

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
        if images is None or n_img == 0:
            return text
        instruction = self._instructions(input_ids, text) if self.cfg.instruction_aware else None
        tokens = self.encode_images(images.to(text.device), instruction).to(text.dtype)
        return text.masked_scatter(slots.unsqueeze(-1), tokens)   # row-major: image i fills the i-th block

    def _instructions(self, input_ids: Tensor, text: Tensor) -> Tensor:
        """For each image block (in order): the mean word embedding of the text that follows it in the same
        message — up to the end-of-turn token — i.e. the instruction about that image -> (n_images, D)."""
        stops, out = (self.tokenizer.eos_token_id, IMAGE_TOKEN_ID), []
        for b, row in enumerate(input_ids.tolist()):
            t = 0
            while t < len(row):
                if row[t] != IMAGE_TOKEN_ID:
                    t += 1
                    continue
                t = end = t + self.n_image_tokens
                while end < len(row) and row[end] not in stops:
                    end += 1
                out.append(text[b, t:end].mean(0) if end > t else text.new_zeros(text.shape[-1]))
        return torch.stack(out)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, images: Tensor | None = None,
                labels: Tensor | None = None) -> MLLMOutput:
        """input_ids/attention_mask/labels (B, T), images (n, 3, S, S) -> MLLMOutput (see there)."""
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        embeds = self.embed(input_ids, images)
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # works for left and right padding
        if labels is None:
            logits = self.llm(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids).logits
            return MLLMOutput(None, logits)
        # Every training prompt starts with the same tokens (system message, "user" header) up to the image: their
        # keys/values are computed once, for one row, without gradients (`llm.run_shared_prefix`), saving ~40 % of a
        # stage-1 step; exact, same numbers. With LoRA adapters training they depend on the adapters: the prefix is
        # then run with gradients (still once: the other rows' copies send their gradients back to it).
        P = self._shared_prefix(input_ids, attention_mask, labels)
        body, cache = self.llm.base_model, {}
        if P:
            cache = new_kv_cache(body)
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.llm_trains):
                run_shared_prefix(body, cache, input_ids.shape[0], inputs_embeds=embeds[:1, :P],
                                  position_ids=position_ids[:1, :P])
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
        the image in front). images (B, 3, S, S) in [0, 1] or None -> list of B strings. Prompts that do not fit
        the LLM's context window are refused before any work (`minimal.llm.check_fits`). `minimal.llm.greedy_generate`
        decodes with the KV cache (the system message read once for the batch, image and question once per row,
        then one position per new token); the test command shares identical calls between a chapter's two editions
        (`shared_result`)."""
        if images is not None and not isinstance(images, Tensor):
            raise TypeError(f"images must be None or a float tensor (B, 3, S, S) in [0, 1], got {type(images)}")
        return self._generate(images, check_texts(prompts, "prompts"), max_new_tokens, "prompts[{}]")

    @shared_result
    def _generate(self, images: Tensor | None, prompts: list[str], max_new_tokens: int, name: str) -> list[str]:
        check_int(max_new_tokens, "max_new_tokens")
        if images is not None and all(IMAGE_TOKEN not in p for p in prompts) and len(prompts) == images.shape[0]:
            prompts = [f"{IMAGE_TOKEN}\n{p}" for p in prompts]
        examples = [self.tokenize([(p, None)]) for p in prompts]
        for i, (row, _) in enumerate(examples):
            check_fits(self.llm, len(row), name.format(i), max_new_tokens)
        tok, device = self.tokenizer, next(self.llm.parameters()).device
        ids, mask, shared = pad_after_shared_prefix([row for row, _ in examples], tok.pad_token_id or 0, IMAGE_TOKEN_ID)
        out = greedy_generate(self.llm, self.embed(ids.to(device), images), mask.to(device), max_new_tokens,
                              tok.eos_token_id, tok.pad_token_id, shared)
        return [tok.decode(row, skip_special_tokens=True).strip() for row in out]

    def chat(self, image: Image.Image | Tensor, question: str, max_new_tokens: int = 32) -> str:
        """One image (a PIL image of any mode, or a float tensor (3, S, S) in [0, 1]) and one question -> the
        answer: ``mllm.chat(img, "what colour is the star?")``."""
        image = as_image_tensor(image, self.vision.cfg.image_size)   # a PIL image: RGB, resized to what it knows
        return self._generate(image.unsqueeze(0), [check_text(question, "question")], max_new_tokens, "question")[0]

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
        check_state_dict(self.adapter_state_dict(), state, what)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name in state:
                    p.copy_(state[name])
        return self

    def save_adapters(self, path: str | Path, card: dict) -> Path:
        """Write the trained parts (`adapter_state_dict`: the input projector, and LoRA adapters if any) + the
        config as safetensors, and `card` next to it as ``<stem>.json`` (both atomically)."""
        return save_with_card(path, self.adapter_state_dict(), {"mllm": asdict(self.cfg)}, card)


def load_adapters(path: str | Path = MLLM_ADAPTERS) -> tuple[MLLMConfig, dict[str, Tensor]]:
    """Read a checkpoint written by `MLLM.save_adapters` -> (its MLLMConfig, its tensors by MLLM name)."""
    tensors, config = read_checkpoint(path, "mllm", "MLLM", "python -m minimal.recipes.mllm")
    return MLLMConfig(**config), tensors


def build_mllm(cfg: MLLMConfig | None = None, adapters_path: str | Path | None = None, llm=None,
               device: str | torch.device = "cpu", verbose: bool = True) -> MLLM:
    """The course's MLLM: shipped tiny CLIP's vision tower + frozen SmolLM2 + an input projector (+ LoRA).

    adapters_path: a checkpoint to load (its config wins over `cfg`); None = a fresh, untrained projector.
    llm: an already loaded (model, tokenizer) pair, to skip loading it again.
    """
    state = None
    if adapters_path is not None:
        cfg, state = load_adapters(adapters_path)
    clip, _ = load_tiny_clip()
    model, tokenizer = llm if llm is not None else load_llm(verbose=verbose)
    mllm = MLLM(clip.visual, model, tokenizer, cfg)
    if state is not None:
        mllm.load_adapters(state, what=f"MLLM adapters from {adapters_path}")
    return mllm.to(device)
