"""Training-step throughput of our CLIP against HF `CLIPModel` and open_clip — same config, same weights, one run.

    python benchmarks/speed.py                       # CPU: the tiny config in float32
    python benchmarks/speed.py --config b32          # GPU: ViT-B/32 (224 px) + 12-layer text tower, bf16 autocast
    python benchmarks/speed.py --config b32 --out benchmarks/results/h100_2026-11-27.json

What is timed: one training step *without* the optimizer — forward of both towers, the contrastive loss, backward
(``zero_grad(set_to_none=True)`` between steps) — for each model, eager and `torch.compile`d. `--modes` picks other
execution settings, each applied to every model alike (ratios are only ever taken within one setting):
``eager``, ``compiled`` (torch.compile's default), ``reduce-overhead`` and ``max-autotune-no-cudagraphs`` (those
torch.compile modes), and ``graphed`` — the eager step (forward + loss + backward) captured once in a CUDA graph
with `torch.cuda.graph` and replayed: no Python and no kernel launches per step, the launch-bound limit removed.
(`graphed` measured in benchmarks/results/h100_cudagraphs_2026-11-27.json and h200_2026-11-30.json; the two
compile modes are wired up, `reduce-overhead` was timed once (provisional) on 2026-11-30.) Every model gets the same
random HF `CLIPModel` weights (ours through `CLIP.from_hf_state_dict`, open_clip through a key mapping), so they do
the same math; a float32 check of their logits is part of the output. Model FLOPs per step come from
`torch.utils.flop_counter.FlopCounterMode` (matmuls and attention: what a GPU's tensor cores do), MFU is achieved
FLOP/s over the bf16 matmul peak measured in the same run with one large matrix product.

`--optimizer fused|foreach` times the whole training step instead: + an AdamW step (weight decay on matrices, as
`minimal.train`), ours with `clip_loss_distributed` (the gathered loss; one process: the local loss); under
`graphed` the optimizer is `capturable` and inside the graph (that capture hit an illegal memory access on
2026-11-30 and again on 2026-12-01: not resolved; eager is the whole step's measured setting).
`--batches 256,512,1024` runs the suite once per
batch (a sweep, MFU per batch; `sweep` in the JSON). `--profile DIR` groups each profiled step's kernel time into
the classes of `kernel_category` and adds "launches / idle" = step time − kernel time (the GPU waiting for the
host), with the top kernels in DIR/profiles.txt.

Prints one JSON object (device, date, versions, config, per-model samples/s, ratios ours/HF and ours/open_clip at
the same compile setting, FLOPs, peak, MFU). open_clip is measured when it imports (it needs torchvision).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from minimal.clip import CLIP, CLIPConfig
from minimal.losses import clip_loss, clip_loss_distributed

# One dict per benchmark configuration. "b32" is OpenAI's ViT-B/32 CLIP: HF `CLIPConfig()`'s defaults.
CONFIGS = {
    "tiny": dict(image_size=32, patch_size=8, v_width=128, v_layers=4, v_heads=4, v_mlp=512,
                 t_width=128, t_layers=2, t_heads=4, t_mlp=512, context=32, vocab=1024, embed=64,
                 batch=128, dtype="float32"),
    "b32": dict(image_size=224, patch_size=32, v_width=768, v_layers=12, v_heads=12, v_mlp=3072,
                t_width=512, t_layers=12, t_heads=8, t_mlp=2048, context=77, vocab=49408, embed=512,
                batch=256, dtype="bfloat16"),
}


# ---- the three models, same weights ----------------------------------------------------------------------------

def hf_clip(c: dict):
    """A random HF `CLIPModel` of config `c` with SDPA attention (eos_token_id 2: pooled at the argmax id, as
    OpenAI's checkpoints and open_clip do)."""
    from transformers import CLIPConfig as HFConfig
    from transformers import CLIPModel

    cfg = HFConfig(
        text_config=dict(vocab_size=c["vocab"], hidden_size=c["t_width"], intermediate_size=c["t_mlp"],
                         num_hidden_layers=c["t_layers"], num_attention_heads=c["t_heads"],
                         max_position_embeddings=c["context"], hidden_act="quick_gelu",
                         eos_token_id=2, pad_token_id=1, bos_token_id=0),
        vision_config=dict(hidden_size=c["v_width"], intermediate_size=c["v_mlp"], num_hidden_layers=c["v_layers"],
                           num_attention_heads=c["v_heads"], image_size=c["image_size"], patch_size=c["patch_size"],
                           hidden_act="quick_gelu"),
        projection_dim=c["embed"],
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    try:
        return CLIPModel(cfg, attn_implementation="sdpa")
    except TypeError:  # older transformers take it only in from_pretrained / the config
        return CLIPModel(cfg)


def hf_to_open_clip(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a HF `CLIPModel` state dict into open_clip's `CLIP` layout (q/k/v stacked into `in_proj`,
    projections stored transposed). Written from the two models' parameter lists, nothing else."""
    out = {}
    for tower, ours in (("vision_model", "visual."), ("text_model", "")):
        layers = sorted({int(k.split(".")[3]) for k in sd if k.startswith(f"{tower}.encoder.layers.")})
        for i in layers:
            h, o = f"{tower}.encoder.layers.{i}.", f"{ours}transformer.resblocks.{i}."
            for kind in ("weight", "bias"):
                out[o + f"attn.in_proj_{kind}"] = torch.cat([sd[h + f"self_attn.{p}_proj.{kind}"] for p in "qkv"])
                out[o + f"attn.out_proj.{kind}"] = sd[h + f"self_attn.out_proj.{kind}"]
                out[o + f"ln_1.{kind}"] = sd[h + f"layer_norm1.{kind}"]
                out[o + f"ln_2.{kind}"] = sd[h + f"layer_norm2.{kind}"]
                out[o + f"mlp.c_fc.{kind}"] = sd[h + f"mlp.fc1.{kind}"]
                out[o + f"mlp.c_proj.{kind}"] = sd[h + f"mlp.fc2.{kind}"]
    v, t = "vision_model.", "text_model."
    out["visual.class_embedding"] = sd[v + "embeddings.class_embedding"]
    out["visual.positional_embedding"] = sd[v + "embeddings.position_embedding.weight"]
    out["visual.conv1.weight"] = sd[v + "embeddings.patch_embedding.weight"]
    for kind in ("weight", "bias"):
        out[f"visual.ln_pre.{kind}"] = sd[v + f"pre_layrnorm.{kind}"]
        out[f"visual.ln_post.{kind}"] = sd[v + f"post_layernorm.{kind}"]
        out[f"ln_final.{kind}"] = sd[t + f"final_layer_norm.{kind}"]
    out["visual.proj"] = sd["visual_projection.weight"].T.contiguous()
    out["token_embedding.weight"] = sd[t + "embeddings.token_embedding.weight"]
    out["positional_embedding"] = sd[t + "embeddings.position_embedding.weight"]
    out["text_projection"] = sd["text_projection.weight"].T.contiguous()
    out["logit_scale"] = sd["logit_scale"]
    return out


def open_clip_model(c: dict, hf_sd: dict):
    """open_clip's `CLIP` with config `c` and the HF weights, or None (with the reason) when it does not import."""
    try:
        import open_clip
    except Exception as e:  # noqa: BLE001 - any import failure means "not measured", with the reason
        return None, f"{type(e).__name__}: {e}"
    model = open_clip.model.CLIP(
        embed_dim=c["embed"], quick_gelu=True,
        vision_cfg=dict(image_size=c["image_size"], patch_size=c["patch_size"], width=c["v_width"],
                        layers=c["v_layers"], head_width=c["v_width"] // c["v_heads"],
                        mlp_ratio=c["v_mlp"] / c["v_width"]),
        text_cfg=dict(context_length=c["context"], vocab_size=c["vocab"], width=c["t_width"], heads=c["t_heads"],
                      layers=c["t_layers"], mlp_ratio=c["t_mlp"] / c["t_width"]),
    )
    model.output_dict = True
    model.load_state_dict(hf_to_open_clip(hf_sd), strict=True)
    return model, getattr(open_clip, "__version__", "?")


# Each model's natural training forward: (pixels, ids) -> scalar contrastive loss.
OURS_LOSS = clip_loss   # the whole-step timing (--optimizer) uses clip_loss_distributed, as train_ddp.py does


def loss_ours(model):
    return lambda px, ids: OURS_LOSS(model.encode_image(px), model.encode_text(ids), model.logit_scale)


def loss_hf(model):
    return lambda px, ids: model(input_ids=ids, pixel_values=px, return_loss=True).loss


def loss_open_clip(model):
    import open_clip

    crit = open_clip.loss.ClipLoss()

    def f(px, ids):
        out = model(px, ids)
        return crit(out["image_features"], out["text_features"], out["logit_scale"])
    return f


def logits_of(name: str, model, px, ids) -> torch.Tensor:
    """logits_per_image (B, B) of each model, for the same-math check."""
    if name.startswith("ours"):
        return model(px, ids).logits_per_image
    if name == "hf":
        return model(input_ids=ids, pixel_values=px).logits_per_image
    out = model(px, ids)
    return out["logit_scale"] * out["image_features"] @ out["text_features"].T


def make_batch(c: dict, batch: int, device, seed: int = 0):
    """Random normalised-looking pixels and token ids with one end-of-text (the largest id) per caption."""
    g = torch.Generator().manual_seed(seed)
    px = torch.randn(batch, 3, c["image_size"], c["image_size"], generator=g)
    ids = torch.randint(3, c["vocab"] - 1, (batch, c["context"]), generator=g)
    lengths = torch.randint(2, c["context"] + 1, (batch,), generator=g)
    for i, n in enumerate(lengths.tolist()):
        ids[i, n - 1] = c["vocab"] - 1  # end-of-text: the largest id (argmax pooling, OpenAI's rule)
        ids[i, n:] = 0                  # padding after it
    return px.to(device), ids.to(device)


# ---- measuring -------------------------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_tflops(device: torch.device, n: int = 8192, iters: int = 30) -> float:
    """bf16 matmul TFLOP/s of one n×n×n product on random data (the MFU denominator)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(device)
    return 2 * n ** 3 * iters / (time.perf_counter() - t) / 1e12


def step_flops(step, *args) -> int:
    """FLOPs of one forward+backward, counted by PyTorch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step(*args)
    return fc.get_total_flops()


def time_steps(step, args, device, warmup: int, iters: int, repeats: int) -> list[float]:
    """Seconds per step: `repeats` medians-worth of `iters` back-to-back steps after `warmup` steps."""
    for _ in range(warmup):
        step(*args)
    sync(device)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(iters):
            step(*args)
        sync(device)
        out.append((time.perf_counter() - t) / iters)
    return out


def make_step(model, loss_fn, autocast_dtype, device, opt=None, mark_step=False):
    """forward + loss + backward (+ `opt.step()` when given: the whole training step), gradients set to None."""
    def step(px, ids):
        if mark_step:  # reduce-overhead: tell cudagraph trees that a new iteration begins
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = loss_fn(px, ids)
        loss.backward()
        if opt is not None:
            opt.step()
        model.zero_grad(set_to_none=True)
    return step


def make_optimizer(model, kind: str | None, capturable: bool = False):
    """The whole step's optimizer: AdamW with its fused (one kernel per parameter chunk) or foreach implementation,
    weight decay on matrices only (as `minimal.train.make_optimizer`); None for the forward+backward-only step."""
    if not kind:
        return None
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=1e-5, betas=(0.9, 0.98), fused=kind == "fused",
                             foreach=kind == "foreach", capturable=capturable)


_POOL: list = []


def graph_pool():
    """One memory pool for every captured step of a run: the steps are replayed one at a time, so they can share
    their activations' memory (each graph's own pool would hold ~8 GB at batch 256 and a dozen models run out)."""
    if not _POOL:
        _POOL.append(torch.cuda.graph_pool_handle())
    return _POOL[0]


def graphed_step(model, loss_fn, autocast_dtype, device, px, ids, opt=None):
    """The whole eager step captured in one CUDA graph (static inputs: the benchmark feeds the same tensors).

    Warm-up runs on a side stream (cuBLAS/cuDNN pick their kernels and workspaces), then one capture. The gradients
    are allocated during the capture and rewritten in place by every replay, so they must not be set to None
    between replays. A graph cannot read a value back to the host, so our model's eager-only input checks are
    switched off for it (HF and open_clip have none): `check_ids` on the instance here, the finite-features check
    of `losses.clip_loss` skips itself while a capture is under way."""
    text = getattr(model, "text", None)
    if text is not None and hasattr(text, "check_ids"):
        text.check_ids = lambda ids: None

    def run():
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None,
                            cache_enabled=False):  # autocast's weight-cast cache must not outlive a capture
            loss = loss_fn(px, ids)
        loss.backward()
        if opt is not None:  # capturable AdamW: its step count lives on the GPU, so the graph can hold it
            opt.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            model.zero_grad(set_to_none=True)
            run()
    torch.cuda.current_stream().wait_stream(side)
    model.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=graph_pool() if opt is None else None):  # (shared + AdamW: illegal address)
        run()
    if text is not None and "check_ids" in vars(text):
        del text.check_ids  # the graph never calls Python again: other settings get the checks back
    return lambda *_: graph.replay()


MODES = ["eager", "compiled", "reduce-overhead", "max-autotune-no-cudagraphs", "graphed"]


def build_step(mode: str, model, loss_factory, amp, device, px, ids, optimizer: str | None = None):
    """One training step of `model` in execution setting `mode` (see the module docstring); with `optimizer`
    ("fused" / "foreach") the whole training step, AdamW included."""
    fn = loss_factory(model)
    opt = make_optimizer(model, optimizer, capturable=mode == "graphed")
    if mode == "graphed":
        return graphed_step(model, fn, amp, device, px, ids, opt)
    if mode == "compiled":
        fn = torch.compile(fn)
    elif mode != "eager":
        fn = torch.compile(fn, mode=mode)
    return make_step(model, fn, amp, device, opt, mark_step=mode == "reduce-overhead")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def runs_in(mode: str, name: str, compile_only: set[str] | None) -> bool:
    """`--compile-models`: entries `name` (every non-eager mode) or `mode:name` (that mode only)."""
    return mode == "eager" or compile_only is None or name in compile_only or f"{mode}:{name}" in compile_only


def run_suite(models: dict, modes: list[str], px, ids, amp, device, args, peak, compile_only=None):
    """Time every (model, mode) pair. Rounds are interleaved (each round times every pair once) so a machine
    whose load drifts — a shared CPU, a GPU warming up — biases no model; the median round is reported."""
    batch = px.shape[0]
    steps, flops, first, failed = {}, {}, {}, {}
    for name, (model, loss_factory) in models.items():
        model.to(device).train()
        flops[name] = step_flops(make_step(model, loss_factory(model), amp, device), px, ids)
        for mode in modes:
            if not runs_in(mode, name, compile_only):
                continue
            t0 = time.perf_counter()
            try:
                step = build_step(mode, model, loss_factory, amp, device, px, ids, args.optimizer)
                step(px, ids)  # compiles here
                sync(device)
            except Exception as e:  # noqa: BLE001 - a setting a model cannot run in is reported, not fatal
                failed[f"{mode}:{name}"] = f"{type(e).__name__}: {str(e)[:300]}"
                print(f"# setup {mode:8s} {name:18s} FAILED {failed[f'{mode}:{name}']}", file=sys.stderr, flush=True)
                torch.compiler.reset()
                continue
            first[mode, name] = time.perf_counter() - t0
            for _ in range(args.warmup):
                step(px, ids)
            steps[mode, name] = step
            sec = time_steps(step, (px, ids), device, 0, args.iters, 1)[0]  # provisional, printed at once
            print(f"# setup {mode:8s} {name:18s} first step {first[mode, name]:6.1f} s, then "
                  f"{batch / sec:9.1f} samples/s", file=sys.stderr, flush=True)
    secs: dict[tuple[str, str], list[float]] = {key: [] for key in steps}
    for _ in range(args.repeats):
        for key, step in list(steps.items()):
            try:
                secs[key] += time_steps(step, (px, ids), device, 1, args.iters, 1)
            except Exception as e:  # noqa: BLE001 - one setting failing must not lose the others' numbers
                failed[":".join(key)] = f"{type(e).__name__}: {str(e)[:300]}"
                del steps[key], secs[key]
    results: dict[str, dict] = {}
    for (mode, name), ss in secs.items():
        sec = statistics.median(ss)
        r = {"samples_per_s": round(batch / sec, 1), "step_ms": round(1e3 * sec, 2),
             "spread_pct": round(100 * (max(ss) - min(ss)) / sec, 1), "first_step_s": round(first[mode, name], 1),
             "tflops": round(flops[name] / sec / 1e12, 3)}
        if peak:
            r["mfu"] = round(flops[name] / sec / 1e12 / peak, 4)
        results.setdefault(mode, {})[name] = r
        print(f"# {mode:8s} {name:14s} {r['samples_per_s']:9.1f} samples/s  {r['step_ms']:8.2f} ms/step  "
              f"{r['tflops']:7.2f} TFLOP/s" + (f"  MFU {100 * r['mfu']:.1f}%" if peak else ""), file=sys.stderr)
    return results, flops, steps, failed


def main(argv: list[str] | None = None, variants=None) -> dict:
    """Run the benchmark; `variants(hf_model) -> {name: (model, loss_factory)}` adds models to compare (used by
    `speed_variants.py` to measure candidate changes to our model in the same run)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), default=None, help="default: b32 on CUDA, tiny on CPU")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--models", default="ours,hf,open_clip")
    ap.add_argument("--compile", choices=["both", "eager", "compiled"], default="both")
    ap.add_argument("--modes", default=None, help=f"comma list of {MODES} (overrides --compile)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU runs on a shared machine)")
    ap.add_argument("--note", default=None, help="a remark stored in the JSON (e.g. the machine's load)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--compile-models", default=None,
                    help="comma list: run the non-eager modes only for these models (default: all)")
    ap.add_argument("--profile", default=None, help="write torch.profiler tables into this folder")
    ap.add_argument("--profile-models", default="ours,hf", help="comma list of mode:name or name (eager)")
    ap.add_argument("--optimizer", choices=["fused", "foreach"], default=None,
                    help="time the whole training step: + AdamW (fused or foreach) step; ours with the gathered loss")
    ap.add_argument("--batches", default=None, help="comma list of batch sizes: one suite per batch (a sweep)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    global OURS_LOSS
    OURS_LOSS = clip_loss_distributed if args.optimizer else clip_loss

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cname = args.config or ("b32" if device.type == "cuda" else "tiny")
    c = dict(CONFIGS[cname])
    batch = args.batch or c["batch"]
    amp = {"bfloat16": torch.bfloat16, "float32": None}[c["dtype"]]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    hf = hf_clip(c)
    hf_sd = hf.state_dict()
    models: dict[str, tuple] = {}
    skipped: dict[str, str] = {}
    wanted = args.models.split(",")
    if "ours" in wanted:
        models["ours"] = (CLIP.from_hf_state_dict(hf_sd, CLIPConfig.from_hf(hf.config)), loss_ours)
    if "hf" in wanted:
        models["hf"] = (hf, loss_hf)
    if "open_clip" in wanted:
        oc, info = open_clip_model(c, hf_sd)
        if oc is None:
            skipped["open_clip"] = info
        else:
            models["open_clip"] = (oc, loss_open_clip)
    if variants is not None:
        models |= variants(hf)

    # Same math: float32 logits of every model on a small batch, against HF's.
    px, ids = make_batch(c, 8, "cpu", seed=1)
    check = {}
    with torch.no_grad():
        ref = logits_of("hf", hf.float().eval(), px, ids)
        for name, (m, _) in models.items():
            check[name] = float((logits_of(name, m.float().eval(), px, ids) - ref).abs().max())

    peak = matmul_peak_tflops(device) if device.type == "cuda" else None
    modes = {"both": ["eager", "compiled"], "eager": ["eager"], "compiled": ["compiled"]}[args.compile]
    if args.modes:
        modes = args.modes.split(",")
        if set(modes) - set(MODES):
            raise SystemExit(f"unknown mode(s) {sorted(set(modes) - set(MODES))}; known: {MODES}")
    compile_only = set(args.compile_models.split(",")) if args.compile_models else None
    batches = [int(b) for b in args.batches.split(",")] if args.batches else [batch]
    step_kind = (f"whole training step: forward + contrastive loss (ours: the gathered loss) + backward + AdamW "
                 f"({args.optimizer}) step" if args.optimizer else
                 "forward + contrastive loss + backward, no optimizer step")
    out = {
        "benchmark": f"CLIP training step ({step_kind})",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "device": device_name(device), "device_type": device.type,
        "date": datetime.date.today().isoformat(),
        "versions": versions(),
        "config": {"name": cname, **c, "batch": batches[0], "autocast": c["dtype"] if amp else None},
        "peak_bf16_matmul_tflops": round(peak, 1) if peak else None,
        "same_math_max_abs_logit_diff_vs_hf_fp32": check, "not_measured": dict(skipped),
    }
    if args.note:
        out["note"] = args.note
    for b in batches:
        px, ids = make_batch(c, b, device)
        results, flops, steps, failed = run_suite(models, modes, px, ids, amp, device, args, peak, compile_only)
        ratios = {mode: {f"{ours}/{other}": round(res[ours]["samples_per_s"] / res[other]["samples_per_s"], 3)
                         for ours in res if ours.startswith("ours") for other in ("hf", "open_clip") if other in res}
                  for mode, res in results.items()}
        part = out if len(batches) == 1 else out.setdefault("sweep", {}).setdefault(str(b), {})
        part |= {"flops_per_step": flops, "results": results, "ratios": ratios}
        out["not_measured"] |= {f"b{b}:{k}": v for k, v in failed.items()}
        write_json(out, args.out)   # after every stage: a run stopped by a time limit keeps what it measured
        for key in args.profile_models.split(",") if args.profile else []:
            mode, name = key.split(":") if ":" in key else ("eager", key)
            if (mode, name) in steps:
                part.setdefault("profile_ms_per_step", {})[f"{mode}:{name}"] = profile(
                    f"{mode}_{name}_b{b}", steps[mode, name], (px, ids), device, args.profile,
                    results[mode][name]["step_ms"])   # ms per step by kernel class, idle, host CPU
                write_json(out, args.out)
        del steps
        _POOL.clear()   # the graphs that used it are gone: a new batch captures into a new pool
        if device.type == "cuda":
            torch.compiler.reset()
            torch.cuda.empty_cache()
    print(json.dumps(out, indent=1))
    print_table(out)
    return out


def write_json(out: dict, path: str | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(out, indent=1) + "\n")


def print_table(out: dict) -> None:
    """A short table on stderr (the end of a remote run's output): samples/s, ratio to HF / open_clip, MFU."""
    parts = out["sweep"] if "sweep" in out else {str(out["config"]["batch"]): out}
    for b, part in parts.items():
        for mode, res in part["results"].items():
            for name, r in res.items():
                rat = part["ratios"].get(mode, {})
                print(f"## b{b} {mode:15s} {name:16s} {r['samples_per_s']:8.1f}/s {r['step_ms']:7.2f} ms "
                      f"±{r['spread_pct']:4.1f}%  xHF {rat.get(f'{name}/hf', float('nan')):.3f}  "
                      f"xOC {rat.get(f'{name}/open_clip', float('nan')):.3f}  MFU {100 * r.get('mfu', 0):.1f}%",
                      file=sys.stderr)


def versions() -> dict:
    v = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("transformers", "open_clip"):
        try:
            v[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            pass
    if torch.cuda.is_available():
        v["cuda"] = torch.version.cuda
    return v


def profile(name: str, step, args, device, folder: str, step_ms: float | None = None) -> dict | None:
    """torch.profiler table of 3 steps; device time per step grouped into kernel classes (`kernel_category`),
    the kernel count, and — given the step's unprofiled time `step_ms` — the time the GPU had no kernel running
    ("launches / idle": the host was launching, syncing or running Python)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for _ in range(2):
        step(*args)
    sync(device)
    with tprofile(activities=acts) as prof:
        for _ in range(3):
            step(*args)
        sync(device)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    Path(folder).mkdir(parents=True, exist_ok=True)
    table = prof.key_averages().table(sort_by=key, row_limit=30, max_name_column_width=90)
    if device.type != "cuda":
        with open(Path(folder) / "profiles.txt", "a") as f:
            f.write(f"\n===== {name} (3 steps) =====\n{table}\n")
        return None
    cats: dict[str, float] = {}
    kernels: dict[str, list[float]] = {}
    for e in prof.events():
        if e.device_type.name != "CUDA":
            continue
        cats[kernel_category(e.name)] = cats.get(kernel_category(e.name), 0.0) + e.device_time / 3e3
        kernels.setdefault(e.name, []).append(e.device_time / 3e3)
    busy = sum(cats.values())
    summary = {k: round(v, 2) for k, v in sorted(cats.items(), key=lambda kv: -kv[1])}
    summary["(kernel time, ms per step)"] = round(busy, 2)
    summary["(kernels per step)"] = round(sum(len(v) for v in kernels.values()) / 3)
    if step_ms is not None:
        summary["launches / idle (step - kernel time)"] = round(step_ms - busy, 2)
        summary["(step ms, unprofiled)"] = step_ms
    summary["(host CPU ms per step, profiled)"] = round(sum(e.self_cpu_time_total for e in prof.key_averages()) / 3e3,
                                                        2)
    host: dict[str, float] = {}
    for e in prof.key_averages():
        if e.device_type.name == "CPU":
            host[host_category(e.key)] = host.get(host_category(e.key), 0.0) + e.self_cpu_time_total / 3e3
    summary["host ms per step by class (profiled)"] = {k: round(v, 2) for k, v in sorted(host.items(),
                                                                                        key=lambda kv: -kv[1])}
    top = sorted(kernels.items(), key=lambda kv: -sum(kv[1]))[:30]
    with open(Path(folder) / "profiles.txt", "a") as f:
        f.write(f"\n===== {name} (3 steps) =====\n{json.dumps(summary)}\n")
        f.write("top kernels: ms per step, launches per step, class, name\n")
        for k, v in top:
            f.write(f"{sum(v):8.3f} {len(v) / 3:6.0f}  {kernel_category(k):22s} {k[:150]}\n")
        f.write(table + "\n")
        f.write("host side (self CPU time, 3 steps):\n")
        f.write(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=90))
        f.write("\n")
    print(f"# profile {name}: ms per step by kernel class: {json.dumps(summary)}", file=sys.stderr, flush=True)
    return summary


def host_category(key: str) -> str:
    """Where the host's time goes, by profiler op name: the calls that launch attention / GEMM kernels (aten's
    dispatch, cuDNN's or cuBLAS's planning), Triton launches and torch.compile's generated wrapper, the autograd
    engine, and the rest (eager elementwise ops, casts, views, the optimizer)."""
    k = key.lower()
    if "attention" in k or "sdpa" in k or "cudnn" in k:
        return "attention calls"
    if k.startswith("aten::") and any(s in k for s in ("mm", "linear", "matmul", "conv")):
        return "GEMM / conv calls"
    if k.startswith("triton") or "compiledfxgraph" in k or "compiled" in k:
        return "compiled code (wrapper, Triton launches)"
    if k.startswith("autograd::") or "backward" in k or k.startswith("accumulategrad"):
        return "autograd engine, backward nodes"
    if k.startswith("cuda") or "memcpy" in k or "memset" in k:
        return "CUDA runtime (launch, sync, memset)"
    return "other ops (elementwise, casts, views, ...)"


def kernel_category(name: str) -> str:
    """The issue's kernel classes, by kernel name (aten, cuBLAS/cuDNN, flash, Triton from torch.compile)."""
    n = name.lower()
    if any(s in n for s in ("sdpa", "flash", "fmha", "attention", "efficient")):
        return "attention"
    if any(s in n for s in ("gemm", "nvjet", "cutlass", "xmma", "sm90_", "cublas", "matmul", "wgmma",
                            "conv2d", "convolution", "implicit", "dgrad", "wgrad", "fprop")):
        return "matmul (GEMM, conv)"
    if any(s in n for s in ("adam", "multi_tensor", "foreach")):
        return "optimizer"
    if any(s in n for s in ("softmax", "nll_loss", "cross_entropy")):
        return "loss"
    if any(s in n for s in ("layer_norm", "layernorm", "silu", "sigmoid", "gelu", "tanh")):
        return "norms / activations"
    if any(s in n for s in ("reduce", "red_fused", "sum")):
        return "reductions"
    if any(s in n for s in ("copy", "cat", "memcpy", "memset", "convert", "index", "clone", "fill")):
        return "copies / casts"
    return "other elementwise"


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
