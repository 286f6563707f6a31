"""The one training loop every chapter uses.

    history = train(model, loss_fn, batches, steps=600, lr=1e-3, warmup=50)

* `loss_fn(model, batch) -> scalar loss` (a one-argument `loss_fn(batch)` also works outside DDP);
* `batches` is either a **factory** `batches(step) -> batch` (preferred: the batch of step k is known without
  replaying the others, which makes resuming exact and free) or an iterable of batches (re-iterated each epoch);
* every tensor in a batch (tensor, dict, list or tuple of them) is moved to the device for you.

What the loop does for you, and why:
* **device**: `env.pick_device()` unless given; under `torchrun` each process takes `cuda:LOCAL_RANK`.
* **mixed precision**: bf16 autocast on CUDA (no loss scaling needed, unlike fp16); off on CPU.
* **AdamW** on the parameters that require grad (frozen parts, e.g. an LLM backbone, are left alone); weight decay
  only on matrices (≥2-D), never on biases, norms or the temperature.
* **warmup + cosine** learning rate (`lr_at`), **gradient clipping** by global norm, a NaN guard.
* **checkpoints** every `ckpt_every` steps into `ckpt_dir` (safetensors + JSON, no pickle): trainable weights,
  buffers, optimizer state, the step, the loss history and every RNG state. `resume=True` continues from it and
  gives bit-identical results to an uninterrupted run (tested on CPU). Frozen parameters are not saved: whoever
  builds the model rebuilds them.
* **DDP** when launched under `torchrun` (WORLD_SIZE > 1): the process group is set up, the model wrapped, and
  only rank 0 writes checkpoints and shows the progress bar. Each process calls `batches(step)` itself, so make
  the batch depend on `world()`'s rank (each process its own shard). End such a script with `finish_distributed()`.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from tqdm.auto import tqdm

from . import env, i18n
from .batches import BatchSource
from .shared_runs import SharedRun
from .weights import check_int, check_real, check_state_dict, load_safetensors, save_safetensors

CKPT_NAME = "train_state.safetensors"
READ_EVERY = 50   # on a GPU (and without on_step) the losses are read back every 50 steps: see _Losses
_TRAIN_STATE_FIELDS = {"step": int, "history": list, "param_groups": list, "optim_state": dict, "rng": dict}


# ---- schedule ---------------------------------------------------------------------------------------------------

def lr_at(step: int, steps: int, lr: float, warmup: int = 0, min_lr_ratio: float = 0.0) -> float:
    """Learning rate for optimizer step `step` (0-based) of `steps`: linear warmup, then cosine down to
    `min_lr_ratio · lr` at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - 1 - warmup)
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# ---- distributed helpers ----------------------------------------------------------------------------------------

def world() -> tuple[int, int]:
    """(rank, world_size) of this process: (0, 1) unless running under an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def finish_distributed() -> None:
    """End a `torchrun` job cleanly: wait for every rank, then tear the process group down (no-op otherwise).

    Call it once at the end of a script that `train` ran under torchrun. A rank that exits while its peers' gloo
    threads still talk to it can kill them with "terminate called without an active exception" (SIGABRT).
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _setup_distributed(device: torch.device | None) -> torch.device | None:
    """Initialise the process group when launched by torchrun; return the device this process should use."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


# ---- batches ----------------------------------------------------------------------------------------------------

def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor inside a (nested) dict / list / tuple to `device`; other values pass through."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and not hasattr(batch, "_fields"):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


# ---- checkpoint state (safetensors + JSON, no pickle) -----------------------------------------------------------

def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """state_dict minus frozen parameters (those are rebuilt by whoever builds the model). Every name of a tied
    parameter counts (an LLM's lm_head.weight is its frozen embedding under a second name)."""
    frozen = {n for n, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k not in frozen}


def save_train_state(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                     history: list[float], extra: dict | None = None) -> Path:
    """Write everything needed to resume exactly. Written to a temporary name first, then renamed, so a crash
    while saving never leaves a half-written checkpoint behind."""
    tensors = {f"model.{k}": v for k, v in _trainable_state(model).items()}
    opt = optimizer.state_dict()
    opt_meta: dict[str, dict[str, Any]] = {}
    for idx, st in opt["state"].items():
        opt_meta[str(idx)] = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{k}"] = v
            else:
                opt_meta[str(idx)][k] = v
    rng_tensors, rng_meta = env.rng_state()
    tensors.update(rng_tensors)
    config = {"step": step, "history": history, "param_groups": opt["param_groups"], "optim_state": opt_meta,
              "rng": rng_meta, **(extra or {})}
    return save_safetensors(path, tensors, config)   # atomic: a temporary file, then one rename


def load_train_state(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer
                     ) -> tuple[int, list[float]]:
    """Restore model (strictly: every trainable key, right shapes and dtypes, finite values), optimizer and RNGs;
    return (step, history). Not a train state, or a corrupt one: a ValueError naming the file and the fault."""
    tensors, cfg = _read_train_state(Path(path))
    return _restore(Path(path), tensors, cfg, model, optimizer)


def _read_train_state(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a train state written by `save_train_state`, checked before anything is restored."""
    tensors, cfg = load_safetensors(path)
    missing = [k for k in _TRAIN_STATE_FIELDS if k not in cfg]
    if missing:
        raise ValueError(f"{path} is not a train state written by train()/save_train_state: its metadata lacks "
                         f"{missing} (it holds {sorted(cfg) if isinstance(cfg, dict) else type(cfg).__name__})")
    wrong = [f"{k!r} is a {type(cfg[k]).__name__}, expected {t.__name__}" for k, t in _TRAIN_STATE_FIELDS.items()
             if not isinstance(cfg[k], t) or isinstance(cfg[k], bool)]
    step, history = cfg["step"], cfg["history"]
    wrong = wrong or [fault for bad, fault in (
        (step < 0, f"'step' is {step}, expected ≥ 0"),
        (len(history) != step, f"'history' holds {len(history)} losses for step {step}"),
        (not all(isinstance(h, (int, float)) for h in history), "'history' holds values that are not numbers"),
        (not {"python", "numpy"} <= set(cfg["rng"]), "'rng' lacks the python/numpy states")) if bad]
    wrong += [f"tensor {k!r} is missing" for k in ("rng.torch", "rng.numpy") if k not in tensors]
    wrong += [f"optimizer tensor {k!r} holds NaN or inf" for k, v in tensors.items()
              if k.startswith("optim.") and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if wrong:
        raise ValueError(f"{path} is a corrupt train state: " + "; ".join(wrong))
    return tensors, cfg


def _restore(path: Path, tensors: dict[str, torch.Tensor], cfg: dict, model: nn.Module,
             optimizer: torch.optim.Optimizer) -> tuple[int, list[float]]:
    """Put a checked train state (`_read_train_state`) into model, optimizer and the RNGs."""
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    check_state_dict(_trainable_state(model), model_sd, what=f"{type(model).__name__} (trainable part, from {path})")
    sizes = [len(g.get("params", [])) if isinstance(g, dict) else -1 for g in cfg["param_groups"]]
    if sizes != [len(g["params"]) for g in optimizer.param_groups]:
        raise ValueError(f"{path}: its optimizer state has parameter groups of sizes {sizes}, this optimizer "
                         f"{[len(g['params']) for g in optimizer.param_groups]}: another model or trainable set?")
    try:
        state: dict[int, dict[str, Any]] = {int(idx): dict(scalars) for idx, scalars in cfg["optim_state"].items()}
        for k, v in ((k, v) for k, v in tensors.items() if k.startswith("optim.")):
            state.setdefault(int(k.split(".", 2)[1]), {})[k.split(".", 2)[2]] = v
        model.load_state_dict(model_sd, strict=False)
        optimizer.load_state_dict({"state": state, "param_groups": cfg["param_groups"]})
        env.set_rng_state(tensors, cfg["rng"])
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as e:
        raise ValueError(f"{path}: the optimizer or RNG state does not load ({type(e).__name__}: {e})") from e
    return cfg["step"], list(cfg["history"])


# ---- the loop ---------------------------------------------------------------------------------------------------

def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.0,
                   betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over trainable parameters; decay on ≥2-D tensors (weights, embeddings) only."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas)


def train(model: nn.Module, loss_fn: Callable[..., torch.Tensor], batches: Callable[[int], Any] | Iterable[Any],
          steps: int, lr: float = 1e-3, warmup: int = 0, weight_decay: float = 0.0,
          betas: tuple[float, float] = (0.9, 0.999), min_lr_ratio: float = 0.0, grad_clip: float | None = 1.0,
          device: torch.device | str | None = None, amp: bool | None = None,
          ckpt_dir: str | os.PathLike | None = None, ckpt_every: int = 0, resume: bool = False,
          progress: bool = True, on_step: Callable[[int, float], None] | None = None, compile: bool = False,
          ddp_options: dict | None = None, workers: int = 0) -> list[float]:
    """Train `model` in place for `steps` optimizer steps; return the loss of every step.

    Args:
        model: any nn.Module; only parameters with requires_grad are optimised.
        loss_fn: `loss_fn(model, batch) -> scalar tensor` (or `loss_fn(batch)` when not under DDP).
        batches: factory `step -> batch` or an iterable of batches (see the module docstring).
        steps: total optimizer steps (also fixes the cosine schedule, so keep it when resuming).
        lr, warmup, min_lr_ratio: peak learning rate, linear-warmup steps, final lr as a fraction of the peak.
        weight_decay, betas: AdamW settings (decay on ≥2-D parameters only).
        grad_clip: max global gradient norm (None or 0: no clipping).
        device: default `env.pick_device()` (cuda → mps → cpu); under torchrun, cuda:LOCAL_RANK.
        amp: bf16 autocast; default on for CUDA, off elsewhere.
        ckpt_dir, ckpt_every: write `ckpt_dir/train_state.safetensors` every `ckpt_every` steps and at the end.
        resume: continue from that checkpoint when it exists (exact: weights, optimizer, RNGs, data position).
        progress: show a tqdm bar (rank 0 only).
        on_step: called as `on_step(step, loss)` after each optimizer step (1-based step), e.g. to evaluate.
        compile: `torch.compile` the module that a two-argument `loss_fn` receives, after the DDP wrap (the
            compiler then splits the graph at DDP's gradient buckets so their all-reduce can overlap the
            backward); the first steps take the compile time.
        ddp_options: keyword arguments for `DistributedDataParallel` (e.g. `bucket_cap_mb`,
            `gradient_as_bucket_view`); the extra key `"bf16_grads": True` sends gradients in bfloat16 (half the
            bytes of the all-reduce; NCCL only). Not `static_graph=True`: with it the ranks of a CLIP run through
            this loop end with different weights (measured, gloo and NCCL).
        workers: processes making a factory's batches ahead of the step (`minimal.batches`); same run either way.
    Returns:
        list of `steps` floats: the loss at each step (under DDP, the mean over processes), including the steps
        done before a resume.
    Raises:
        FloatingPointError when the loss becomes NaN/inf (with its step; see `_Losses`), ValueError on bad args.
    """
    _check_args(steps, warmup, ckpt_every, resume, ckpt_dir, lr, weight_decay, min_lr_ratio, grad_clip)
    device, rank, world_size, amp, two_args = _place(device, amp, loss_fn)
    model.to(device)
    was_training = model.training
    model.train()
    plain = world_size == 1 and not (resume or ckpt_dir or on_step or compile or workers)
    shared = SharedRun.begin(model, loss_fn, batches, steps, dict(
        lr=lr, warmup=warmup, weight_decay=weight_decay, betas=betas, min_lr_ratio=min_lr_ratio, grad_clip=grad_clip,
        amp=amp, device=str(device))) if plain else None       # only in the test command: minimal/shared_runs.py
    if shared is not None and shared.found:
        return shared.restore(model, _trainable_state(model), was_training)
    net = _wrap(model, device, world_size, compile, ddp_options)
    optimizer = make_optimizer(model, lr, weight_decay, betas)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    source = BatchSource(shared.watch(batches) if shared else batches, workers, pin_memory=device.type == "cuda")

    ckpt_path = Path(ckpt_dir) / CKPT_NAME if ckpt_dir is not None else None
    start, history = _resume(ckpt_path, source, model, optimizer, steps) if resume else (0, list[float]())
    bar = tqdm(total=steps, initial=start, disable=not progress or rank != 0, desc=i18n.tr("train"), dynamic_ncols=True)
    losses = _Losses(history, world_size, every=1 if on_step is not None or device.type != "cuda" else READ_EVERY)
    for step, cpu_batch in zip(range(start, steps), source.stream(start, steps), strict=True):
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup, min_lr_ratio)
        batch = to_device(cpu_batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(net, batch) if two_args else loss_fn(batch)
        _check_loss(loss, step, read=losses.every == 1)
        _update(loss, optimizer, params, grad_clip)
        saving = ckpt_path is not None and ckpt_every and ((step + 1) % ckpt_every == 0 or step + 1 == steps)
        if losses.add(loss, read_now=bool(saving) or step == steps - 1):
            bar.set_postfix(loss=f"{history[-1]:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}", refresh=False)
        bar.update(1)
        if on_step is not None:
            on_step(step + 1, history[-1])
        if saving and ckpt_path is not None and rank == 0:
            save_train_state(ckpt_path, model, optimizer, step + 1, history, {"steps": steps, "lr": lr})
        if saving and world_size > 1:
            dist.barrier()
    bar.close()
    if shared is not None:
        shared.keep(model, _trainable_state(model), history)
    model.train(was_training)
    return history


def _place(device: torch.device | str | None, amp: bool | None, loss_fn: Callable[..., torch.Tensor]
           ) -> tuple[torch.device, int, int, bool, bool]:
    """(device, rank, world size, bf16 autocast, loss_fn takes the model) for this process; under torchrun the
    process group is set up first."""
    placed = _setup_distributed(torch.device(device) if device is not None else None)
    placed = placed if placed is not None else env.pick_device(verbose=False)
    rank, world_size = world()
    two_args = len(inspect.signature(loss_fn).parameters) >= 2
    if world_size > 1 and not two_args:
        raise ValueError("under torchrun loss_fn must take (model, batch) so the forward goes through DDP")
    return placed, rank, world_size, (placed.type == "cuda") if amp is None else amp, two_args


def _wrap(model: nn.Module, device: torch.device, world_size: int, compile: bool, ddp_options: dict | None) -> Any:
    """What each step calls: the model itself, or DistributedDataParallel and/or torch.compile around it."""
    net: Any = model
    if world_size > 1:
        options = dict(ddp_options or {})
        bf16_grads = options.pop("bf16_grads", False)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                  **options)
        if bf16_grads:
            net.register_comm_hook(None, default_hooks.bf16_compress_hook)
    if compile:
        net = torch.compile(net)  # attribute look-ups (net.module, net.logit_scale) pass through to the model
    return net


def _check_args(steps: int, warmup: int, ckpt_every: int, resume: bool, ckpt_dir: object, lr: float,
                weight_decay: float, min_lr_ratio: float, grad_clip: float | None) -> None:
    """A ValueError naming the argument, what was expected and what came, before any step runs."""
    for name, value in (("steps", steps), ("warmup", warmup), ("ckpt_every", ckpt_every)):
        check_int(value, name, minimum=0)
    for name, number in (("lr", lr), ("weight_decay", weight_decay), ("grad_clip", grad_clip or 0)):
        check_real(number, name, low=0)                                # (betas: AdamW checks them)
    check_real(min_lr_ratio, "min_lr_ratio", low=0, high=1)
    if (ckpt_every or resume) and ckpt_dir is None:
        raise ValueError("ckpt_every/resume need a ckpt_dir")


def _resume(ckpt_path: Path | None, source: BatchSource, model: nn.Module, optimizer: torch.optim.Optimizer,
            steps: int) -> tuple[int, list[float]]:
    """(step, history) to continue from: the checkpoint's, with the data replayed up to it, or (0, []) if none."""
    if ckpt_path is None or not ckpt_path.exists():
        return 0, []
    tensors, cfg = _read_train_state(ckpt_path)   # checked before anything is replayed or restored
    if cfg["step"] > steps:
        raise ValueError(f"checkpoint {ckpt_path} is at step {cfg['step']}, beyond steps={steps}")
    source.skip_to(cfg["step"])  # replay the data first: the RNG state is restored after it
    return _restore(ckpt_path, tensors, cfg, model, optimizer)


def _update(loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: list[torch.Tensor],
            grad_clip: float | None) -> None:
    """Backward, clip the global gradient norm (if `grad_clip`), one optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()


def _check_loss(loss: Any, step: int, read: bool) -> None:
    """A loss must be a scalar tensor, and (when `read`: it is read back at every step anyway) a finite one,
    before the update: say which rule broke and at which step."""
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise ValueError(f"loss_fn must return a scalar tensor, got {getattr(loss, 'shape', type(loss))}")
    if read and not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower the lr or check the data")


class _Losses:
    """The steps' losses as floats in `history`; under DDP the mean over the processes (every rank logs the same).

    Reading a loss back waits for the GPU, and a GPU step is bound by how fast the host launches its kernels: so on
    a GPU, unless `on_step` wants every loss, they stay on the device and are read `every` steps together (one
    all-reduce for all of them), and before a checkpoint and at the end. A NaN/inf loss still stops training with
    its step — on a GPU up to `every` steps later (measured: 73 % -> 84 % two-GPU scaling, NOTES_speed.md)."""

    def __init__(self, history: list[float], world_size: int, every: int):
        self.history, self.world_size, self.every = history, world_size, max(1, every)
        self.pending: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor, read_now: bool) -> bool:
        """Keep this step's loss; read the kept ones when `every` are there or `read_now`. True if read."""
        self.pending.append(loss.detach().float())
        if len(self.pending) < self.every and not read_now:
            return False
        values = torch.stack(self.pending)
        if self.world_size > 1:
            dist.all_reduce(values)
            values /= self.world_size
        first, self.pending = len(self.history), []
        for i, value in enumerate(values.tolist()):
            if not math.isfinite(value):
                raise FloatingPointError(f"loss is {value} at step {first + i}; lower the lr or check the data")
            self.history.append(value)
        return True
