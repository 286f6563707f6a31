"""Parameter accounting: how big is each component of a multimodal LLM, and which part is trained?

The book says a multimodal LLM trains only its projectors, "1–2 % of the parameters". Chapter 01 checks that
claim on real architectures (built on the `meta` device: shapes without memory, so a 7-billion-parameter model
costs nothing to instantiate) and chapter 08 on our own mini MLLM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from torch import nn

from .i18n import tr

M = TypeVar("M", bound=nn.Module)


def freeze(module: M) -> M:
    """Freeze in place: no parameter receives a gradient, and eval mode (no dropout) — a frozen component (얼음,
    "ice" in the book's figure). Returns the module."""
    return module.requires_grad_(False).eval()


def count_parameters(module: nn.Module | None, trainable_only: bool = False) -> int:
    """Number of scalar parameters in `module` (0 for None). Shared (tied) tensors are counted once."""
    if module is None:
        return 0
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


@dataclass(frozen=True)
class Row:
    component: str  # the chapter's vocabulary: modality encoder, input projector, LLM backbone, …
    parameters: int
    trained: bool


class ParameterTable:
    """Parameters per component and the trained fraction, printable as a Markdown table.

    >>> table = ParameterTable("LLaVA-1.5-7B")
    >>> table.add("modality encoder", vision_tower, trained=False)
    >>> table.add("input projector", projector, trained=True)
    >>> print(table)
    """

    def __init__(self, model_name: str):
        self.model_name = model_name
        self.rows: list[Row] = []

    def add(self, component: str, module_or_count: nn.Module | int, trained: bool) -> ParameterTable:
        count = module_or_count if isinstance(module_or_count, int) else count_parameters(module_or_count)
        if count < 0:
            raise ValueError(f"{component}: a parameter count cannot be negative ({count})")
        self.rows.append(Row(component, count, trained))
        return self

    @property
    def total(self) -> int:
        return sum(r.parameters for r in self.rows)

    @property
    def trained(self) -> int:
        return sum(r.parameters for r in self.rows if r.trained)

    @property
    def trained_fraction(self) -> float:
        if self.total == 0:
            raise ValueError(f"{self.model_name}: the table is empty")
        return self.trained / self.total

    def markdown(self) -> str:
        """The table as Markdown, its words in the chapter's language (`minimal.i18n`)."""
        header = tr("| component | parameters | share | trained? |")
        lines = [f"**{self.model_name}**", "", header, "|---|---:|---:|:---:|"]
        for r in self.rows:
            lines.append(f"| {r.component} | {human(r.parameters)} | {r.parameters / self.total:.2%} | "
                         f"{tr('trained') if r.trained else tr('frozen')} |")
        lines.append(tr("| **total** | **{total}** | 100% | **{fraction:.3%} trained** |", total=human(self.total),
                        fraction=self.trained_fraction))
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:  # Jupyter shows the table rendered
        return self.markdown()

    def __str__(self) -> str:
        return self.markdown()


def human(n: int) -> str:
    """7_063_427_072 → '7.063 B'; 20_979_712 → '20.98 M'; 74_304 → '74.3 k'."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            digits = 3 if unit == "B" else 2 if unit == "M" else 1
            return f"{n / scale:.{digits}f} {unit}"
    return str(n)
