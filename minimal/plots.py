"""The pictures every chapter draws: galleries, grids, matrices and curves.

Plot helpers return the matplotlib Figure so a notebook can show it, save it, or test it. Korean text needs a font
with Hangul glyphs; `use_korean_font()` registers NanumGothic (shipped by the `koreanize-matplotlib` wheel, OFL
licence) without importing that package, whose import-time code breaks on newer Pythons.
"""

from __future__ import annotations

import importlib.util
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import font_manager
from PIL import Image

from .i18n import language, tr

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
    # DejaVu Sans first, NanumGothic as the fallback for Hangul: NanumGothic lacks the minus sign (U+2212) that
    # log-scale tick labels draw through mathtext, and mathtext uses only the first family (no fallback).
    plt.rcParams["font.family"] = ["DejaVu Sans", KOREAN_FONT]
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
               title_size: int = 8, suptitle: str | None = None,
               title_colours: Sequence[str] | None = None) -> plt.Figure:
    """A gallery: images in a grid with an optional title (caption, label, answer…) under each; `title_colours`
    (one matplotlib colour per image) colours the titles, e.g. green for a right answer and red for a wrong one."""
    if len(images) == 0:
        raise ValueError("image_grid needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(images)} images but {len(titles)} titles")
    if title_colours is not None and len(title_colours) != len(images):
        raise ValueError(f"{len(images)} images but {len(title_colours)} title colours")
    cols = min(cols, len(images))
    rows = -(-len(images) // cols)
    # Wrap each caption to the image's width so neighbours never overlap (Hangul glyphs are about twice as wide).
    width = max(8, int(size * 13 * 8 / title_size))
    wrapped = [_wrap(str(t), width) for t in titles] if titles is not None else None
    lines = max((w.count("\n") + 1 for w in wrapped), default=0) if wrapped else 0
    title_height = lines * title_size * 1.4 / 72  # inches
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * (size + title_height) + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, image in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(as_image_array(image), interpolation="nearest")
        if wrapped is not None:
            colour = {"color": title_colours[i]} if title_colours is not None else {}
            ax.set_title(wrapped[i], fontsize=title_size, **colour)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def _figure_of(ax: plt.Axes) -> plt.Figure:
    """The whole figure `ax` is drawn in (also when it sits in a sub-figure)."""
    fig = ax.get_figure(root=True)
    if fig is None:
        raise ValueError("ax is not part of a figure: draw into an Axes made by plt.subplots or fig.add_subplot")
    return fig


def _wrap(text: str, width: int) -> str:
    """textwrap.fill for each line, with half the width for lines containing Hangul (double-width glyphs)."""
    out = []
    for line in text.splitlines() or [""]:
        wide = any("\uac00" <= ch <= "\ud7a3" for ch in line)
        out.append(textwrap.fill(line, max(4, width // 2 if wide else width)))
    return "\n".join(out)


def loss_curve(losses: Sequence[float] | dict[str, Sequence[float]], title: str | None = None,
               smooth: int = 1) -> plt.Figure:
    """Loss against step; a dict draws one curve per key. `smooth` > 1 applies a running mean."""
    series = losses if isinstance(losses, dict) else {"loss": losses}
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, raw in series.items():
        values = np.asarray(raw, dtype=np.float64)
        if smooth > 1 and len(values) >= smooth:
            values = np.convolve(values, np.ones(smooth) / smooth, mode="valid")
        ax.plot(values, label=name)
    ax.set_xlabel(tr("step"))
    ax.set_ylabel(tr("loss"))
    ax.set_title(tr("training loss") if title is None else title)
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
    fig: plt.Figure
    if ax is None:   # annotated cells need room for their numbers
        cell = 0.7 if annotate else 0.4
        fig, ax = plt.subplots(figsize=(2.0 + cell * values.shape[1], 1.0 + cell * values.shape[0]))
    else:
        fig = _figure_of(ax)
    im = ax.imshow(values, cmap=cmap)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if row_labels is not None:
        ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    if col_labels is not None:
        ax.set_xticks(range(len(col_labels)), col_labels, fontsize=8, rotation=60, ha="right")
    if annotate:   # dark text on the light end of the colour map, light text on the dark end
        middle = (values.max() + values.min()) / 2
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="k" if v > middle else "w")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def grouped_bars(groups: Sequence[str], series: dict[str, Sequence[float]], title: str = "",
                 ylabel: str | None = None, errors: dict[str, Any] | None = None,
                 line: float | None = None, ax: plt.Axes | None = None) -> plt.Figure:
    """Bars grouped along x: one group per name in `groups` (G), one bar per key of `series` (each G values).
    `errors` (same keys) draws whiskers: G half-widths, or a (2, G) pair of lengths below and above each bar (an
    asymmetric interval); `line` a dashed horizontal target (e.g. 0.9). The legend sits under the axes."""
    if not series or any(len(v) != len(groups) for v in series.values()):
        raise ValueError(f"every series needs one value per group ({len(groups)})")
    fig: plt.Figure
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.5 + 0.5 * len(groups) * len(series), 3.8))
    else:
        fig = _figure_of(ax)
    width = 0.8 / len(series)
    x = np.arange(len(groups))
    for k, (name, values) in enumerate(series.items()):
        err = None if errors is None or name not in errors else np.asarray(errors[name], dtype=np.float64)
        ax.bar(x + (k - (len(series) - 1) / 2) * width, np.asarray(values, dtype=np.float64), width * 0.92,
               yerr=err, capsize=2, error_kw={"lw": 0.8}, label=name)
    if line is not None:
        ax.axhline(line, color="k", ls="--", lw=1, label=f"{line:g}")
    ax.set_xticks(x, list(groups))
    ax.set_ylabel(tr("accuracy") if ylabel is None else ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=len(series) + (line is not None),
              frameon=False)
    fig.tight_layout()
    return fig


def attention_overlay(image: Image.Image | torch.Tensor | np.ndarray, weights: torch.Tensor | np.ndarray,
                      title: str = "", ax: plt.Axes | None = None, cmap: str = "autumn") -> plt.Figure:
    """An image (H, W) with a patch-grid heat map on top: `weights` (h, w), e.g. attention to the 4×4 patches of a
    32-pixel image. Each cell covers its H/h × W/w pixels (block upsampling: a patch is one value), coloured and made
    opaque in proportion to its weight relative to the largest, so lightly weighted patches keep showing the image;
    the patch grid is drawn in thin lines."""
    w = weights.detach().float().cpu().numpy() if isinstance(weights, torch.Tensor) else np.asarray(weights, float)
    if w.ndim != 2:
        raise ValueError(f"weights must be a 2-D patch grid (h, w), got shape {w.shape}")
    array = as_image_array(image)
    height, width = array.shape[:2]
    fig: plt.Figure
    if ax is None:
        fig, ax = plt.subplots(figsize=(2.4, 2.6))
    else:
        fig = _figure_of(ax)
    rel = w / max(float(w.max()), 1e-12)
    rgba = plt.get_cmap(cmap)(1 - rel)          # the strongest patch darkest red
    rgba[..., 3] = 0.85 * rel
    ax.imshow(array, interpolation="nearest", extent=(0, width, height, 0))
    ax.imshow(rgba, interpolation="nearest", extent=(0, width, height, 0))
    for k in range(1, w.shape[1]):
        ax.axvline(k * width / w.shape[1], color="0.5", lw=0.4)
    for k in range(1, w.shape[0]):
        ax.axhline(k * height / w.shape[0], color="0.5", lw=0.4)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    return fig


# The five components of a multimodal LLM (book §14.1.1), left to right along the data flow: English, Korean.
FIVE_COMPONENTS = (
    ("modality encoder", "모달리티 인코더"),
    ("input projector", "입력 프로젝터"),
    ("LLM backbone", "LLM 백본"),
    ("output projector", "출력 프로젝터"),
    ("modality generator", "모달리티 생성기"),
)


def five_components(trained: Sequence[str] = ("input projector", "output projector"),
                    title: str | None = None) -> plt.Figure:
    """Draw the five components as a flow, frozen ones in blue, trained ones in orange; each box names its
    component in the chapter's language, with the other language's name under it (Korean only if a font has it).

    `trained` names (in English) the components that learn; the default is the usual recipe (only the projectors).
    """
    unknown = set(trained) - {name for name, _ in FIVE_COMPONENTS}
    if unknown:
        raise ValueError(f"unknown component(s) {sorted(unknown)}; choose from {[c[0] for c in FIVE_COMPONENTS]}")
    has_korean = use_korean_font()
    examples = (tr("e.g. CLIP ViT"), tr("linear / MLP"), tr("e.g. Llama, SmolLM2"), tr("hidden state -> condition"),
                tr("e.g. Stable Diffusion"))
    fig, ax = plt.subplots(figsize=(13, 3.6))
    ax.set_xlim(-1.3, 2.3 * len(FIVE_COMPONENTS) + 0.3)
    ax.set_ylim(-1.6, 2.4)
    ax.axis("off")
    arrow = dict(arrowstyle="-|>", color="0.3", lw=1.5)
    for i, ((name, korean), example) in enumerate(zip(FIVE_COMPONENTS, examples, strict=True)):
        x = 2.3 * i
        learns = name in trained
        box = plt.Rectangle((x, 0), 1.9, 1.4, facecolor="#f8b26a" if learns else "#a9cce3",
                            edgecolor="0.2", lw=1.2)
        ax.add_patch(box)
        first, second = (name, korean if has_korean else "") if language() == "en" else (korean, name)
        ax.text(x + 0.95, 0.98, first, ha="center", va="center", fontsize=10, weight="bold")
        ax.text(x + 0.95, 0.66, second, ha="center", va="center", fontsize=9)
        ax.text(x + 0.95, 0.3, example, ha="center", va="center", fontsize=8, style="italic", color="0.25")
        ax.text(x + 0.95, 1.6, tr("trained") if learns else tr("frozen"), ha="center", fontsize=9,
                color="#c0392b" if learns else "#1f618d", weight="bold")
        if i:
            ax.annotate("", xy=(x, 0.7), xytext=(x - 0.4, 0.7), arrowprops=arrow)
    llm_x = 2.3 * 2 + 0.95
    ax.annotate("", xy=(-0.02, 0.7), xytext=(-1.0, 0.7), arrowprops=arrow)
    ax.text(-1.15, 0.7, tr("image"), ha="right", va="center", fontsize=9)
    ax.annotate("", xy=(llm_x, 0), xytext=(llm_x, -0.9), arrowprops=arrow)
    ax.text(llm_x, -1.1, tr("text prompt (tokens)"), ha="center", va="top", fontsize=9)
    ax.annotate("", xy=(llm_x + 1.6, -0.9), xytext=(llm_x + 0.6, 0), arrowprops=arrow)
    ax.text(llm_x + 1.7, -1.1, tr("text answer"), ha="center", va="top", fontsize=9)
    end = 2.3 * (len(FIVE_COMPONENTS) - 1) + 1.9
    ax.annotate("", xy=(end + 0.45, 0.7), xytext=(end, 0.7), arrowprops=arrow)
    ax.text(end + 0.5, 0.7, tr("image"), ha="left", va="center", fontsize=9)
    for x, flow in ((1.0, tr("understanding: encoder -> projector -> LLM")),
                    (9.2, tr("generation: LLM -> projector -> generator"))):
        ax.text(x, -1.1, flow, ha="center", va="top", fontsize=8, color="0.35")
    ax.set_title(tr("A multimodal LLM: five components") if title is None else title)
    fig.tight_layout()
    return fig


# ---- zero-shot and retrieval (chapters 05-07) -------------------------------------------------------------------

def zero_shot_bars(image, labels: Sequence[str], probs: torch.Tensor | np.ndarray | Sequence[float],
                   title: str = "", top: int = 8) -> plt.Figure:
    """An image next to a horizontal bar chart of its class probabilities (the `top` largest, best on top)."""
    probs = np.asarray(probs.detach().cpu() if isinstance(probs, torch.Tensor) else probs, dtype=np.float64)
    if probs.ndim != 1 or len(probs) != len(labels):
        raise ValueError(f"{len(labels)} labels but probabilities of shape {probs.shape}")
    order = np.argsort(-probs)[:top][::-1]
    fig, (ax_img, ax_bar) = plt.subplots(1, 2, figsize=(8, 0.4 * len(order) + 1.6),
                                         gridspec_kw={"width_ratios": [1, 1.6]})
    ax_img.imshow(as_image_array(image), interpolation="nearest")
    ax_img.axis("off")
    ax_bar.barh(range(len(order)), probs[order], color=["#c0392b" if i == order[-1] else "#5d8aa8" for i in order])
    ax_bar.set_yticks(range(len(order)), [labels[i] for i in order], fontsize=9)
    ax_bar.set_xlim(0, 1)
    ax_bar.set_xlabel(tr("probability"))
    for y, i in enumerate(order):
        ax_bar.text(min(probs[i] + 0.01, 0.85), y, f"{probs[i]:.2f}", va="center", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def score_differences(names: Sequence[str], deltas: Sequence[float], title: str = "",
                      xlabel: str | None = None) -> plt.Figure:
    """The CLIP paper's comparison figure: one horizontal bar per dataset, sorted, green where the first method
    wins (delta > 0) and blue where it loses, each bar labelled with its value."""
    if len(names) != len(deltas) or len(names) == 0:
        raise ValueError(f"need one delta per name, got {len(names)} names and {len(deltas)} deltas")
    d_all = np.asarray(deltas, dtype=np.float64)
    order = np.argsort(d_all)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.4))
    colours = ["#2e8b57" if d_all[i] > 0 else "#4169e1" for i in order]
    ax.barh(range(len(order)), d_all[order], color=colours)
    ax.set_yticks(range(len(order)), [names[i] for i in order])
    ax.axvline(0, color="0.2", lw=0.8)
    span = max(1.0, float(np.abs(d_all).max()))
    ax.set_xlim(-1.25 * span, 1.25 * span)
    for y, i in enumerate(order):
        d = d_all[i]
        ax.text(d + (0.02 if d >= 0 else -0.02) * span, y, f"{d:+.1f}", va="center",
                ha="left" if d >= 0 else "right", fontsize=9)
    ax.set_xlabel(tr("zero-shot minus supervised (accuracy points)") if xlabel is None else xlabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def embedding_map(points: torch.Tensor | np.ndarray, groups: Sequence[str], title: str = "",
                  markers: Sequence[str] | None = None, colours: dict[str, str] | None = None,
                  ax: plt.Axes | None = None) -> plt.Figure:
    """A 2-D scatter of embeddings (N, 2) (e.g. after PCA), coloured by `groups` (N labels, one colour per distinct
    value; `colours` may fix them) and optionally with a marker per point (`markers`, N matplotlib markers)."""
    points = points.detach().float().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) != len(groups):
        raise ValueError(f"need points (N, 2) and N groups, got {points.shape} and {len(groups)}")
    names = list(dict.fromkeys(groups))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    palette: dict[str, Any] = dict(colours) if colours else {g: cmap(i % cmap.N) for i, g in enumerate(names)}
    fig: plt.Figure
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 5))
    else:
        fig = _figure_of(ax)
    group_arr = np.asarray(groups)
    marker_arr = np.asarray(markers) if markers is not None else np.full(len(points), "o")
    for g in names:
        for m in dict.fromkeys(marker_arr[group_arr == g]):
            sel = (group_arr == g) & (marker_arr == m)
            ax.scatter(points[sel, 0], points[sel, 1], s=14 if m == "o" else 60, marker=m, color=palette[g],
                       alpha=0.75 if m == "o" else 1.0, edgecolors="none" if m == "o" else "k",
                       label=g if m == marker_arr[group_arr == g][0] else None)
    ax.legend(fontsize=8, markerscale=1.2, loc="best", ncols=2 if len(names) > 6 else 1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    fig.tight_layout()
    return fig


def stacked_barh(rows: dict[str, dict[str, float]], title: str = "", xlabel: str = "",
                 markers: dict[str, dict[str, float]] | None = None, caption: str = "") -> plt.Figure:
    """Horizontal stacked bars, first row on top: `rows` maps a bar's label to its parts (part name -> length, e.g.
    ms per step by kernel kind); a part keeps one colour across bars, the largest in total leftmost. `markers` maps a
    marker's name to {bar label: x} (e.g. a measured total beside the sum of the parts); `caption`: a line below."""
    totals: dict[str, float] = {}
    for segments in rows.values():
        for part, length in segments.items():
            totals[part] = totals.get(part, 0.0) + length
    parts = sorted(totals, key=lambda part: -totals[part])
    colours = plt.get_cmap("tab10" if len(parts) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(rows) + 1.9))
    y = np.arange(len(rows))
    left = np.zeros(len(rows))
    for k, part in enumerate(parts):
        width = np.array([segments.get(part, 0.0) for segments in rows.values()], dtype=np.float64)
        ax.barh(y, width, left=left, height=0.7, color=colours(k), label=part)
        left += width
    for (name, xs), (shape, colour) in zip((markers or {}).items(), [("|", "k"), ("D", "#c0392b"), ("o", "0.4")],
                                          strict=False):
        at = [(i, xs[label]) for i, label in enumerate(rows) if label in xs]
        ax.scatter([x for _, x in at], [i for i, _ in at], marker=shape, color=colour, s=160 if shape == "|" else 30,
                   linewidths=2, zorder=3, label=name)
    ax.set_yticks(y, list(rows))
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if caption:
        fig.text(0.01, 0.01, caption, fontsize=8, color="0.3", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.05 if caption else 0, 1, 1))
    return fig
