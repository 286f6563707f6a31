"""Where the training loop's batches come from: a factory `batches(step) -> batch` or an iterable, optionally
made ahead of time in worker processes.

Making a batch can cost as much as the step it feeds: the MLLM's stage-2 batch renders 64 scenes and runs the chat
template over 64 six-turn conversations (~0.17 s on one CPU core), while one H200 runs the model's step in about as
long. Done in the training process, the GPU waits for every batch. With `workers=k`, k processes call the factory
for the steps ahead (in order, `prefetch` batches each) while the training process runs the model: the GPU never
waits as long as k workers keep up. The batches are identical either way, because a factory's batch depends on
its step alone (tested), so resuming stays exact.

    source = BatchSource(factory, workers=4)
    for step, batch in zip(range(start, steps), source.stream(start, steps)): ...

Workers are forked processes (Linux, and Colab): they inherit the factory without pickling it and must not use
CUDA, so a factory builds its batch on the CPU and the loop moves it to the device. A single-core machine gains
nothing from workers; the default is none.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from .weights import check_int


class _Steps(Dataset):
    """Steps start..steps-1 as a map-style dataset: item i is the factory's batch of step start + i."""

    def __init__(self, factory: Callable[[int], Any], start: int, steps: int) -> None:
        self.factory, self.start, self.steps = factory, start, steps

    def __len__(self) -> int:
        return self.steps - self.start

    def __getitem__(self, index: int) -> Any:
        return self.factory(self.start + index)


class BatchSource:
    """A factory `batches(step) -> batch` or an iterable of batches (re-iterated each epoch), seen uniformly.

    Args:
        batches: the factory or the iterable.
        workers: processes that build a factory's batches ahead of the step (0: in the training process).
            Ignored for an iterable, whose order is its own (a `DataLoader` has its own `num_workers`).
        prefetch: batches each worker keeps ready.
        pin_memory: page-locked batches, for a faster copy to a CUDA device.
    """

    def __init__(self, batches: Callable[[int], Any] | Iterable[Any], workers: int = 0, prefetch: int = 4,
                 pin_memory: bool = False) -> None:
        self.factory = batches if callable(batches) and not isinstance(batches, Iterable) else None
        if self.factory is None and not isinstance(batches, Iterable):
            raise TypeError(f"batches must be a callable step -> batch or an iterable, got {type(batches).__name__}")
        check_int(workers, "workers", minimum=0)
        check_int(prefetch, "prefetch", minimum=1)
        if workers and "fork" not in mp.get_all_start_methods():
            raise ValueError(f"workers={workers} needs forked processes, which this platform lacks; use workers=0")
        self.iterable: Any = batches
        self.it: Iterator[Any] | None = None
        self.workers, self.prefetch, self.pin_memory = workers, prefetch, pin_memory

    def get(self, step: int) -> Any:
        """The batch of `step` (a factory), or the iterable's next batch."""
        if self.factory is not None:
            return self.factory(step)
        if self.it is None:
            self.it = iter(self.iterable)
        try:
            return next(self.it)
        except StopIteration:
            if self.it is self.iterable:  # a one-shot iterator cannot start a new epoch
                raise ValueError(f"the batch iterator ran out at step {step}; pass a re-iterable (list, "
                                 "DataLoader) or a factory step -> batch") from None
            self.it = iter(self.iterable)
            return next(self.it)

    def skip_to(self, step: int) -> None:
        """Replay the data position after a resume: nothing to do for a factory; an iterable is consumed."""
        if self.factory is None:
            for s in range(step):
                self.get(s)

    def stream(self, start: int, steps: int) -> Iterator[Any]:
        """The batches of steps start..steps-1, in order: from the workers when there are any."""
        if self.factory is None or self.workers == 0 or steps <= start:
            for step in range(start, steps):
                yield self.get(step)
            return
        # generator=: the loader's worker seeds come from its own generator, not from the global torch RNG, so
        # turning workers on or off leaves the training run's random numbers (dropout, init) untouched.
        loader = DataLoader(_Steps(self.factory, start, steps), batch_size=None, shuffle=False,
                            num_workers=self.workers, prefetch_factor=self.prefetch, pin_memory=self.pin_memory,
                            multiprocessing_context="fork", generator=torch.Generator())
        yield from loader
