"""The pictures every chapter draws: galleries, grids, matrices and curves.

Plot helpers return the matplotlib Figure so a notebook can show it, save it, or test it. Korean text needs a font
with Hangul glyphs; `use_korean_font()` registers NanumGothic (shipped by the `koreanize-matplotlib` wheel, OFL
licence) without importing that package, whose import-time code breaks on newer Pythons.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import font_manager
from PIL import Image

KOREAN_FONT = "NanumGothic"


def use_korean_font() -> bool:
    """Make matplotlib draw Hangul. Returns False (and changes nothing) when no Korean font is installed."""
    spec = importlib.util.find_spec("koreanize_matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return False
    font_dir = Path(next(iter(spec.submodule_search_locations))) / "fonts"
    fonts = sorted(font_dir.glob("*.ttf"))
    for path in fonts:
        font_manager.fontManager.addfont(str(path))
    if not fonts:
        return False
    # Keep DejaVu Sans as the fallback for symbols NanumGothic lacks (e.g. the minus sign on axes).
    plt.rcParams["font.family"] = [KOREAN_FONT, "DejaVu Sans"]
    plt.rcParams["axes.unicode_minus"] = False
    return True


def as_image_array(image: Image.Image | torch.Tensor | np.ndarray) -> np.ndarray:
    """Anything image-like → an (H, W, 3) float array in [0, 1] for `imshow`.

    Tensors are (3, H, W) or (H, W, 3) in [0, 1] (un-normalise first if you normalised them).
    """
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.ndim != 3 or array.shape[-1] not in (1, 3):
        raise ValueError(f"expected an image of shape (3,H,W) or (H,W,3), got {tuple(array.shape)}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.clip(array, 0.0, 1.0)


def image_grid(images: Sequence, titles: Sequence[str] | None = None, cols: int = 6, size: float = 1.8,
               title_size: int = 8, suptitle: str | None = None) -> plt.Figure:
    """A gallery: images in a grid with an optional title (caption, label, answer…) under each."""
    if len(images) == 0:
        raise ValueError("image_grid needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(images)} images but {len(titles)} titles")
    cols = min(cols, len(images))
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * (size + 0.35 * title_size / 8)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, image in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(as_image_array(image), interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=title_size, wrap=True)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def loss_curve(losses: Sequence[float] | dict[str, Sequence[float]], title: str = "training loss",
               smooth: int = 1) -> plt.Figure:
    """Loss against step; a dict draws one curve per key. `smooth` > 1 applies a running mean."""
    series = losses if isinstance(losses, dict) else {"loss": losses}
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, values in series.items():
        values = np.asarray(values, dtype=np.float64)
        if smooth > 1 and len(values) >= smooth:
            values = np.convolve(values, np.ones(smooth) / smooth, mode="valid")
        ax.plot(values, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    return fig


def matrix(values: torch.Tensor | np.ndarray, row_labels: Sequence[str] | None = None,
           col_labels: Sequence[str] | None = None, title: str = "", cmap: str = "viridis",
           annotate: bool = False, ax: plt.Axes | None = None) -> plt.Figure:
    """A heat map of a 2-D matrix (similarities, attention, confusion) with optional tick labels and values."""
    values = values.detach().float().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"matrix() draws 2-D arrays, got shape {values.shape}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(0.5 + 0.4 * values.shape[1], 0.5 + 0.4 * values.shape[0]))
    else:
        fig = ax.figure
    im = ax.imshow(values, cmap=cmap)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if row_labels is not None:
        ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    if col_labels is not None:
        ax.set_xticks(range(len(col_labels)), col_labels, fontsize=8, rotation=60, ha="right")
    if annotate:
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w")
    ax.set_title(title)
    fig.tight_layout()
    return fig


# The five components of a multimodal LLM (book §14.1.1), left to right along the data flow.
FIVE_COMPONENTS = (
    ("modality encoder", "모달리티 인코더", "e.g. CLIP ViT"),
    ("input projector", "입력 프로젝터", "linear / MLP"),
    ("LLM backbone", "LLM 백본", "e.g. Llama, SmolLM2"),
    ("output projector", "출력 프로젝터", "hidden state -> condition"),
    ("modality generator", "모달리티 생성기", "e.g. Stable Diffusion"),
)


def five_components(trained: Sequence[str] = ("input projector", "output projector"),
                    title: str = "A multimodal LLM: five components") -> plt.Figure:
    """Draw the five components as a flow, frozen ones in blue, trained ones in orange.

    `trained` names the components that learn; the default is the usual recipe (only the projectors).
    """
    unknown = set(trained) - {name for name, _, _ in FIVE_COMPONENTS}
    if unknown:
        raise ValueError(f"unknown component(s) {sorted(unknown)}; choose from {[c[0] for c in FIVE_COMPONENTS]}")
    has_korean = use_korean_font()
    fig, ax = plt.subplots(figsize=(13, 3.6))
    ax.set_xlim(-1.3, 2.3 * len(FIVE_COMPONENTS) + 0.3)
    ax.set_ylim(-1.6, 2.4)
    ax.axis("off")
    arrow = dict(arrowstyle="-|>", color="0.3", lw=1.5)
    for i, (name, korean, example) in enumerate(FIVE_COMPONENTS):
        x = 2.3 * i
        learns = name in trained
        box = plt.Rectangle((x, 0), 1.9, 1.4, facecolor="#f8b26a" if learns else "#a9cce3",
                            edgecolor="0.2", lw=1.2)
        ax.add_patch(box)
        ax.text(x + 0.95, 0.98, name, ha="center", va="center", fontsize=10, weight="bold")
        if has_korean:
            ax.text(x + 0.95, 0.66, korean, ha="center", va="center", fontsize=9)
        ax.text(x + 0.95, 0.3, example, ha="center", va="center", fontsize=8, style="italic", color="0.25")
        ax.text(x + 0.95, 1.6, "trained" if learns else "frozen", ha="center", fontsize=9,
                color="#c0392b" if learns else "#1f618d", weight="bold")
        if i:
            ax.annotate("", xy=(x, 0.7), xytext=(x - 0.4, 0.7), arrowprops=arrow)
    llm_x = 2.3 * 2 + 0.95
    ax.annotate("", xy=(-0.02, 0.7), xytext=(-1.0, 0.7), arrowprops=arrow)
    ax.text(-1.15, 0.7, "image", ha="right", va="center", fontsize=9)
    ax.annotate("", xy=(llm_x, 0), xytext=(llm_x, -0.9), arrowprops=arrow)
    ax.text(llm_x, -1.1, "text prompt (tokens)", ha="center", va="top", fontsize=9)
    ax.annotate("", xy=(llm_x + 1.6, -0.9), xytext=(llm_x + 0.6, 0), arrowprops=arrow)
    ax.text(llm_x + 1.7, -1.1, "text answer", ha="center", va="top", fontsize=9)
    end = 2.3 * (len(FIVE_COMPONENTS) - 1) + 1.9
    ax.annotate("", xy=(end + 0.45, 0.7), xytext=(end, 0.7), arrowprops=arrow)
    ax.text(end + 0.5, 0.7, "image", ha="left", va="center", fontsize=9)
    ax.text(1.0, -1.1, "understanding: encoder -> projector -> LLM", ha="center", va="top", fontsize=8, color="0.35")
    ax.text(9.2, -1.1, "generation: LLM -> projector -> generator", ha="center", va="top", fontsize=8, color="0.35")
    ax.set_title(title)
    fig.tight_layout()
    return fig
