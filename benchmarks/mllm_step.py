"""Where a stage-2 step of the MLLM recipe spends its time on a GPU (chapter 08's shipped recipe).

    python benchmarks/mllm_step.py --device cuda --out step.json [--profile prof.txt]

Measured in one process, side by side:
  data      seconds to make one stage-2 batch in this process (the workers' job);
  loop      the shipped loop (`minimal.train.train` with its batch workers), seconds per step;
  fixed     the same model fed one batch already on the device (compute and launch overhead only);
  bf16      as `fixed`, the frozen LLM's weights stored in bfloat16 (autocast casts them at every step otherwise);
each with --compile none, or blocks: every decoder layer's MLP and two RMSNorms `torch.compile`d (dynamic shapes;
attention stays eager, since its KV-cache state would give one graph per layer).
and, with --profile, the top operators of a few `fixed` steps by GPU time and by CPU time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from minimal import env
from minimal.llm import decoder_layers
from minimal.lora import lora_parameters
from minimal.mllm import MLLMConfig, build_mllm
from minimal.recipes.mllm import MLLMRecipe, stage2_batches, stage2_step_seconds, use_bf16
from minimal.train import make_optimizer, to_device


def fixed_steps(mllm, batch, steps: int, amp: bool, device: torch.device) -> list[float]:
    """Seconds per step (synchronised each step) of forward + backward + AdamW on one device-resident batch."""
    params = [p for p in mllm.parameters() if p.requires_grad]
    optimizer = make_optimizer(mllm, 1e-9)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = mllm.loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize(device) if device.type == "cuda" else None
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--out", required=True)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--compile", choices=("none", "blocks"), default="none",
                        help="blocks: each decoder layer's MLP and RMSNorms compiled (see the docstring)")
    parser.add_argument("--batch", type=int, default=None, help="stage-2 batch (default: the recipe's)")
    args = parser.parse_args()
    device = torch.device(args.device)
    recipe = MLLMRecipe()
    recipe.stage2_batch = args.batch or recipe.stage2_batch
    env.seed_everything(0)
    mllm = build_mllm(MLLMConfig(**recipe.mllm)).to(device)
    for p in lora_parameters(mllm.llm):
        p.requires_grad_(True)
    amp = use_bf16(recipe, device)
    t0 = time.perf_counter()
    if args.compile == "blocks":
        for layer in decoder_layers(mllm.llm):
            for block in (layer.mlp, layer.input_layernorm, layer.post_attention_layernorm):
                block.compile(dynamic=True)
    make = stage2_batches(mllm, recipe)
    data = []
    for step in range(6):
        t = time.perf_counter()
        make(step)
        data.append(time.perf_counter() - t)
    result: dict = {"machine": env.machine(device), "batch": recipe.stage2_batch, "compile": args.compile,
                    "data_s": statistics.median(data)}
    result["loop_s"] = stage2_step_seconds(mllm, recipe, device, args.workers, probe=3 * args.steps // 2)
    result["first_loop_seconds_with_compile"] = time.perf_counter() - t0
    batches = [to_device(make(s), device) for s in range(4)]
    result["tokens"] = [int(b["attention_mask"].sum()) for b in batches]
    result["T"] = [b["input_ids"].shape[1] for b in batches]
    for name in ("fixed", "bf16") if amp else ("fixed",):   # bf16 weights need autocast around them
        if name == "bf16":
            for p in mllm.llm.parameters():
                if not p.requires_grad:
                    p.data = p.data.to(torch.bfloat16)
        times = []
        for k in range(args.steps):
            times += fixed_steps(mllm, batches[k % len(batches)], 1, amp, device)
        result[f"{name}_s"] = statistics.median(times[args.steps // 4:])
        print(name, result[f"{name}_s"], flush=True)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for k in range(4):
                fixed_steps(mllm, batches[k], 1, amp, device)
        table = prof.key_averages()
        with open(args.profile, "w") as f:
            f.write(table.table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=60))
            f.write("\n\n")
            f.write(table.table(sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=60))
        kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
        result["profile"] = {"cuda_events_per_step": len(kernels) / 4,
                             "gpu_busy_ms_per_step": sum(e.device_time for e in kernels) / 4 / 1e3}
    print(json.dumps(result, indent=1))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
