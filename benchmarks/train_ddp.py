"""Train CLIP with several processes: `torchrun` + DDP + the gathered contrastive loss (chapter 10).

    # 2 processes on a CPU (gloo), the tiny Shapes-world CLIP:
    torchrun --standalone --nproc_per_node 2 benchmarks/train_ddp.py --steps 30
    # every GPU of this machine (NCCL), ViT-B/32 on random data, throughput only:
    torchrun --standalone --nproc_per_node gpu benchmarks/train_ddp.py --config b32 --synthetic --steps 40
    # scaling efficiency: the same per-GPU batch (512, the recommended one) on one GPU, then on two with
    # gradient_as_bucket_view (`--ddp view`); the second JSON compares itself
    CUDA_VISIBLE_DEVICES=0 torchrun --standalone --nproc_per_node 1 benchmarks/train_ddp.py --config b32 \
        --synthetic --batch 512 --steps 60 --timed-from 20 --out one.json
    torchrun --standalone --nproc_per_node 2 benchmarks/train_ddp.py --config b32 --synthetic --batch 1024 \
        --ddp view --steps 60 --timed-from 20 --single one.json --out two.json
    # two machines: run this on each, with --node_rank 0 / 1 and the first machine's address
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 ...

Each process builds the same model (same seed), takes its own slice of every global batch (`--batch` is the
global batch, split evenly), and trains through `minimal.train.train`, which sets up the process group and wraps
the model in DistributedDataParallel. The loss is `losses.clip_loss_distributed`: every process contrasts its
images with the captions of *all* processes (`--local-loss` keeps only its own rows of the logits).

Measured, eager, samples/s per GPU on 2 GPUs over one GPU's (1-GPU and 2-GPU runs in the same device call):
  - benchmarks/results/2xh200_ddp_2026-11-27.json, 2 H200s (NVLink): 512 per GPU 95.6 % with `--ddp view`,
    92.9 % default; 256 per GPU 84.1 % with `--ddp view`, 76.2 % default. The 85 % bar is met at 512 per GPU.
  - benchmarks/results/2xh100_ddp_2026-11-27.json, 2 H100s (NVLink), 256 per GPU, default DDP: 77-81 % eager,
    65 % compiled (`--compile`; not re-measured on the H200s).
The eager step is host-bound (kernel launches), and DDP adds host work per parameter (autograd hooks, a copy of
each gradient into its bucket): on the H200s 16-26 ms per step at 256 per GPU, 5-8 ms at 512 (longer GPU work).
2026-11-30, 2 H200s, 256 per GPU, `--ddp view` (benchmarks/results/2xh200_ddp_2026-11-30.json, each with its
1-GPU baseline in the same call): the shipped loop 73.0 % (1 GPU 3,716/s, 2 GPUs 2,714/s per GPU) — down from 84 %
since the input checks that read values back were added; `--loop lean` (no host read in the step) 84.4 % (4,019/s,
3,391/s per GPU); `--loop lean --compile` 56.2 % (4,667/s, 2,623/s per GPU). The 90 % bar at 256 is not met.
2026-12-01: `train()` reads its losses back every 50 steps (no per-step wait), and this script times it without
`on_step`; on one H200 the shipped loop took 67.7 ms a step against the lean loop's 60.2 ms (single timings, cause
not profiled); the 2-GPU runs were not made (benchmarks/results/h200_train_loop_2026-12-01.json).
Recommended launch: 512 samples per GPU (`--batch` = 512 x GPUs) with `--ddp view` (gradient_as_bucket_view: no
gradient copies, same losses as default DDP). `--ddp bf16` did not help (the NVLink all-reduce is not the
limit); `static_graph=True` was faster but broke the gradient averaging (ranks diverged), so it is not offered.

Rank 0 prints one JSON object (loss at the start and end, samples/s measured by every rank over the same steps,
the device's name; `--out` also writes it). `--single ONE.json` (a 1-process run of the same per-process batch)
adds the scaling efficiency: samples/s per process here over samples/s there. `--save-dir D` makes every rank
write its final weights to D/rank{r}.safetensors, so a test can check that the ranks agree.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

import minimal.clip
import minimal.losses
import minimal.weights
from minimal import images, shapes
from minimal.clip import CLIP, CLIPConfig
from minimal.losses import clip_loss_distributed
from minimal.text import TextConfig
from minimal.tokenizer import Tokenizer, shapes_tokenizer
from minimal.train import _setup_distributed, _wrap, finish_distributed, lr_at, make_optimizer, to_device, train, world
from minimal.vit import ViTConfig
from minimal.weights import save_safetensors


def tiny_config(vocab_size: int, eos: int, pad: int) -> CLIPConfig:
    """A CLIP small enough that a few steps on two CPU processes take seconds."""
    return CLIPConfig(vision=ViTConfig(image_size=32, patch_size=8, width=64, layers=2, heads=2, mlp_hidden=256),
                      text=TextConfig(vocab_size=vocab_size, context_length=48, width=64, layers=2, heads=2,
                                      mlp_hidden=256, eos_token_id=eos, pad_token_id=pad),
                      embed_dim=32)


def b32_config() -> CLIPConfig:
    """OpenAI's ViT-B/32 CLIP (224 px, 12 + 12 layers, 49,408-token vocabulary, 512-d shared space)."""
    return CLIPConfig(vision=ViTConfig(image_size=224, patch_size=32, width=768, layers=12, heads=12,
                                       mlp_hidden=3072),
                      text=TextConfig(vocab_size=49408, context_length=77, width=512, layers=12, heads=8,
                                      mlp_hidden=2048, eos_token_id=49407, pad_token_id=0),
                      embed_dim=512)


def shapes_batches(tok: Tokenizer, global_batch: int, seed: int):
    """`batches(step)` for the train loop: the step's global batch of Shapes-world pairs, this rank's slice.

    The global batch depends only on (seed, step), so the union of the ranks' slices is the batch one process
    would see — the property that makes DDP + gathered loss equal to single-process training.
    """
    def batches(step: int) -> dict:
        rank, size = world()
        if global_batch % size:
            raise ValueError(f"--batch {global_batch} is not divisible by the {size} processes")
        rng = random.Random(seed * 1_000_003 + step)
        scenes = [shapes.sample_scene(rng) for _ in range(global_batch)]
        captions = [shapes.caption(s, rng) for s in scenes]
        pixels = images.normalize(shapes.render_batch(scenes, 32, rng_or_seed=f"{seed}-{step}"))  # ~50 us an image
        mine = slice(rank * global_batch // size, (rank + 1) * global_batch // size)
        return {"pixels": pixels[mine], "ids": tok(captions[mine])}
    return batches


def synthetic_batches(cfg: CLIPConfig, local_batch: int, device: torch.device):
    """Random pixels and ids of the right shapes, made once on the device (to measure the step, not a loader:
    a ViT-B/32 batch of 256 images is 154 MB, whose copy from pageable host memory would take ~10 ms a step)."""
    cache = {}

    def batches(step: int) -> dict:
        if not cache:
            g = torch.Generator().manual_seed(world()[0])
            s, t = cfg.vision.image_size, cfg.text.context_length
            ids = torch.randint(1, cfg.text.vocab_size - 1, (local_batch, t), generator=g)
            ids[:, -1] = cfg.text.eos_token_id
            cache["batch"] = {"pixels": torch.randn(local_batch, 3, s, s, generator=g).to(device),
                              "ids": ids.to(device)}
        return cache["batch"]
    return batches


def device_of_this_process(name: str | None) -> torch.device:
    """The device `train` will pick: --device, else cuda:LOCAL_RANK when CUDA is available, else the CPU."""
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def make_loss(local_loss: bool):
    def loss_fn(net, batch):
        # The forward goes through the DDP wrapper (`net`), so DDP knows which gradients to all-reduce.
        out = net(batch["pixels"], batch["ids"])
        model = getattr(net, "module", net)
        return clip_loss_distributed(out.image_embeds, out.text_embeds, model.logit_scale, local_loss=local_loss)
    return loss_fn


@contextmanager
def no_read_back(model: CLIP):
    """The model's input checks that read a value back to the host (pixels and features NaN/inf, ids min/max,
    finite logits) switched off, as they are inside torch.compile: `minimal.weights.can_read_back` says no."""
    mods = (minimal.weights, minimal.losses, minimal.clip)
    saved = [m.can_read_back for m in mods]
    for m in mods:
        m.can_read_back = lambda x: False
    model.text.check_ids = lambda ids: None
    try:
        yield
    finally:
        for m, f in zip(mods, saved, strict=True):
            m.can_read_back = f
        del model.text.check_ids


def lean_train(model, loss_fn, batches, steps: int, lr: float, warmup: int, weight_decay: float, betas, device,
               on_step, compile: bool, ddp_options: dict, adam: str) -> list[float]:
    """`minimal.train.train`'s step (DDP wrap, bf16 autocast, AdamW, warmup + cosine, clipping at 1.0) without a
    host read in the step: the loss is neither checked nor logged per step (each a wait for the GPU, the logging
    one also an all-reduce) — the losses stay on the GPU and are read, averaged over ranks and checked once at the
    end. No checkpoints, no resume (a throughput prototype: `--loop lean`)."""
    device = _setup_distributed(device)
    model.to(device).train()
    net = _wrap(model, device, world()[1], compile, ddp_options)
    groups = make_optimizer(model, lr, weight_decay, betas).param_groups
    opt = torch.optim.AdamW(groups, lr=lr, betas=betas, fused=adam == "fused", foreach=adam == "foreach")
    params = [p for g in opt.param_groups for p in g["params"]]
    losses = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup)
        batch = to_device(batches(step), device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_fn(net, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.detach().float())
        if on_step is not None:
            on_step(step + 1, float("nan"))
    history = torch.stack(losses)
    if world()[1] > 1:
        torch.distributed.all_reduce(history)
        history /= world()[1]
    if not bool(torch.isfinite(history).all()):
        raise FloatingPointError(f"the loss became NaN/inf during training: {history.tolist()}")
    return history.tolist()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=["tiny", "b32"], default="tiny")
    ap.add_argument("--synthetic", action="store_true", help="random data (throughput runs)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64, help="global batch (split over the processes)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--local-loss", action="store_true", help="each rank computes only its rows of the logits")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK when CUDA is available, else cpu")
    ap.add_argument("--timed-from", type=int, default=5, help="steps before this are warm-up for samples/s")
    ap.add_argument("--save-dir", default=None, help="every rank writes its final weights here")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU runs)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the DDP-wrapped model (train(compile=))")
    ap.add_argument("--single", default=None, help="JSON of a 1-process run: adds the scaling efficiency")
    ap.add_argument("--out", default=None, help="rank 0 also writes the JSON here")
    ap.add_argument("--ddp", default="", help="DDP options, comma list of: view (gradient_as_bucket_view), "
                    "bucketN (bucket_cap_mb=N), bf16 (bf16 gradient all-reduce, NCCL only)")
    ap.add_argument("--profile", default=None, help="rank 0 writes a torch.profiler table of 3 steps here")
    ap.add_argument("--loop", choices=["train", "lean"], default="train",
                    help="train: minimal.train.train (the shipped loop); lean: the same step with no host reads "
                         "(input checks that read back off, loss read once at the end; see lean_train)")
    ap.add_argument("--adam", choices=["foreach", "fused"], default="foreach", help="AdamW implementation (lean)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)  # the same initial weights in every process (DDP also broadcasts rank 0's)
    if args.config == "tiny":
        tok = shapes_tokenizer(n_scenes=300, context_length=48)  # deterministic: the same in every process
        cfg = tiny_config(tok.vocab_size, tok.eos_token_id, tok.pad_token_id)
    else:
        cfg = b32_config()
    model = CLIP(cfg)

    size = int(os.environ.get("WORLD_SIZE", "1"))
    device = device_of_this_process(args.device)
    if args.synthetic:
        batches = synthetic_batches(cfg, args.batch // size, device)
    else:
        batches = shapes_batches(tok, args.batch, args.seed)

    # The clock starts when the loop asks for the batch of step `timed_from` (after a wait for the GPU) and stops
    # when the loop returns: timed this way, the shipped loop needs no `on_step`, which would make it read every
    # loss back (see minimal.train._Losses). The profiler (`--profile`, rank 0) records the 3 steps before.
    stamps: list[float] = []
    untimed = batches

    def batches(step: int) -> dict:
        if step in (args.timed_from - 3, args.timed_from):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if prof is not None:
                prof.start() if step == args.timed_from - 3 else prof.stop()
            if step == args.timed_from:
                stamps.append(time.perf_counter())
        return untimed(step)

    ddp_options = {}
    for opt in filter(None, args.ddp.split(",")):
        if opt == "view":
            ddp_options["gradient_as_bucket_view"] = True
        elif opt == "bf16":
            ddp_options["bf16_grads"] = True
        elif opt.startswith("bucket"):
            ddp_options["bucket_cap_mb"] = float(opt[len("bucket"):])
        else:
            raise SystemExit(f"unknown --ddp option {opt!r}")
    prof = None
    if args.profile and int(os.environ.get("RANK", "0")) == 0:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as tprofile

        # steps timed_from-2 .. timed_from (just before the timed steps, so the timing is not disturbed)
        prof = tprofile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else []))

    if args.loop == "lean":
        with no_read_back(model):
            history = lean_train(model, make_loss(args.local_loss), batches, args.steps, args.lr,
                                 min(5, args.steps // 5), 0.1, (0.9, 0.98), device, None, args.compile,
                                 ddp_options, args.adam)
    else:
        history = train(model, make_loss(args.local_loss), batches, steps=args.steps, lr=args.lr,
                        warmup=min(5, args.steps // 5), weight_decay=0.1, betas=(0.9, 0.98), device=device,
                        progress=False, compile=args.compile, ddp_options=ddp_options)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    stamps.append(time.perf_counter())
    rank, size = world()
    if prof is not None:
        from speed import kernel_category  # benchmarks/speed.py, beside this script (profiling runs only)

        cats: dict[str, float] = {}
        for e in prof.events():
            if e.device_type.name == "CUDA":
                cats[kernel_category(e.name)] = cats.get(kernel_category(e.name), 0.0) + e.device_time / 3e3
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        table = prof.key_averages().table(sort_by="cuda_time_total" if device.type == "cuda" else "cpu_time_total",
                                          row_limit=30, max_name_column_width=80)
        with open(Path(args.profile) / f"ddp_w{size}.txt", "w") as f:
            f.write(f"device ms per step by kind: {json.dumps({k: round(v, 2) for k, v in cats.items()})}\n{table}\n")
    if args.save_dir:
        Path(args.save_dir).mkdir(parents=True, exist_ok=True)
        save_safetensors(Path(args.save_dir) / f"rank{rank}.safetensors", model.state_dict(),
                         {"history": history, "rank": rank, "world_size": size})
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    result = {"benchmark": "DDP training step (forward, gathered contrastive loss, backward + all-reduce, AdamW)",
              "device_type": device.type, "world_size": size, "config": args.config, "global_batch": args.batch,
              "batch_per_process": args.batch // size, "steps": args.steps,
              "timed_steps": f"{args.timed_from + 1}..{args.steps}", "local_loss": args.local_loss,
              "compile": args.compile, "ddp_options": ddp_options, "loop": args.loop,
              "adam": args.adam if args.loop == "lean" else "foreach (train)", "device": str(device),
              "device_name": name,
              "date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "command": " ".join(["train_ddp.py", *(argv if argv is not None else sys.argv[1:])]),
              "loss_first": history[0], "loss_last": history[-1],
              "loss_first5": sum(history[:5]) / len(history[:5]), "loss_last5": sum(history[-5:]) / len(history[-5:])}
    if len(stamps) == 2:
        # Every rank timed the same steps on its own clock; the slowest rank sets the pace of a synchronous job.
        secs = (stamps[1] - stamps[0]) / (args.steps - args.timed_from)
        per_rank = [secs] * size
        if size > 1:
            torch.distributed.all_gather_object(per_rank, secs)
        slowest = max(per_rank)
        result |= {"step_ms": round(1e3 * slowest, 2), "step_ms_per_rank": [round(1e3 * s, 2) for s in per_rank],
                   "samples_per_s": round(args.batch / slowest, 1),
                   "samples_per_s_per_process": round(args.batch / slowest / size, 1)}
        if args.single:
            one = json.loads(Path(args.single).read_text())
            if one["batch_per_process"] != result["batch_per_process"]:
                raise ValueError(f"--single ran {one['batch_per_process']} samples per process, this run "
                                 f"{result['batch_per_process']}: scaling needs the same per-process batch")
            result["single_process"] = {k: one.get(k) for k in ("samples_per_s", "step_ms", "device_name", "compile",
                                                                "loop", "command")}
            result["scaling_efficiency"] = round(result["samples_per_s_per_process"] / one["samples_per_s"], 4)
    if rank == 0:
        print(json.dumps(result))  # one line: the last line of stdout is the result
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
    finish_distributed()   # every rank done before any tears down (else gloo can SIGABRT a slower peer)
