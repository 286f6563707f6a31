"""The CLIP loss: equality with HF, its edge cases, and the distributed form under 2 gloo processes."""

from __future__ import annotations

import math
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP
from transformers import CLIPConfig, CLIPModel

from minimal.losses import LOGIT_SCALE_INIT, LOGIT_SCALE_MAX, clip_logits, clip_loss, clip_loss_distributed


def test_equals_hf_clip_loss():
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=8),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=8, patch_size=4),
        projection_dim=12,
    )
    hf = CLIPModel(cfg).eval()
    with torch.no_grad():
        hf.logit_scale.fill_(1.7)
    ids = torch.randint(3, 50, (5, 8))
    pixels = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        out = hf(input_ids=ids, pixel_values=pixels, return_loss=True)
        ours = clip_loss(out.image_embeds, out.text_embeds, hf.logit_scale)
        logits = clip_logits(out.image_embeds, out.text_embeds, hf.logit_scale)
    assert abs(ours.item() - out.loss.item()) < 1e-6
    assert torch.allclose(logits, out.logits_per_image, atol=1e-6)


def test_random_inputs_match_formula_and_init():
    torch.manual_seed(1)
    img, txt = torch.randn(7, 4), torch.randn(7, 4)
    scale = torch.tensor(LOGIT_SCALE_INIT)
    i, t = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
    logits = math.exp(LOGIT_SCALE_INIT) * i @ t.T
    lab = torch.arange(7)
    want = (torch.nn.functional.cross_entropy(logits, lab) + torch.nn.functional.cross_entropy(logits.T, lab)) / 2
    assert abs(clip_loss(img, txt, scale).item() - want.item()) < 1e-6
    assert abs(LOGIT_SCALE_INIT - math.log(1 / 0.07)) < 1e-12


def test_logit_scale_is_clamped_at_ln100():
    torch.manual_seed(2)
    img, txt = torch.randn(4, 3), torch.randn(4, 3)
    scale = torch.tensor(9.0, requires_grad=True)
    assert torch.allclose(clip_loss(img, txt, scale), clip_loss(img, txt, torch.tensor(LOGIT_SCALE_MAX)))
    clip_loss(img, txt, scale).backward()
    assert scale.grad.item() == 0.0  # above the clamp the temperature stops moving


def test_batch_of_one_is_defined_and_zero():
    img = torch.randn(1, 8, requires_grad=True)
    loss = clip_loss(img, torch.randn(1, 8), torch.tensor(LOGIT_SCALE_INIT))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(img.grad == 0)


@pytest.mark.parametrize("bad, match", [
    ((torch.randn(3, 4), torch.randn(2, 4)), "batch sizes differ"),
    ((torch.randn(3, 4), torch.randn(3, 5)), "embedding sizes differ"),
    ((torch.randn(0, 4), torch.randn(0, 4)), "empty batch"),
    ((torch.randn(3), torch.randn(3)), r"\(batch, dim\)"),
])
def test_bad_shapes(bad, match):
    with pytest.raises(ValueError, match=match):
        clip_loss(*bad, 1.0)


def test_nan_features_raise():
    img = torch.randn(3, 4)
    img[1, 2] = float("nan")
    with pytest.raises(ValueError, match="image_embeds contains NaN"):
        clip_loss(img, torch.randn(3, 4), 1.0)
    with pytest.raises(ValueError, match="text_embeds contains NaN"):
        clip_loss(torch.randn(3, 4), torch.full((3, 4), float("inf")), 1.0)


def test_distributed_form_without_process_group_is_plain_loss():
    img, txt = torch.randn(5, 4), torch.randn(5, 4)
    assert torch.equal(clip_loss_distributed(img, txt, 2.0), clip_loss(img, txt, 2.0))


# ---- two gloo processes on CPU -------------------------------------------------------------------------------

WORLD, B_LOCAL, D_IN, E = 2, 3, 6, 4


class _Towers(torch.nn.Module):
    """Two linear 'towers' + logit_scale: enough to test every gradient path of the loss."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.image = torch.nn.Linear(D_IN, E)
        self.text = torch.nn.Linear(D_IN + 1, E)
        self.logit_scale = torch.nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

    def forward(self, x, y):
        return self.image(x), self.text(y), self.logit_scale


def _global_batch():
    g = torch.Generator().manual_seed(123)
    return (torch.randn(WORLD * B_LOCAL, D_IN, generator=g, dtype=torch.float64),
            torch.randn(WORLD * B_LOCAL, D_IN + 1, generator=g, dtype=torch.float64))


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        x, y = _global_batch()
        mine = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)
        results = {}
        for local in (False, True):
            model = DDP(_Towers().double())
            img, txt, scale = model(x[mine], y[mine])
            loss = clip_loss_distributed(img, txt, scale, local_loss=local)
            loss.backward()
            mean_loss = loss.detach().clone()
            dist.all_reduce(mean_loss)
            results[local] = {"loss": mean_loss / WORLD,
                              **{n: p.grad.clone() for n, p in model.module.named_parameters()}}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()   # both ranks done before either tears down (else gloo may SIGABRT the slower one)
    finally:
        dist.destroy_process_group()


def test_gathered_loss_and_grads_equal_single_process_under_two_gloo_ranks():
    x, y = _global_batch()
    ref_model = _Towers().double()
    img, txt, scale = ref_model(x, y)
    ref_loss = clip_loss(img, txt, scale)
    ref_loss.backward()
    ref = {n: p.grad for n, p in ref_model.named_parameters()}

    with tempfile.TemporaryDirectory() as tmp:
        # forked, not spawned: the ranks inherit this process's imports instead of importing torch again (~4 s each)
        mp.start_processes(_worker, args=(os.path.join(tmp, "rendezvous"), tmp), nprocs=WORLD, join=True,
                           start_method="fork")
        for rank in range(WORLD):
            results = torch.load(os.path.join(tmp, f"rank{rank}.pt"))
            for local, res in results.items():
                assert abs(res["loss"].item() - ref_loss.item()) < 1e-6, (rank, local)
                for name, grad in ref.items():
                    assert torch.allclose(res[name], grad, atol=1e-6, rtol=0), (rank, local, name)
