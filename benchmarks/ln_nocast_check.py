"""Does a LayerNorm run outside autocast (a bf16 input meeting float32 γ/β in one kernel) compute what the shipped
dtype-keeping LayerNorm computes under bf16 autocast (float32 norm, cast back)? Output, input gradient and γ/β
gradients compared on the GPU for the two towers' shapes (ViT-B/32: 50 × 768, text: 77 × 512) and a small one.

    python benchmarks/ln_nocast_check.py          (a CUDA GPU; prints one line per shape)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minimal.transformer import LayerNorm


def norm_and_grads(ln: LayerNorm, x0: torch.Tensor, g: torch.Tensor, outside_autocast: bool):
    """(output, d input, d γ, d β) of `ln` at `x0` for the upstream gradient `g`, under bf16 autocast."""
    x = x0.clone().requires_grad_(True)
    ln.zero_grad()
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        if outside_autocast:
            with torch.autocast(x.device.type, enabled=False):
                y = F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)
        else:
            y = ln(x)
    y.backward(g)
    return y.detach(), x.grad, ln.weight.grad.clone(), ln.bias.grad.clone()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def main(device: str = "cuda") -> None:
    torch.manual_seed(0)
    for D, shape in ((768, (256, 50)), (512, (256, 77)), (64, (3, 5))):
        ln = LayerNorm(D).to(device)
        with torch.no_grad():
            ln.weight.normal_(1, 0.2)
            ln.bias.normal_(0, 0.2)
        x0 = (torch.randn(*shape, D, device=device) * 3 + 1).bfloat16()
        g = torch.randn(*shape, D, device=device).bfloat16()
        shipped = norm_and_grads(ln, x0, g, outside_autocast=False)
        direct = norm_and_grads(ln, x0, g, outside_autocast=True)
        print(f"D={D}: dtypes out {direct[0].dtype}, dx {direct[1].dtype}, dγ {direct[2].dtype} | "
              + ", ".join(f"{name} max|Δ| {max_diff(a, b):.3g} (max {float(a.float().abs().max()):.3g})"
                          for name, a, b in zip(("out", "dx", "dγ", "dβ"), shipped, direct, strict=True)))


if __name__ == "__main__":
    main("cuda" if torch.cuda.is_available() else "cpu")
