"""The output side of a multimodal LLM (book §14.1.1, §14.3; chapter 09): output projector + modality generator.

An LLM writes text. To answer "draw a small blue star on the left" with a picture, the book's figure adds two
components after the LLM backbone (LLM 백본):

* the **output projector** (출력 프로젝터, trained — "fire"): reads the frozen LLM's hidden states for the request and
  (a) decides whether the user asked for an image at all and (b) if so, writes a *prompt for the generator* — here
  not words but a vector in the conditioning space of the generator;
* the **modality generator** (모달리티 생성기, frozen — "ice"): a pretrained image generator that draws from that vector.

Our generator is conditioned on the tiny CLIP's *text-embedding* space (chapter 04): it learned to draw from the
embedding of a caption, the way DALL·E 2 ("unCLIP") decodes images from CLIP embeddings. So the output projector's
job is concrete and checkable: map the LLM's state for a request onto the CLIP text embedding of the caption
that describes what was asked for ("a small blue star on the left"). The generator is a tiny conditional
**flow-matching** model (rectified flow, a close cousin of diffusion): it starts from noise and follows a learned
velocity field to an image in a few Euler steps; with one step it collapses to a regression decoder's blurry
average, which is the comparison chapter 09 measures.

    side = OutputSide.load()                           # frozen LLM + shipped projector + shipped generator
    reply = side("왼쪽에 작은 파란 별을 그려 줘")          # Reply(wants_image=True, image=(3,32,32), ...)
    reply = side("what is the capital of France?")     # Reply(wants_image=False, text="Paris ...")

Retrain the shipped checkpoints (each writes weights + a JSON card into data/checkpoints/):

    python -m minimal.generator generator      # the modality generator (≈10 min on 2 CPU cores)
    python -m minimal.generator projector      # the output projector (frozen LLM features + a small head)
    python -m minimal.generator evaluate --seed 12345
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import (
    COLOURS,
    KO_COLOURS,
    KO_POSITIONS,
    KO_SHAPES,
    KO_SIZES,
    POSITIONS,
    SHAPES,
    SIZES,
    Obj,
    Scene,
    josa,
    normalize,
    questions,
    render_batch,
    sample_scene,
)
from .weights import load_safetensors, load_state_dict_strict, save_safetensors

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "data" / "checkpoints"
GENERATOR_PATH = CHECKPOINT_DIR / "generator.safetensors"
PROJECTOR_PATH = CHECKPOINT_DIR / "output_projector.safetensors"
SYSTEM = "Answer briefly."   # a short system message: fewer tokens per request than SmolLM2's default one


# ---- requests: what a user types ----------------------------------------------------------------------------------
# A drawing request names one object: its colour and shape always, its size and position sometimes. The *target*
# is the English phrase, in the tiny CLIP's caption style, for what was asked ("a small blue star on the left",
# "a blue star"): the output projector learns to land where the CLIP text tower puts that phrase. Request templates
# and ordinary questions come in two disjoint sets, "train" and "heldout", so the projector is checked on phrasings
# it never saw.

EN_WHERE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
            "centre": "in the centre"}

DRAW_TEMPLATES = {
    ("en", "train"): ("draw {np}", "draw {np}.", "please draw {np}.", "can you draw {np}?", "could you draw me {np}?",
                      "draw me {np}, please", "make a picture of {np}", "generate an image of {np}",
                      "show me a picture of {np}", "I want a picture of {np}.", "paint {np}", "sketch {np} for me"),
    ("en", "heldout"): ("create an image with {np}", "I'd like a drawing of {np}.", "would you mind drawing {np}?",
                        "an image of {np}, please"),
    ("ko", "train"): ("{obj} 그려 줘", "{obj} 그려 주세요", "{obj} 그려줄래?", "{np} 그림을 그려 줘", "{np} 그림 좀 그려 주세요",
                      "{np} 이미지를 만들어 줘", "{np} 이미지를 생성해 주세요", "{obj} 그림으로 보여 줘"),
    ("ko", "heldout"): ("{obj} 그려 줄 수 있어?", "{np}의 그림이 필요해", "{np} 그림 하나 부탁해"),
}

# Ordinary questions get a text answer. Many name colours, shapes or drawing on purpose ("who drew the Mona Lisa?"):
# the decision must rest on what is asked, not on a word. Every fourth one is held out of training.
QUESTIONS = {
    "en": ("what is the capital of France?", "how many days are there in a week?", "what is 12 times 7?",
           "who wrote Romeo and Juliet?", "what is photosynthesis?", "how do I boil an egg?",
           "translate 'thank you' into Korean.", "what is the largest planet in the solar system?",
           "give me a synonym for happy.", "why is the sky blue?", "what colour is a banana?",
           "how many sides does a triangle have?", "how many points does a star have?", "who drew the Mona Lisa?",
           "what shape is a stop sign?", "what colour do you get by mixing blue and yellow?",
           "describe a red circle in one sentence.", "is drawing a good hobby?", "what does the word 'draw' mean?",
           "tell me a joke about squares.", "what is the area of a circle with radius 2?",
           "name three primary colours.", "how do you say 'star' in Korean?", "what is a diamond made of?",
           "recommend a book about painting.", "what time zone is Seoul in?", "explain what an image is.",
           "how many legs does a spider have?", "write a haiku about the sea.", "what is the boiling point of water?",
           "can you help me with my homework?", "what is a cross product?", "who painted the Starry Night?",
           "what is the square root of 81?", "is a square a rectangle?", "how are you today?",
           "what is machine learning?", "list the colours of the rainbow.", "what does CLIP stand for?",
           "how far is the Moon from the Earth?"),
    "ko": ("프랑스의 수도는 어디인가요?", "일주일은 며칠인가요?", "12 곱하기 7은 얼마인가요?", "로미오와 줄리엣은 누가 썼나요?",
           "광합성이란 무엇인가요?", "달걀은 어떻게 삶나요?", "'감사합니다'를 영어로 번역해 주세요.", "태양계에서 가장 큰 행성은?",
           "하늘은 왜 파란가요?", "바나나는 무슨 색인가요?", "삼각형의 변은 몇 개인가요?", "별은 꼭짓점이 몇 개인가요?",
           "모나리자는 누가 그렸나요?", "파란색과 노란색을 섞으면 무슨 색이 되나요?", "빨간 원을 한 문장으로 설명해 주세요.",
           "그림 그리기는 좋은 취미인가요?", "그림을 잘 그리는 방법을 알려 주세요.", "정사각형은 직사각형인가요?",
           "무지개의 색을 말해 주세요.", "서울은 어느 시간대에 있나요?", "거미는 다리가 몇 개인가요?",
           "바다에 대한 짧은 시를 써 주세요.", "물의 끓는점은 몇 도인가요?", "오늘 기분이 어때요?", "기계 학습이란 무엇인가요?",
           "원의 넓이는 어떻게 구하나요?", "별이 빛나는 밤은 누가 그렸나요?", "81의 제곱근은 얼마인가요?",
           "마름모와 정사각형의 차이는 무엇인가요?", "숙제를 도와줄 수 있나요?", "이미지란 무엇인가요?",
           "파란색을 좋아하는 사람이 많은 이유는?"),
}
SPLITS = ("train", "heldout")


def _split_of(index: int) -> str:
    return "heldout" if index % 4 == 3 else "train"


@dataclass(frozen=True)
class Request:
    """One user turn. `wants_image`: is it a drawing request? Drawing requests also carry `obj` (what was asked
    for; when `size_given`/`position_given` is False any size/position is right) and `target`, the English caption
    phrase whose tiny-CLIP text embedding the output projector regresses onto."""

    text: str
    lang: str
    wants_image: bool
    obj: Obj | None = None
    size_given: bool = True
    position_given: bool = True
    target: str | None = None


def target_phrase(obj: Obj, size: bool = True, position: bool = True) -> str:
    """Caption-style English phrase for a requested object: "a small blue star on the left", "an orange cross"."""
    words = ([obj.size] if size else []) + [obj.colour, obj.shape]
    phrase = ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)
    return phrase + (f" {EN_WHERE[obj.position]}" if position else "")


def all_target_phrases() -> list[str]:
    """Every phrase a request can target: 48 colour–shape pairs × (small, large, unsaid) × (5 positions, unsaid)."""
    return sorted({target_phrase(Obj(s, c, z, p), size, pos) for c in COLOURS for s in SHAPES for z in SIZES
                   for p in POSITIONS for size in (True, False) for pos in (True, False)})


def _ko_phrase(obj: Obj, size: bool, position: bool, rng: random.Random) -> str:
    where = ""
    if position:
        where = KO_POSITIONS[obj.position] + rng.choice(("에 있는 ", "에 "))
    return where + (f"{KO_SIZES[obj.size]} " if size else "") + f"{KO_COLOURS[obj.colour]} {KO_SHAPES[obj.shape]}"


def drawing_request(rng: random.Random, lang: str = "en", split: str = "train") -> Request:
    """A random request to draw one object, worded with a random template of `split` ("train" or "heldout")."""
    obj = sample_scene(rng, 1, "any").objects[0]
    size, position = rng.random() < 0.6, rng.random() < 0.6
    template = rng.choice(DRAW_TEMPLATES[(lang, split)])
    if lang == "en":
        text = template.format(np=target_phrase(obj, size, position))
    else:
        phrase = _ko_phrase(obj, size, position, rng)
        text = template.format(np=phrase, obj=josa(phrase, "을", "를"))
    return Request(text, lang, True, obj, size, position, target_phrase(obj, size, position))


def ordinary_question(rng: random.Random, lang: str = "en", split: str = "train") -> Request:
    """A question that wants a text answer: half general ones (many naming colours, shapes or drawing), half the
    Shapes world's own questions ("what colour is the star?"), asked without an image."""
    if rng.random() < 0.5:
        pool = [q for i, q in enumerate(QUESTIONS[lang]) if _split_of(i) == split]
        return Request(rng.choice(pool), lang, False)
    return Request(rng.choice(questions(sample_scene(rng), lang)).question, lang, False)


def request_set(n: int, seed: int, split: str = "train", langs: tuple[str, ...] = ("en", "ko")) -> list[Request]:
    """n requests: drawing requests and ordinary questions alternate, and so do the languages. Deterministic."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    bad = [lang for lang in langs if lang not in ("en", "ko")]
    if bad or not langs:
        raise ValueError(f"langs must be a non-empty tuple of 'en'/'ko', got {langs!r}")
    rng = random.Random(f"requests/{seed}/{split}")
    return [(drawing_request if i % 2 == 0 else ordinary_question)(rng, langs[(i // 2) % len(langs)], split)
            for i in range(n)]


# ---- reading the frozen LLM -----------------------------------------------------------------------------------------

class _Stop(Exception):
    """Raised by a forward hook once the layer we read has run: the layers above it would be wasted work."""


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(model).__name__} has no .model.layers: llm_states needs a decoder-only HF LM")
    return layers


@torch.no_grad()
def llm_states(model: nn.Module, tokenizer, texts: list[str], layer: int, batch_size: int = 32,
               progress: bool = False, cache: dict | None = None) -> list[torch.Tensor]:
    """The frozen LLM's hidden states after decoder layer `layer` (1-based) for each text, read as a chat turn.

    Each text is wrapped in the chat template (system `SYSTEM`, user text, assistant prompt). Returns one float32
    tensor (T_i, hidden) per text, T_i its token count. Layers above `layer` are not run (a hook stops the forward
    there), texts are batched by length and right-padded (padding never changes a causal model's real positions).
    cache: a dict kept by the caller, {(layer, text): states}; texts already in it are not run again (the LLM is
    frozen, so its states for a text never change).
    """
    from .llm import chat_prompt

    layers = _decoder_layers(model)
    if not 1 <= layer <= len(layers):
        raise ValueError(f"layer must be in 1..{len(layers)}, got {layer}")
    if cache is not None:
        todo = list(dict.fromkeys(t for t in texts if (layer, t) not in cache))
        if todo:
            cache.update(zip([(layer, t) for t in todo], llm_states(model, tokenizer, todo, layer, batch_size,
                                                                    progress), strict=True))
        return [cache[(layer, t)] for t in texts]
    ids = [tokenizer(chat_prompt(tokenizer, t, system=SYSTEM))["input_ids"] for t in texts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    captured: dict[str, torch.Tensor] = {}

    def hook(module, args, output):
        captured["h"] = output[0] if isinstance(output, tuple) else output
        raise _Stop

    out: list[torch.Tensor | None] = [None] * len(ids)
    handle = layers[layer - 1].register_forward_hook(hook)
    try:
        chunks = range(0, len(order), batch_size)
        if progress:
            from tqdm.auto import tqdm
            chunks = tqdm(chunks, desc=f"LLM states (layer {layer})")
        for start in chunks:
            chunk = order[start:start + batch_size]
            width = max(len(ids[i]) for i in chunk)
            x = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros(len(chunk), width, dtype=torch.long)
            for j, i in enumerate(chunk):
                x[j, :len(ids[i])] = torch.tensor(ids[i])
                mask[j, :len(ids[i])] = 1
            try:
                model(input_ids=x.to(device), attention_mask=mask.to(device))
            except _Stop:
                pass
            h = captured.pop("h").float().cpu()
            for j, i in enumerate(chunk):
                out[i] = h[j, :len(ids[i])].clone()
    finally:
        handle.remove()
    return out  # type: ignore[return-value]


def pad_states(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (T_i, D) -> (padded (B, T, D), mask (B, T) bool, True at real tokens)."""
    width = max(s.shape[0] for s in states)
    x = states[0].new_zeros(len(states), width, states[0].shape[1])
    mask = torch.zeros(len(states), width, dtype=torch.bool)
    for i, s in enumerate(states):
        x[i, :s.shape[0]] = s
        mask[i, :s.shape[0]] = True
    return x, mask


# ---- the output projector ---------------------------------------------------------------------------------------------

@dataclass
class OutputProjectorConfig:
    """Attention pooling over the LLM's token states, then an MLP with two heads (decision, conditioning)."""

    hidden_size: int = 576      # the LLM's width (SmolLM2-135M)
    layer: int = 18             # which decoder layer's states it reads (1-based; 18 of SmolLM2's 30, see chapter 09)
    cond_dim: int = 64          # the generator's conditioning space = the tiny CLIP's embedding size
    heads: int = 4              # attention-pooling heads: each learns which tokens to read (the verb, the colour...)
    width: int = 256
    dropout: float = 0.1


@dataclass
class ProjectorOutput:
    """logit (B,): > 0 means "the user wants an image"; cond (B, cond_dim): unit-norm generator conditioning."""

    logit: torch.Tensor
    cond: torch.Tensor

    @property
    def wants_image(self) -> torch.Tensor:
        return self.logit > 0


class OutputProjector(nn.Module):
    """The trained bridge from the frozen LLM to the frozen generator (≈0.68 M parameters, 0.5 % of the LLM)."""

    def __init__(self, cfg: OutputProjectorConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or OutputProjectorConfig()
        self.norm = nn.LayerNorm(cfg.hidden_size)
        self.score = nn.Linear(cfg.hidden_size, cfg.heads)
        self.mlp = nn.Sequential(nn.Linear(cfg.heads * cfg.hidden_size, cfg.width), nn.GELU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(cfg.width, cfg.width), nn.GELU())
        self.decide = nn.Linear(cfg.width, 1)
        self.to_cond = nn.Linear(cfg.width, cfg.cond_dim)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> ProjectorOutput:
        """states (B, T, hidden) from `llm_states` (padded), mask (B, T) bool -> ProjectorOutput."""
        if states.dim() != 3 or states.shape[-1] != self.cfg.hidden_size:
            raise ValueError(f"states must be (B, T, {self.cfg.hidden_size}), got {tuple(states.shape)}")
        if mask.shape != states.shape[:2]:
            raise ValueError(f"mask must be {tuple(states.shape[:2])}, got {tuple(mask.shape)}")
        h = self.norm(states)
        scores = self.score(h).masked_fill(~mask[..., None], float("-inf"))       # (B, T, heads)
        weights = scores.softmax(dim=1)
        pooled = torch.einsum("bth,btd->bhd", weights, h).flatten(1)               # (B, heads * hidden)
        z = self.mlp(pooled)
        return ProjectorOutput(self.decide(z).squeeze(-1), F.normalize(self.to_cond(z), dim=-1))


def projector_loss(out: ProjectorOutput, wants: torch.Tensor, target: torch.Tensor, cond_weight: float = 4.0
                   ) -> torch.Tensor:
    """Binary cross-entropy on the decision + cond_weight × (1 − cosine) to the target, on drawing requests only."""
    loss = F.binary_cross_entropy_with_logits(out.logit, wants.float())
    draw = wants.bool()
    if draw.any():
        loss = loss + cond_weight * (1 - (out.cond[draw] * target[draw]).sum(-1)).mean()
    return loss


# ---- the modality generator: a tiny conditional flow-matching U-Net ------------------------------------------------

@dataclass
class GeneratorConfig:
    """A U-Net velocity field v(x_t, t, c) over image_size² RGB images, conditioned on a `cond_dim` vector."""

    image_size: int = 32
    cond_dim: int = 64
    channels: list[int] = field(default_factory=lambda: [24, 48, 96])
    patch: int = 2              # pixel-unshuffle 2×2 cells into 12 channels first: 4× less work at full resolution
    emb_dim: int = 128
    groups: int = 8
    cond_drop: float = 0.1      # share of training examples with the condition dropped (classifier-free guidance)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1]: (B,) -> (B, dim) (t is scaled to [0, 1000) as diffusion steps are)."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * 1000.0 * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ResBlock(nn.Module):
    """Norm → SiLU → conv → FiLM by the embedding → norm → SiLU → conv, plus a skip: (B,C,H,W) -> (B,C',H,W)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)   # each block starts as the identity: a deep net trains from step one
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class ModalityGenerator(nn.Module):
    """Draws 32-px Shapes-world images from a conditioning vector (the tiny CLIP text-embedding space).

    Flow matching (rectified flow): x_t = (1 − t)·noise + t·image, and the network learns the velocity
    image − noise. Sampling integrates dx/dt = v(x, t, c) from t = 0 (noise) to t = 1 (image) with Euler steps.
    """

    def __init__(self, cfg: GeneratorConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or GeneratorConfig()
        ch, e, g, p = cfg.channels, cfg.emb_dim, cfg.groups, cfg.patch
        self.time_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        self.cond_mlp = nn.Sequential(nn.Linear(cfg.cond_dim, e), nn.SiLU(), nn.Linear(e, e))
        self.null_cond = nn.Parameter(torch.zeros(cfg.cond_dim))   # "no condition", for classifier-free guidance
        self.stem = nn.Sequential(nn.PixelUnshuffle(p), nn.Conv2d(3 * p * p, ch[0], 3, padding=1))
        self.down = nn.ModuleList([ResBlock(ch[max(i - 1, 0)], c, e, g) for i, c in enumerate(ch)])
        self.downsample = nn.ModuleList([nn.Conv2d(c, c, 3, stride=2, padding=1) for c in ch[:-1]])
        self.mid = ResBlock(ch[-1], ch[-1], e, g)
        self.up = nn.ModuleList([ResBlock(ch[min(i + 1, len(ch) - 1)] + ch[i], ch[i], e, g)
                                 for i in reversed(range(len(ch)))])
        self.out_norm = nn.GroupNorm(g, ch[0])
        self.out = nn.Sequential(nn.Conv2d(ch[0], 3 * p * p, 3, padding=1), nn.PixelShuffle(p))
        nn.init.zeros_(self.out[0].weight)
        nn.init.zeros_(self.out[0].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Velocity (B,3,H,W) at x (B,3,H,W) in [-1,1], time t (B,) in [0,1]; cond (B,cond_dim), None = unconditional."""
        if cond is None:
            cond = self.null_cond.expand(x.shape[0], -1)
        emb = F.silu(self.time_mlp(timestep_embedding(t, self.cfg.emb_dim)) + self.cond_mlp(cond))
        h, skips = self.stem(x), []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid(h, emb)
        for block in self.up:
            skip = skips.pop()
            if h.shape[-1] != skip.shape[-1]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1), emb)
        return self.out(F.silu(self.out_norm(h)))

    def loss(self, images: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Flow-matching loss for images (B,3,H,W) in [0,1] and their conditions (B,cond_dim).

        t is mostly drawn logit-normal (as in Stable Diffusion 3): middle times, where the object's shape is
        decided, get most of the training; a quarter is uniform, so t = 0 — where one Euler step must give the
        average picture — is learned too.
        """
        x1 = images * 2 - 1
        x0 = torch.randn_like(x1)
        b = x1.shape[0]
        t = torch.where(torch.rand(b, device=x1.device) < 0.25, torch.rand(b, device=x1.device),
                        torch.sigmoid(torch.randn(b, device=x1.device)))
        drop = torch.rand(b, device=x1.device) < self.cfg.cond_drop
        cond = torch.where(drop[:, None], self.null_cond.expand_as(cond), cond)
        tt = t[:, None, None, None]
        return F.mse_loss(self((1 - tt) * x0 + tt * x1, t, cond), x1 - x0)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, steps: int = 10, guidance: float = 2.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw one image per condition: cond (B, cond_dim) -> images (B, 3, H, W) in [0, 1].

        steps: Euler steps from noise to image (1 step = the regression decoder's average picture).
        guidance: classifier-free guidance weight w, v = v_uncond + w·(v_cond − v_uncond); 1 = plain conditional.
        generator: a torch.Generator for the starting noise (same generator state → same drawing).
        """
        if cond.dim() != 2 or cond.shape[1] != self.cfg.cond_dim:
            raise ValueError(f"cond must be (B, {self.cfg.cond_dim}), got {tuple(cond.shape)}")
        if steps < 1:
            raise ValueError(f"steps must be ≥ 1, got {steps}")
        b, s = cond.shape[0], self.cfg.image_size
        x = torch.randn(b, 3, s, s, generator=generator, device=generator.device if generator else "cpu")
        x = x.to(cond.device)
        for k in range(steps):
            t = torch.full((b,), k / steps, device=cond.device)
            if guidance == 1.0:
                v = self(x, t, cond)
            else:   # one batched call for the conditional and the unconditional velocity
                v_c, v_u = self(torch.cat([x, x]), torch.cat([t, t]),
                                torch.cat([cond, self.null_cond.expand_as(cond)])).chunk(2)
                v = v_u + guidance * (v_c - v_u)
            x = x + v / steps
        return ((x + 1) / 2).clamp(0, 1)


# ---- conditioning: the tiny CLIP's text-embedding space ---------------------------------------------------------

@torch.no_grad()
def text_embeddings(clip: nn.Module, tokenizer, texts: list[str], batch_size: int = 512) -> torch.Tensor:
    """Unit-norm tiny-CLIP text embeddings: list of N strings -> (N, embed_dim) float32 on the CPU."""
    device = clip.logit_scale.device
    rows = [clip.encode_text(tokenizer(texts[i:i + batch_size], context_length=clip.cfg.text.context_length)
                             .to(device)) for i in range(0, len(texts), batch_size)]
    return F.normalize(torch.cat(rows).float(), dim=-1).cpu()


class PhraseTable:
    """Every target phrase and its tiny-CLIP text embedding (computed once: 864 phrases, a fraction of a second)."""

    def __init__(self, clip: nn.Module, tokenizer):
        self.phrases = all_target_phrases()
        self.index = {p: i for i, p in enumerate(self.phrases)}
        self.embeddings = text_embeddings(clip, tokenizer, self.phrases)     # (864, E)

    def __call__(self, phrases: list[str]) -> torch.Tensor:
        """(N, E) embeddings of the given phrases (each must be one of `all_target_phrases()`)."""
        return self.embeddings[[self.index[p] for p in phrases]]

    def nearest(self, cond: torch.Tensor) -> list[str]:
        """The phrase whose embedding is closest to each row of cond (N, E): what the projector "meant"."""
        return [self.phrases[i] for i in (cond @ self.embeddings.T).argmax(-1).tolist()]


# ---- training the modality generator (once, then frozen and shipped) --------------------------------------------

@dataclass
class GeneratorRecipe:
    """Everything that decides the shipped generator (see data/checkpoints/generator.json)."""

    seed: int = 0
    steps: int = 2400
    batch: int = 128
    lr: float = 3e-3
    warmup: int = 50
    ema: float = 0.999          # the shipped weights are an exponential moving average of the trained ones
    cond_noise: float = 0.05    # per-dimension noise on the condition: the projector's output is never exact
    mention: float = 0.6        # chance that the conditioning phrase names the size (and, apart, the position)
    config: dict = field(default_factory=lambda: asdict(GeneratorConfig()))

    def small(self) -> GeneratorRecipe:
        """Fast-mode variant: same model, far fewer steps (blurry drawings; the chapter loads the shipped one)."""
        return GeneratorRecipe(**{**asdict(self), "steps": 60, "batch": 64, "warmup": 10})


class GeneratorBatches:
    """batches(step) -> {"image": (B,3,32,32) in [0,1], "cond": (B,E)}: fresh one-object scenes every step, each
    with the (noised) CLIP embedding of a phrase describing it. Deterministic from (seed, step)."""

    def __init__(self, table: PhraseTable, batch: int, seed: int, cond_noise: float, mention: float, size: int = 32):
        self.table, self.batch, self.seed, self.cond_noise, self.mention, self.size = (
            table, batch, seed, cond_noise, mention, size)

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        rng = random.Random(f"generator/{self.seed}/{step}")
        scenes = [sample_scene(rng, 1, "any") for _ in range(self.batch)]
        phrases = [target_phrase(s.objects[0], rng.random() < self.mention, rng.random() < self.mention)
                   for s in scenes]
        images = render_batch(scenes, self.size, rng)
        g = torch.Generator().manual_seed(rng.getrandbits(62))
        cond = self.table(phrases)
        noise = torch.randn(cond.shape, generator=g) * torch.rand(len(cond), 1, generator=g) * self.cond_noise
        return {"image": images, "cond": F.normalize(cond + noise, dim=-1)}


def generator_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model.loss(batch["image"], batch["cond"])


def train_generator(recipe: GeneratorRecipe, clip: nn.Module, clip_tokenizer, device: str | torch.device = "cpu",
                    progress: bool = True) -> tuple[ModalityGenerator, list[float], float, float]:
    """Pretrain the modality generator -> (EMA generator, frozen, eval mode; loss history; wall seconds; CPU
    seconds of this process, all threads — on a busy machine the fairer measure of the work done)."""
    from .train import train

    torch.manual_seed(recipe.seed)
    model = ModalityGenerator(GeneratorConfig(**recipe.config))
    cpu0 = time.process_time()
    ema = copy.deepcopy(model).requires_grad_(False)
    batches = GeneratorBatches(PhraseTable(clip, clip_tokenizer), recipe.batch, recipe.seed, recipe.cond_noise,
                               recipe.mention)

    def update_ema(step: int, loss: float) -> None:
        decay = min(recipe.ema, (1 + step) / (10 + step))   # short warm-up: early averages forget the random init
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters(), strict=True):
                e.lerp_(p.detach().to(e.device), 1 - decay)

    ema.to(device)
    t0 = time.perf_counter()
    history = train(model, generator_loss, batches, steps=recipe.steps, lr=recipe.lr, warmup=recipe.warmup,
                    weight_decay=0.0, grad_clip=1.0, device=device, progress=progress, on_step=update_ema)
    return freeze(ema), history, time.perf_counter() - t0, time.process_time() - cpu0


def freeze(module: nn.Module) -> nn.Module:
    """No gradients, eval mode: a frozen component (얼음, "ice" in the book's figure). Returns the module."""
    return module.requires_grad_(False).eval()


# ---- training the output projector (the only thing chapter 09 trains) -------------------------------------------

@dataclass
class ProjectorRecipe:
    """Everything that decides the shipped output projector (see data/checkpoints/output_projector.json)."""

    seed: int = 0
    n_train: int = 600          # requests (half drawing requests, half questions; EN and KO) from "train" templates
    steps: int = 600
    batch: int = 64
    lr: float = 1e-3
    warmup: int = 30
    weight_decay: float = 0.01
    cond_weight: float = 4.0
    config: dict = field(default_factory=lambda: asdict(OutputProjectorConfig()))

    def small(self) -> ProjectorRecipe:
        """Fast-mode variant: fewer requests and steps."""
        return ProjectorRecipe(**{**asdict(self), "n_train": 160, "steps": 250})


class ProjectorBatches:
    """batches(step) -> {"states": (B,T,D), "mask": (B,T), "wants": (B,), "target": (B,E)} from cached LLM states."""

    def __init__(self, states: list[torch.Tensor], wants: torch.Tensor, targets: torch.Tensor, batch: int, seed: int):
        self.states, self.wants, self.targets, self.batch, self.seed = states, wants, targets, batch, seed

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        idx = torch.randint(len(self.states), (min(self.batch, len(self.states)),), generator=g).tolist()
        states, mask = pad_states([self.states[i] for i in idx])
        return {"states": states, "mask": mask, "wants": self.wants[idx], "target": self.targets[idx]}


def targets_for(requests: list[Request], table: PhraseTable) -> tuple[torch.Tensor, torch.Tensor]:
    """(wants (N,) bool, targets (N, E)): zeros as the target of ordinary questions (their target is never used)."""
    wants = torch.tensor([r.wants_image for r in requests])
    targets = torch.zeros(len(requests), table.embeddings.shape[1])
    draw = [i for i, r in enumerate(requests) if r.wants_image]
    if draw:
        targets[draw] = table([requests[i].target for i in draw])
    return wants, targets


def train_output_projector(recipe: ProjectorRecipe, llm: nn.Module, llm_tokenizer, table: PhraseTable,
                           states: list[torch.Tensor] | None = None, progress: bool = True
                           ) -> tuple[OutputProjector, list[float], float]:
    """Train the output projector on the frozen LLM's states -> (projector in eval mode, losses, wall seconds).

    The LLM runs forward only, once per request (its states are cached: it is frozen, so they never change); the
    generator is not needed at all — the projector learns to hit the CLIP embedding the generator reads.
    `states` may be passed in (from `llm_states`) to skip that forward pass.
    """
    from .train import train

    cfg = OutputProjectorConfig(**recipe.config)
    requests = request_set(recipe.n_train, recipe.seed, "train")
    t0 = time.perf_counter()
    if states is None:
        states = llm_states(llm, llm_tokenizer, [r.text for r in requests], cfg.layer, progress=progress)
    wants, targets = targets_for(requests, table)
    torch.manual_seed(recipe.seed)
    projector = OutputProjector(cfg)
    history = train(projector, lambda m, b: projector_loss(m(b["states"], b["mask"]), b["wants"], b["target"],
                                                           recipe.cond_weight),
                    ProjectorBatches(states, wants, targets, recipe.batch, recipe.seed), steps=recipe.steps,
                    lr=recipe.lr, warmup=recipe.warmup, weight_decay=recipe.weight_decay, grad_clip=1.0,
                    device="cpu", progress=progress)
    return projector.eval(), history, time.perf_counter() - t0


# ---- judging drawings with the tiny CLIP ------------------------------------------------------------------------

class Judge:
    """The tiny CLIP as a zero-shot judge: which of the 48 "a {colour} {shape}" labels does an image show?"""

    def __init__(self, clip: nn.Module, tokenizer):
        self.clip = clip
        self.labels = [(c, s) for c in COLOURS for s in SHAPES]
        self.weights = text_embeddings(clip, tokenizer, [target_phrase(Obj(s, c, "small", "left"), False, False)
                                                          for c, s in self.labels])     # (48, E)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> list[tuple[str, str]]:
        """images (B, 3, 32, 32) in [0, 1] -> the (colour, shape) the tiny CLIP reads in each."""
        device = self.clip.logit_scale.device
        emb = F.normalize(self.clip.encode_image(normalize(images).to(device)).float(), dim=-1).cpu()
        return [self.labels[i] for i in (emb @ self.weights.T).argmax(-1).tolist()]


def render_request(obj: Obj, seed: int = 0) -> torch.Tensor:
    """What the renderer draws for a requested object: (3, 32, 32) in [0, 1] (the judge's ground-truth check)."""
    return render_batch([Scene((obj,))], 32, seed)[0]


# ---- the whole loop: request -> frozen LLM -> output projector -> frozen generator -------------------------------

@dataclass
class Reply:
    """What the system answers: an image (3, H, W) in [0, 1] with the `cond` it was drawn from, or text."""

    request: str
    wants_image: bool
    p_image: float
    text: str | None = None
    image: torch.Tensor | None = None
    cond: torch.Tensor | None = None


class OutputSide(nn.Module):
    """Frozen LLM + trained output projector + frozen modality generator. Call it with a request (or a list)."""

    def __init__(self, llm: nn.Module, tokenizer, projector: OutputProjector, generator: ModalityGenerator,
                 steps: int = 10, guidance: float = 2.0):
        super().__init__()
        self.llm, self.tokenizer = freeze(llm), tokenizer
        self.projector, self.generator = projector.eval(), freeze(generator)
        self.steps, self.guidance = steps, guidance
        self.states_cache: dict[tuple[int, str], torch.Tensor] = {}   # the LLM is frozen: its states never change

    @classmethod
    def load(cls, projector: str | Path = PROJECTOR_PATH, generator: str | Path = GENERATOR_PATH,
             verbose: bool = True, **kwargs) -> OutputSide:
        """The course's frozen LLM (`minimal.llm.load_llm`; verbose: print its one-line summary) with the shipped
        projector and generator."""
        from .llm import load_llm

        llm, tokenizer = load_llm(verbose=verbose)
        return cls(llm, tokenizer, load_output_projector(projector), load_generator(generator), **kwargs)

    @torch.no_grad()
    def decide(self, texts: list[str]) -> ProjectorOutput:
        """Run the frozen LLM (up to the projector's layer) and the projector on a batch of requests."""
        states, mask = pad_states(llm_states(self.llm, self.tokenizer, texts, self.projector.cfg.layer,
                                             cache=self.states_cache))
        return self.projector(states, mask)

    @torch.no_grad()
    def forward(self, requests: str | list[str], seed: int = 0, max_new_tokens: int = 32) -> Reply | list[Reply]:
        """Answer requests: drawings for those the projector judges to be drawing requests, text for the others."""
        from .llm import answer

        texts = [requests] if isinstance(requests, str) else list(requests)
        out = self.decide(texts)
        replies = [Reply(t, bool(w), float(p)) for t, w, p in zip(texts, out.wants_image, out.logit.sigmoid(),
                                                                   strict=True)]
        draw = [i for i, r in enumerate(replies) if r.wants_image]
        if draw:
            images = self.generator.sample(out.cond[draw], self.steps, self.guidance,
                                           torch.Generator().manual_seed(seed))
            for k, i in enumerate(draw):
                replies[i].image, replies[i].cond = images[k], out.cond[i]
        for r in replies:
            if not r.wants_image:
                r.text = answer(self.llm, self.tokenizer, r.request, max_new_tokens=max_new_tokens, system=SYSTEM)
        return replies[0] if isinstance(requests, str) else replies


# ---- evaluation: the "generator" part of benchmarks/quality.py ----------------------------------------------------

@torch.no_grad()
def evaluate(side: OutputSide, judge: Judge, table: PhraseTable, seed: int = 12345, n: int = 400,
             split: str = "heldout", states: list[torch.Tensor] | None = None) -> dict:
    """Decision and drawing quality on `n` fresh requests (world seed `seed`; "heldout" templates and questions).

    decision: share of requests routed right (image vs text). drawing: share of *drawing requests* that got a
    drawing whose colour and shape the tiny CLIP reads as requested (a missed decision counts as wrong).
    judge_agreement: how often the same judge reads the renderer's own image of each request right — the judge's
    accuracy, so `drawing` can be read against it. generator_alone: drawings from the exact CLIP embedding of the
    target phrase (no LLM, no projector). cond_cosine / nearest_phrase: how close the projector lands to its target.
    """
    requests = request_set(n, seed, split)
    if states is None:
        states = llm_states(side.llm, side.tokenizer, [r.text for r in requests], side.projector.cfg.layer,
                            cache=side.states_cache)
    x, mask = pad_states(states)
    out = side.projector(x, mask)
    wants = torch.tensor([r.wants_image for r in requests])
    right = out.wants_image == wants
    draw = [i for i, r in enumerate(requests) if r.wants_image]
    objs = [requests[i].obj for i in draw]
    truth = [(o.colour, o.shape) for o in objs]
    gen = torch.Generator().manual_seed(seed)
    drawn = judge(side.generator.sample(out.cond[draw], side.steps, side.guidance, gen))
    target = table([requests[i].target for i in draw])
    oracle = judge(side.generator.sample(target, side.steps, side.guidance, torch.Generator().manual_seed(seed)))
    real = judge(torch.stack([render_request(o, seed * 7919 + k) for k, o in enumerate(objs)]))
    ok = [bool(out.wants_image[i]) and d == t for i, d, t in zip(draw, drawn, truth, strict=True)]
    by_lang = {lang: round(float(right[[r.lang == lang for r in requests]].float().mean()), 4) for lang in ("en", "ko")}
    return {
        "decision": round(float(right.float().mean()), 4),
        "decision_by_language": by_lang,
        "drawing": round(sum(ok) / len(draw), 4),
        "judge_agreement": round(sum(a == t for a, t in zip(real, truth, strict=True)) / len(draw), 4),
        "generator_alone": round(sum(a == t for a, t in zip(oracle, truth, strict=True)) / len(draw), 4),
        "cond_cosine": round(float((out.cond[draw] * target).sum(-1).mean()), 4),
        "nearest_phrase": round(sum(p == requests[i].target for p, i in zip(table.nearest(out.cond[draw]), draw,
                                                                           strict=True)) / len(draw), 4),
        "n_requests": n, "n_drawing_requests": len(draw), "split": split, "world_seed": seed,
        "sampler": {"steps": side.steps, "guidance": side.guidance},
    }


# ---- checkpoints: safetensors + JSON card -------------------------------------------------------------------------

def save_checkpoint(module: nn.Module, path: str | Path, card: dict) -> Path:
    """Weights and config into `path` (.safetensors), the card (config, command, seed, metrics...) next to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(path, module.state_dict(), {"config": asdict(module.cfg)})
    card = {**card, "file_bytes": path.stat().st_size}
    path.with_suffix(".json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    return path


def _load(path: str | Path, cls, cfg_cls, what: str) -> nn.Module:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no {what} checkpoint at {path}; train one with `python -m minimal.generator "
                         f"{'generator' if cls is ModalityGenerator else 'projector'}`")
    tensors, config = load_safetensors(path)
    module = cls(cfg_cls(**config["config"]))
    load_state_dict_strict(module, tensors, what)
    return module.eval()


def load_generator(path: str | Path = GENERATOR_PATH) -> ModalityGenerator:
    """The shipped modality generator, frozen (requires_grad False, eval mode)."""
    return freeze(_load(path, ModalityGenerator, GeneratorConfig, "modality generator"))


def load_output_projector(path: str | Path = PROJECTOR_PATH) -> OutputProjector:
    """The shipped output projector (eval mode; trainable if you want to fine-tune it)."""
    return _load(path, OutputProjector, OutputProjectorConfig, "output projector")


def read_card(path: str | Path) -> dict:
    """The JSON card next to a checkpoint."""
    return json.loads(Path(path).with_suffix(".json").read_text())


# ---- command line: retrain the shipped checkpoints ------------------------------------------------------------------

def _clip_identity(path: str | Path | None) -> dict:
    """Which tiny CLIP a checkpoint was trained against (its conditioning space): path and SHA-256."""
    import hashlib

    from .clip import TINY_CLIP

    path = Path(path or TINY_CLIP)
    return {"path": str(path.relative_to(CHECKPOINT_DIR.parent.parent) if path.is_relative_to(CHECKPOINT_DIR.parent.parent)
                        else path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _card(name: str, what: str, module: nn.Module, recipe, seconds: float, history: list[float], metrics: dict,
          load_before: list | None, cpu_seconds: float | None = None, clip_path: str | Path | None = None) -> dict:
    from .checkpoints import machine

    return {
        "name": name, "what": what, "config": asdict(module.cfg), "recipe": asdict(recipe),
        "command": "python -m minimal.generator " + " ".join(sys.argv[1:]), "seed": recipe.seed,
        "metrics": metrics,
        "train": {"steps": recipe.steps, "wall_seconds": round(seconds, 1), "device": "cpu",
                  "process_cpu_seconds": round(cpu_seconds, 1) if cpu_seconds is not None else None,
                  "first_loss": round(history[0], 5), "final_loss": round(sum(history[-20:]) / 20, 5),
                  "load_average_before": load_before, "load_average_after": machine()["load_average_1_5_15"]},
        "parameters": sum(p.numel() for p in module.parameters()),
        "clip": _clip_identity(clip_path),
        "machine": machine(), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> None:
    from .checkpoints import machine
    from .clip import load_tiny_clip
    from .llm import load_llm

    parser = argparse.ArgumentParser(prog="python -m minimal.generator", description=__doc__.split("\n")[0])
    parser.add_argument("which", choices=["generator", "projector", "evaluate"])
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    parser.add_argument("--seed", type=int, default=None, help="training seed (evaluate: world seed)")
    parser.add_argument("--eval-seed", type=int, default=12345)
    parser.add_argument("--clip", type=Path, default=None, help="tiny CLIP checkpoint (default: the shipped one)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the checkpoint + card (default: the shipped path in data/checkpoints/)")
    args = parser.parse_args(argv)
    clip, clip_tok = load_tiny_clip(args.clip) if args.clip else load_tiny_clip()
    table, judge = PhraseTable(clip, clip_tok), Judge(clip, clip_tok)
    load_before = machine()["load_average_1_5_15"]
    if args.which == "generator":
        recipe = GeneratorRecipe(**({"seed": args.seed} if args.seed is not None else {}))
        recipe.steps = args.steps or recipe.steps
        generator, history, seconds, cpu_seconds = train_generator(recipe, clip, clip_tok)
        targets = request_set(400, args.eval_seed, "heldout")
        objs = [r.obj for r in targets if r.wants_image]
        cond = table([r.target for r in targets if r.wants_image])
        drawn = judge(generator.sample(cond, 10, 2.0, torch.Generator().manual_seed(args.eval_seed)))
        metrics = {"generator_alone": round(sum(d == (o.colour, o.shape) for d, o in zip(drawn, objs, strict=True))
                                            / len(objs), 4), "n": len(objs), "world_seed": args.eval_seed,
                   "sampler": {"steps": 10, "guidance": 2.0}}
        card = _card("generator", "flow-matching U-Net drawing 32-px Shapes images from tiny-CLIP text embeddings "
                     "(pretrained on all 48 colour-shape pairs, then frozen)", generator, recipe, seconds, history,
                     metrics, load_before, cpu_seconds, args.clip)
        save_checkpoint(generator, args.out or GENERATOR_PATH, card)
    elif args.which == "projector":
        recipe = ProjectorRecipe(**({"seed": args.seed} if args.seed is not None else {}))
        recipe.steps = args.steps or recipe.steps
        llm, tok = load_llm()
        cpu0 = time.process_time()
        projector, history, seconds = train_output_projector(recipe, llm, tok, table)
        cpu_seconds = time.process_time() - cpu0
        metrics = evaluate(OutputSide(llm, tok, projector, load_generator()), judge, table, args.eval_seed)
        card = _card("output_projector", "attention pooling + MLP on SmolLM2-135M-Instruct hidden states: "
                     "image-or-text decision and tiny-CLIP text embedding of the request", projector, recipe,
                     seconds, history, metrics, load_before, cpu_seconds, args.clip)
        save_checkpoint(projector, args.out or PROJECTOR_PATH, card)
    else:
        side = OutputSide.load()
        card = evaluate(side, judge, table, args.seed if args.seed is not None else args.eval_seed)
    print(json.dumps(card, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
